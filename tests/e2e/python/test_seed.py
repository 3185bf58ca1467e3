"""The seed's client algorithm (seed/resumable-file-upload.md) with requests, sending exactly what
the seed sends: X-File-Id and X-Start-Byte, never X-File-Size. A first POST cut mid-body keeps
the bytes that arrived; the seed resumes from /status with the rest of the file in one POST,
and that completes the upload: it downloads byte for byte, and it survives the expiry sweep
that removes an upload cut the same way and never resumed."""
from __future__ import annotations

import hashlib
import os
import socket
from urllib.parse import urlsplit

import pytest
import requests

from helpers import MiB, download_sha256, start_server, wait_until

SIZE = 5 * MiB + 4321
CUT = 2 * MiB + 777  # bytes of the first POST's body that arrive before it is cut


def seed_file_id(path: str) -> str:
    """The seed's `file.name + '-' + file.size + '-' + +file.lastModifiedDate`: the date as
    milliseconds since the epoch, as a browser gives it."""
    st = os.stat(path)
    return f"{os.path.basename(path)}-{st.st_size}-{st.st_mtime_ns // 1_000_000}"


def make_file(tmp_path, name: str, size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path, data


def status(server, file_id: str) -> int:
    """The seed's step 2: `+await (await fetch('status', ...)).text()`."""
    r = requests.get(f"{server.url}/status", headers={"X-File-Id": file_id}, timeout=10)
    assert r.status_code == 200, f"GET /status -> {r.status_code} {r.text!r}"
    assert r.text.isdigit(), f"GET /status body is not a count: {r.text!r}"
    return int(r.text)


def post(server, file_id: str, start: int, body: bytes) -> requests.Response:
    """The seed's step 3: only X-File-Id and X-Start-Byte."""
    headers = {"X-File-Id": file_id, "X-Start-Byte": str(start)}
    return requests.post(f"{server.url}/upload", headers=headers, data=body, timeout=60)


def send_cut_post(server, file_id: str, content_length: int, part: bytes) -> socket.socket:
    """A POST /upload declaring `content_length` bytes of body that sends only `part`; the
    connection stays open (the caller closes it: the cut)."""
    host = urlsplit(server.url)
    sock = socket.create_connection((host.hostname, host.port), timeout=10)
    head = (f"POST /upload HTTP/1.1\r\nHost: {host.netloc}\r\nX-File-Id: {file_id}\r\n"
            f"X-Start-Byte: 0\r\nContent-Length: {content_length}\r\n\r\n")
    sock.sendall(head.encode("ascii") + part)
    return sock


def data_files(server) -> dict[str, int]:
    """Upload id -> size of its data file on disk."""
    uploads = os.path.join(server.data_dir, "uploads")
    return {name[:-len(".bin")]: os.path.getsize(os.path.join(uploads, name))
            for name in os.listdir(uploads) if name.endswith(".bin")}


def cut_mid_body(server, file_id: str, data: bytes, cut: int) -> str:
    """The seed's first POST (the whole file from byte 0), cut after `cut` bytes of its body:
    waits until they are on disk, closes the connection, waits until /status counts them.
    Returns the upload's id."""
    before = set(data_files(server))
    sock = send_cut_post(server, file_id, len(data), data[:cut])
    try:
        # Watch the disk while the request is open: a GET /status now would take the upload over.
        upload_id = wait_until(
            lambda: next((i for i, n in data_files(server).items() if i not in before and n == cut), None),
            f"the first {cut} bytes of the cut POST on disk")
    finally:
        sock.close()
    wait_until(lambda: status(server, file_id) == cut, f"GET /status reporting the {cut} bytes that arrived")
    return upload_id


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_seed_algorithm_without_a_size_completes_and_downloads(server, tmp_path):
    path, data = make_file(tmp_path, "seed-python.bin", SIZE)
    file_id = seed_file_id(path)
    assert status(server, file_id) == 0, "a new file id starts at 0"

    upload_id = cut_mid_body(server, file_id, data, CUT)
    # Cut, the upload is open: nothing to download yet.
    r = requests.get(f"{server.url}/files/{upload_id}", timeout=10)
    assert r.status_code == 409, f"GET of the cut upload -> {r.status_code} {r.text!r}"

    # Resume as the seed does: ask /status, send the rest in one POST.
    start = status(server, file_id)
    assert start == CUT
    r = post(server, file_id, start, data[start:])
    assert r.status_code == 200, f"resuming POST -> {r.status_code} {r.text!r}"
    assert r.text == str(SIZE), "the 200 carries the stored count, the size"
    location = r.headers.get("Location")
    assert location == f"/files/{upload_id}", f"Location: {location!r}"

    # The whole POST completed the upload: it downloads.
    code, length, digest = download_sha256(f"{server.url}{location}")
    assert (code, length) == (200, SIZE), f"GET {location} -> {code}, {length} bytes"
    assert digest == sha256(data), "the download equals the source"
    assert status(server, file_id) == SIZE

    # The seed run again on the finished file: start byte = size, an empty slice: 200.
    r = post(server, file_id, SIZE, b"")
    assert (r.status_code, r.text) == (200, str(SIZE)), f"POST at the size -> {r.status_code} {r.text!r}"
    for wrong in (0, CUT, SIZE - 1, SIZE + 1):
        r = post(server, file_id, wrong, b"zz")
        assert (r.status_code, r.text) == (409, str(SIZE)), f"POST at {wrong} -> {r.status_code} {r.text!r}"
    assert data_files(server) == {upload_id: SIZE}, "nothing was written after completion"


@pytest.fixture
def expiring_server():
    srv = start_server(extra_args=["--expire-after", "2s"])
    try:
        yield srv
    finally:
        srv.stop()


def test_seed_upload_survives_expiry_and_a_cut_one_expires(expiring_server, tmp_path):
    server = expiring_server
    kept_path, kept_data = make_file(tmp_path, "kept.bin", 300_001)
    kept_id = seed_file_id(kept_path)
    assert status(server, kept_id) == 0
    r = post(server, kept_id, 0, kept_data)
    assert (r.status_code, r.text) == (200, str(len(kept_data))), f"{r.status_code} {r.text!r}"
    kept = r.headers["Location"]

    cut_path, cut_data = make_file(tmp_path, "cut.bin", 400_000)
    cut_id = seed_file_id(cut_path)
    cut_upload = cut_mid_body(server, cut_id, cut_data, 150_000)

    # With --expire-after 2s the sweep runs every second (a tenth of the period, at least 1 s:
    # sweep_expired in crates/server/src/lib.rs). Once it has removed the cut upload, the kept
    # one, written before it, is past its expiry time too: were it unfinished, it would be gone.
    wait_until(lambda: cut_upload not in data_files(server), "the sweep removing the cut upload")
    assert not os.path.exists(os.path.join(server.data_dir, "uploads", f"{cut_upload}.info"))
    assert status(server, cut_id) == 0, "an expired upload starts over"
    r = requests.get(f"{server.url}/files/{cut_upload}", timeout=10)
    assert r.status_code in (404, 410), f"GET of the expired upload -> {r.status_code}"

    code, length, digest = download_sha256(f"{server.url}{kept}")
    assert (code, length) == (200, len(kept_data)), f"GET {kept} after the sweep -> {code}, {length} bytes"
    assert digest == sha256(kept_data)
    assert status(server, kept_id) == len(kept_data)
    assert data_files(server) == {kept.rsplit("/", 1)[1]: len(kept_data)}
