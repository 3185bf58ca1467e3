"""Scenario B: tuspy uploads part of a 24 MiB file in one process and a second
process resumes from the server's offset; the download matches the source."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from helpers import MiB, download_sha256, poll_until_stable, tus_head

CHILD = os.path.join(os.path.dirname(__file__), "tuspy_child.py")
CHUNK = MiB


def run_child(phase, opts, timeout=55):
    p = subprocess.run([sys.executable, CHILD, phase, json.dumps(opts)], capture_output=True,
                       text=True, timeout=timeout)
    return p


def last_json(stdout):
    lines = [l for l in stdout.splitlines() if l.startswith("{")]
    assert lines, f"no JSON output from child: {stdout[-2000:]!r}"
    return json.loads(lines[-1])


def resume_and_check(server, path, size, sha, storage, stored):
    """Phase 2 in a new process, then verify the completed upload."""
    p2 = run_child("phase2", {"endpoint": f"{server.url}/files/", "file": path,
                              "storage": storage, "chunk_size": CHUNK})
    assert p2.returncode == 0, (
        f"phase2 failed ({p2.returncode}): stdout={p2.stdout[-2000:]} stderr={p2.stderr[-3000:]}"
        f" server stderr={server.stderr()}")
    r2 = last_json(p2.stdout)
    assert r2["head_status"] == 200
    assert int(r2["head_offset"]) == stored, "HEAD in the new process shows the stored offset"
    assert 0 < r2["offset_before"] < size, f"offset before resuming: {r2['offset_before']}"
    assert r2["offset_before"] == stored, "tuspy resumes from the server's offset"
    assert r2["posts"] == [], f"resume must not create a new upload: {r2['posts']}"
    patches = r2["patches"]
    assert patches, "resume sent no PATCH"
    assert int(patches[0]["upload_offset"]) == stored, f"first resumed PATCH: {patches[0]}"
    assert len(patches) == -(-(size - stored) // CHUNK), f"{len(patches)} PATCHes from {stored}"
    assert all(p["url"] == r2["stored_url"] for p in patches)
    assert r2["final_offset"] == size

    h = tus_head(r2["url"])
    assert h.status_code == 200 and int(h.headers["Upload-Offset"]) == size
    status, length, digest = download_sha256(r2["url"])
    assert status == 200, f"GET {r2['url']} -> {status}"
    assert length == size
    assert digest == sha, "downloaded SHA-256 equals the source file"


def test_tuspy_stop_at_then_resume_in_new_process(server, random_file, tmp_path):
    path, size, sha = random_file
    storage = str(tmp_path / "tus-urls.json")
    stop_at = 10 * MiB + 12345  # not chunk aligned on purpose

    p1 = run_child("phase1-stop", {"endpoint": f"{server.url}/files/", "file": path,
                                   "storage": storage, "chunk_size": CHUNK, "stop_at": stop_at})
    assert p1.returncode == 0, (
        f"phase1 failed ({p1.returncode}): stdout={p1.stdout[-2000:]} stderr={p1.stderr[-3000:]}"
        f" server stderr={server.stderr()}")
    r1 = last_json(p1.stdout)
    assert r1["offset"] == stop_at
    assert r1["url"].startswith(f"{server.url}/files/"), r1["url"]

    h = tus_head(r1["url"])
    assert h.status_code == 200, f"HEAD {r1['url']} -> {h.status_code}"
    assert h.headers.get("Tus-Resumable") == "1.0.0"
    assert int(h.headers["Upload-Offset"]) == stop_at
    assert int(h.headers["Upload-Length"]) == size

    resume_and_check(server, path, size, sha, storage, stop_at)


def test_tuspy_killed_mid_upload_then_resume_in_new_process(server, random_file, tmp_path):
    path, size, sha = random_file
    storage = str(tmp_path / "tus-urls.json")
    proc = subprocess.Popen(
        [sys.executable, CHILD, "phase1-slow",
         json.dumps({"endpoint": f"{server.url}/files/", "file": path, "storage": storage,
                     "chunk_size": CHUNK, "delay": 0.05})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(55, proc.kill)  # bounds every wait on this child
    watchdog.start()
    try:
        first = proc.stdout.readline()  # {"url": ...} once the upload is created
        assert first.startswith("{"), f"phase1 printed {first!r}; stderr={proc.stderr.read()[-3000:] if proc.poll() is not None else ''}"
        url = json.loads(first).get("url")
        assert url and url.startswith(f"{server.url}/files/"), first

        # Kill the uploader (SIGKILL, no clean-up) once it reports >= 30% acknowledged.
        # Progress comes from the child itself: no HEAD while a PATCH is in flight
        # (the server treats a new request for the upload as a takeover).
        offset = 0
        while offset < 0.3 * size:
            line = proc.stdout.readline()
            if not line:
                proc.wait(timeout=10)
                pytest.fail(f"phase1 exited early ({proc.returncode}) at offset {offset}: "
                            f"{proc.stderr.read()[-3000:]}")
            offset = json.loads(line).get("offset", offset)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()

    stored = poll_until_stable(lambda: int(tus_head(url).headers["Upload-Offset"]),
                               what="Upload-Offset after the kill")
    assert 0.3 * size <= stored < size, f"stored {stored} of {size} after killing the uploader"
    resume_and_check(server, path, size, sha, storage, stored)
