"""Memory stays bounded whatever the upload's size: one 1 GiB PATCH keeps the server's peak
resident memory (VmHWM) under 64 MiB, and every byte is stored."""
from __future__ import annotations

import hashlib
import http.client
from urllib.parse import urlsplit

from helpers import MiB, start_server, tus_head

GiB = 1024 * MiB
LIMIT_BYTES = 64 * MiB


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def test_one_gib_patch_keeps_peak_rss_under_64_mib():
    server = start_server(extra_args=["--max-size", "2GiB"])
    try:
        parsed = urlsplit(server.url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
        connection.request("POST", "/files/", headers={
            "Tus-Resumable": "1.0.0", "Upload-Length": str(GiB)})
        created = connection.getresponse()
        created.read()
        assert created.status == 201
        location = created.getheader("Location")

        block = bytes(range(256)) * (4 * 4096)  # 4 MiB, not all zeros
        expected = hashlib.sha256()
        for _ in range(GiB // len(block)):
            expected.update(block)

        def body():
            for _ in range(GiB // len(block)):
                yield block

        connection.request("PATCH", urlsplit(location).path, body=body(), headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream", "Content-Length": str(GiB)})
        patched = connection.getresponse()
        patched.read()
        assert patched.status == 204, patched.status
        assert patched.getheader("Upload-Offset") == str(GiB)

        peak = peak_rss_bytes(server.proc.pid)
        print(f"peak RSS after a 1 GiB PATCH: {peak / MiB:.1f} MiB")
        assert peak < LIMIT_BYTES, f"peak RSS {peak / MiB:.1f} MiB"

        assert tus_head(location).headers["Upload-Offset"] == str(GiB)
        stored = hashlib.sha256()
        connection.request("GET", urlsplit(location).path)
        download = connection.getresponse()
        while chunk := download.read(4 * MiB):
            stored.update(chunk)
        connection.close()
        assert stored.hexdigest() == expected.hexdigest()
    finally:
        server.stop()
