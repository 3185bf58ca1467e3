"""checksum with a real client: tuspy with upload_checksum=True (Upload-Checksum: sha1 on
every PATCH) uploads part of a 24 MiB file in 1 MiB chunks in one process (stop_at, or
SIGKILL in the middle of a PATCH) and a second process resumes; every checksummed PATCH
is accepted (204), a checksummed PATCH cut in the middle is discarded (the chunk cannot
be verified), and the download matches the source."""
import base64
import hashlib
import json
import os
import subprocess
import sys
import threading

import pytest

from helpers import MiB, download_sha256, poll_until_stable, tus_head, upload_file_size, wait_until

CHILD = os.path.join(os.path.dirname(__file__), "tuspy_checksum_child.py")
CHUNK = MiB


def run_child(phase, opts, timeout=55):
    return subprocess.run([sys.executable, CHILD, phase, json.dumps(opts)], capture_output=True,
                          text=True, timeout=timeout)


def last_json(stdout):
    lines = [l for l in stdout.splitlines() if l.startswith("{")]
    assert lines, f"no JSON output from child: {stdout[-2000:]!r}"
    return json.loads(lines[-1])


def sha1_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def check_patches(log, path, start):
    """Every PATCH in `log` carried the right sha1 of its bytes and was accepted."""
    patches = [e for e in log if e["method"] == "PATCH"]
    assert patches, "no PATCH sent"
    expected_offset = start
    with open(path, "rb") as f:
        for p in patches:
            off = int(p["upload_offset"])
            assert off == expected_offset, f"PATCH at {off}, expected {expected_offset}: {p}"
            f.seek(off)
            data = f.read(p["size"])
            assert p["upload_checksum"] == f"sha1 {sha1_b64(data)}", f"PATCH without the right checksum: {p}"
            assert p["status"] == 204, f"checksummed PATCH not accepted: {p}"
            assert int(p["response_offset"]) == off + p["size"], p
            expected_offset = off + p["size"]
    return patches


def resume_and_check(server, path, size, sha, storage, stored):
    p2 = run_child("phase2", {"endpoint": f"{server.url}/files/", "file": path,
                              "storage": storage, "chunk_size": CHUNK})
    assert p2.returncode == 0, (
        f"phase2 failed ({p2.returncode}): stdout={p2.stdout[-3000:]} stderr={p2.stderr[-3000:]}"
        f" server stderr={server.stderr()}")
    r2 = last_json(p2.stdout)
    assert r2["offset_before"] == stored, "tuspy resumes from the server's offset"
    assert not [e for e in r2["log"] if e["method"] == "POST"], "resume must not create a new upload"
    patches = check_patches(r2["log"], path, stored)
    assert len(patches) == -(-(size - stored) // CHUNK)
    assert all(p["url"] == r2["stored_url"] for p in patches)
    assert r2["final_offset"] == size

    h = tus_head(r2["url"])
    assert h.status_code == 200 and int(h.headers["Upload-Offset"]) == size
    status, length, digest = download_sha256(r2["url"])
    assert status == 200, f"GET {r2['url']} -> {status}"
    assert length == size
    assert digest == sha, "downloaded SHA-256 equals the source file"


def test_tuspy_checksum_stop_at_then_resume(server, random_file, tmp_path):
    path, size, sha = random_file
    storage = str(tmp_path / "tus-urls.json")
    stop_at = 10 * MiB + 12345  # the last PATCH of phase 1 is a short one

    p1 = run_child("phase1-stop", {"endpoint": f"{server.url}/files/", "file": path,
                                   "storage": storage, "chunk_size": CHUNK, "stop_at": stop_at})
    assert p1.returncode == 0, (
        f"phase1 failed ({p1.returncode}): stdout={p1.stdout[-3000:]} stderr={p1.stderr[-3000:]}"
        f" server stderr={server.stderr()}")
    r1 = last_json(p1.stdout)
    assert r1["offset"] == stop_at
    patches = check_patches(r1["log"], path, 0)
    assert len(patches) == 11 and patches[-1]["size"] == 12345
    h = tus_head(r1["url"])
    assert h.status_code == 200
    assert int(h.headers["Upload-Offset"]) == stop_at

    resume_and_check(server, path, size, sha, storage, stop_at)


def test_tuspy_checksum_killed_mid_patch_then_resume(server, random_file, tmp_path):
    path, size, sha = random_file
    storage = str(tmp_path / "tus-urls.json")
    proc = subprocess.Popen(
        [sys.executable, CHILD, "phase1-slow",
         json.dumps({"endpoint": f"{server.url}/files/", "file": path, "storage": storage,
                     "chunk_size": CHUNK, "delay": 0.0, "cut_from": int(0.3 * size),
                     "hold": 20})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(55, proc.kill)
    watchdog.start()
    acked, killed_at = 0, None
    try:
        first = proc.stdout.readline()
        assert first.startswith("{"), f"phase1 printed {first!r}"
        url = json.loads(first).get("url")
        assert url and url.startswith(f"{server.url}/files/"), first

        # The first PATCH starting at >= 30% hands half of its body to the socket and
        # holds the request open: SIGKILL the uploader then, so the server sees a
        # checksummed PATCH cut short.
        while killed_at is None:
            line = proc.stdout.readline()
            if not line:
                proc.wait(timeout=10)
                pytest.fail(f"phase1 exited early ({proc.returncode}) at {acked}: {proc.stderr.read()[-3000:]}")
            msg = json.loads(line)
            if "offset" in msg:
                assert msg["last"]["status"] == 204, f"checksummed PATCH not accepted: {msg['last']}"
                acked = msg["offset"]
            elif "half" in msg:
                # Only once the bytes handed over are on the server's disk (set aside, never in
                # the data file) can the offset afterwards tell "discarded" from "never arrived".
                # (Watch the disk: a HEAD while the PATCH is open would take the upload over.)
                sent = msg["sent"]
                wait_until(lambda: upload_file_size(server, url, "staged") == sent,
                           f"the {sent} bytes of the PATCH from {msg['half']} staged on disk",
                           timeout=10)  # the child holds the PATCH open for 20 s
                assert upload_file_size(server, url, "bin") == msg["half"], (
                    "unverified bytes of the open checksummed PATCH reached the data file")
                proc.kill()
                killed_at = msg["half"]
        proc.wait(timeout=10)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()

    assert killed_at == acked, f"the cut PATCH started at {killed_at}, last acknowledged offset {acked}"
    stored = poll_until_stable(lambda: int(tus_head(url).headers["Upload-Offset"]),
                               what="Upload-Offset after the kill")
    assert stored == killed_at, (
        f"after a checksummed PATCH from {killed_at} was cut half-way the server reports offset "
        f"{stored}: the unverifiable partial chunk must be discarded")
    assert stored % CHUNK == 0
    assert upload_file_size(server, url, "bin") == killed_at, "the data file grew from an unverified chunk"
    wait_until(lambda: upload_file_size(server, url, "staged") is None, "the staged chunk removed")
    resume_and_check(server, path, size, sha, storage, stored)
