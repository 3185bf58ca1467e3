"""checksum / checksum-trailer over raw HTTP: a PATCH whose Upload-Checksum does not match
gets 460 and the offset does not move; a matching one gets 204; every advertised
algorithm works; an unknown algorithm is 400; a checksummed PATCH cut short is
discarded; the checksum also works as a trailer of a chunked PATCH."""
from __future__ import annotations

import base64
import hashlib
import os
import socket
import zlib
from urllib.parse import urlsplit

import pytest
import requests

from helpers import poll_until_stable, tus_head, upload_file_size, wait_until

TUS = {"Tus-Resumable": "1.0.0"}
PIECE = 64 * 1024


def digest(algo: str, data: bytes) -> str:
    if algo == "crc32":  # CRC-32 as 4 bytes, big-endian
        raw = zlib.crc32(data).to_bytes(4, "big")
    else:
        raw = hashlib.new(algo, data).digest()
    return base64.b64encode(raw).decode("ascii")


def create(server, length: int) -> str:
    r = requests.post(f"{server.url}/files/", headers={**TUS, "Upload-Length": str(length)}, timeout=10)
    assert r.status_code == 201, r.status_code
    return r.headers["Location"]


def patch(url: str, offset: int, data: bytes, checksum: str | None):
    headers = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)}
    if checksum is not None:
        headers["Upload-Checksum"] = checksum
    return requests.patch(url, data=data, headers=headers, timeout=10)


def offset_of(url: str) -> int:
    h = tus_head(url)
    assert h.status_code == 200, h.status_code
    return int(h.headers["Upload-Offset"])


def test_options_advertises_checksum(server):
    r = requests.options(f"{server.url}/files/", timeout=10)
    assert r.status_code == 204
    ext = [e.strip() for e in r.headers.get("Tus-Extension", "").split(",")]
    assert "checksum" in ext and "checksum-trailer" in ext, ext
    algos = [a.strip() for a in r.headers.get("Tus-Checksum-Algorithm", "").split(",")]
    assert {"sha1", "md5", "sha256", "sha512", "crc32"} <= set(algos), algos


def test_sha1_mismatch_is_460_and_discarded_match_is_204(server):
    data = os.urandom(2 * PIECE)
    url = create(server, len(data))
    first, second = data[:PIECE], data[PIECE:]

    r = patch(url, 0, first, f"sha1 {digest('sha1', second)}")
    assert r.status_code == 460, f"wrong sha1 -> {r.status_code} {r.text!r}"
    assert offset_of(url) == 0, "the mismatching chunk was not discarded"

    r = patch(url, 0, first, f"sha1 {digest('sha1', first)}")
    assert r.status_code == 204, f"right sha1 -> {r.status_code} {r.text!r}"
    assert int(r.headers["Upload-Offset"]) == PIECE
    assert offset_of(url) == PIECE

    # A mismatch later on does not touch what is already stored.
    r = patch(url, PIECE, second, f"sha1 {digest('sha1', first)}")
    assert r.status_code == 460
    assert offset_of(url) == PIECE
    r = patch(url, PIECE, second, f"sha1 {digest('sha1', second)}")
    assert r.status_code == 204
    assert offset_of(url) == 2 * PIECE
    got = requests.get(url, timeout=10)
    assert got.status_code == 200 and got.content == data


@pytest.mark.parametrize("algo", ["md5", "sha256", "sha512", "crc32"])
def test_other_algorithms(server, algo):
    data = os.urandom(PIECE)
    url = create(server, len(data))
    r = patch(url, 0, data, f"{algo} {digest(algo, b'other bytes')}")
    assert r.status_code == 460, f"wrong {algo} -> {r.status_code}"
    assert offset_of(url) == 0
    r = patch(url, 0, data, f"{algo} {digest(algo, data)}")
    assert r.status_code == 204, f"right {algo} -> {r.status_code} {r.text!r}"
    assert offset_of(url) == len(data)


def test_unknown_algorithm_is_400(server):
    data = os.urandom(PIECE)
    url = create(server, len(data))
    r = patch(url, 0, data, f"whirlpool {digest('sha1', data)}")
    assert r.status_code == 400, r.status_code
    assert offset_of(url) == 0


def raw_connection(url: str):
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10), parts


def test_checksummed_patch_cut_short_is_discarded(server):
    data = os.urandom(4 * PIECE)
    half = len(data) // 2
    url = create(server, len(data))
    sock, parts = raw_connection(url)
    with sock:
        sock.sendall((
            f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Upload-Checksum: sha1 {digest('sha1', data)}\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode() + data[:half])
        # The first half arrives, set aside: only once it is on disk does offset 0 after the cut
        # mean "discarded" rather than "never arrived". (Watch the disk, not HEAD: a request for
        # the upload while the PATCH is open would take it over.)
        wait_until(lambda: upload_file_size(server, url, "staged") == half,
                   f"the {half} bytes sent staged on disk")
        assert upload_file_size(server, url, "bin") == 0, "unverified bytes reached the data file"
    # The connection is closed: the PATCH is cut short.
    stored = poll_until_stable(lambda: offset_of(url), what="Upload-Offset after the cut")
    assert stored == 0, f"server kept {stored} unverified bytes of a checksummed PATCH that was cut short"
    assert upload_file_size(server, url, "bin") == 0, "the data file grew from a chunk that was never verified"
    wait_until(lambda: upload_file_size(server, url, "staged") is None, "the staged chunk removed")


def chunked_patch_with_trailer(url: str, offset: int, data: bytes, checksum: str) -> int:
    sock, parts = raw_connection(url)
    with sock:
        sock.sendall((
            f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
            f"Trailer: Upload-Checksum\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode())
        for i in range(0, len(data), 8192):
            piece = data[i:i + 8192]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        sock.sendall(f"0\r\nUpload-Checksum: {checksum}\r\n\r\n".encode())
        resp = b""
        while b"\r\n" not in resp:
            chunk = sock.recv(4096)
            if not chunk:
                break
            resp += chunk
    status_line = resp.split(b"\r\n", 1)[0].decode("latin-1")
    assert status_line.startswith("HTTP/1.1 "), f"no HTTP response: {resp[:200]!r}"
    return int(status_line.split()[1])


def test_checksum_trailer(server):
    data = os.urandom(2 * PIECE)
    url = create(server, len(data))
    status = chunked_patch_with_trailer(url, 0, data[:PIECE], f"sha1 {digest('sha1', data[PIECE:])}")
    assert status == 460, f"wrong trailer checksum -> {status}"
    assert offset_of(url) == 0
    status = chunked_patch_with_trailer(url, 0, data[:PIECE], f"sha1 {digest('sha1', data[:PIECE])}")
    assert status == 204, f"right trailer checksum -> {status}"
    assert offset_of(url) == PIECE
