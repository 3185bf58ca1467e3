"""Shared helpers for the Python end-to-end tests.

start_server(): run `resumable serve` on 127.0.0.1:0 with a fresh temp data dir,
wait for its listening line, stop it with SIGTERM (SIGKILL after 5 s).
make_random_file(), sha256_file(): test data.
upload_file_size(): the size of one of an upload's files in the server's data dir.
wait_until(), poll_until_stable(): waits on conditions, bounded by deadlines.
"""
from __future__ import annotations

import hashlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

MiB = 1024 * 1024
LISTEN_RE = re.compile(r"^resumable listening on (http://127\.0\.0\.1:(\d+))\s*$")


def server_binary() -> str:
    binary = os.environ.get("RESUMABLE_BIN")
    if not binary:
        raise RuntimeError("RESUMABLE_BIN is not set (path to the resumable server binary)")
    return binary


@dataclass
class Server:
    url: str
    port: int
    data_dir: str
    proc: subprocess.Popen
    stderr_path: str
    _stopped: bool = field(default=False, repr=False)

    def stderr(self, tail: int = 4000) -> str:
        try:
            with open(self.stderr_path, "r", encoding="utf-8", errors="replace") as f:
                return f.read()[-tail:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        try:
            os.unlink(self.stderr_path)
        except OSError:
            pass


def start_server(max_size: int | None = None, extra_args: list[str] | None = None,
                 timeout: float = 15.0) -> Server:
    data_dir = tempfile.mkdtemp(prefix="resumable-e2e-data-")
    args = [server_binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir]
    if max_size is not None:
        args += ["--max-size", str(max_size)]
    args += extra_args or []
    fd, stderr_path = tempfile.mkstemp(prefix="resumable-e2e-stderr-", suffix=".log")
    with os.fdopen(fd, "wb") as stderr_file:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=stderr_file)

    def fail(msg: str) -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with open(stderr_path, "r", encoding="utf-8", errors="replace") as f:
            err = f.read()[-2000:]
        shutil.rmtree(data_dir, ignore_errors=True)
        raise RuntimeError(f"{msg}; stderr={err!r}")

    buf = b""
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                fail(f"server did not print its listening line within {timeout} s; stdout={buf!r}")
            if not sel.select(timeout=remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                fail(f"server exited before listening (code={proc.wait()}); stdout={buf!r}")
            buf += chunk
    finally:
        sel.close()
    line = buf.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    m = LISTEN_RE.match(line)
    if not m:
        fail(f"unexpected first stdout line from server: {line!r}")

    # Keep draining stdout so the server never blocks on a full pipe.
    def drain() -> None:
        try:
            while os.read(proc.stdout.fileno(), 65536):
                pass
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    return Server(url=m.group(1), port=int(m.group(2)), data_dir=data_dir, proc=proc,
                  stderr_path=stderr_path)


def make_random_file(path: str, mib: int) -> str:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MiB))
    return path


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def download_sha256(url: str, timeout: float = 60.0) -> tuple[int, int, str]:
    """GET url, streaming; returns (status, length, sha256 hex)."""
    h = hashlib.sha256()
    length = 0
    with requests.get(url, stream=True, timeout=timeout) as r:
        for chunk in r.iter_content(chunk_size=MiB):
            h.update(chunk)
            length += len(chunk)
        return r.status_code, length, h.hexdigest()


def tus_head(url: str) -> requests.Response:
    return requests.head(url, headers={"Tus-Resumable": "1.0.0"}, timeout=10)


def poll_until_stable(read, accept=lambda v: True, interval: float = 0.05, stable_reads: int = 3,
                      timeout: float = 10.0, what: str = "value"):
    """Call read() every `interval` s until it returns the same value `stable_reads`
    times in a row and accept(value) holds; raise after `timeout` s."""
    deadline = time.monotonic() + timeout
    history = []
    last, same = object(), 0
    while True:
        v = read()
        history.append(v)
        if v == last:
            same += 1
        else:
            last, same = v, 1
        if same >= stable_reads and accept(v):
            return v
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} did not become stable/acceptable within {timeout} s; last values {history[-20:]}")
        time.sleep(interval)


def upload_file_size(server: Server, upload_url: str, extension: str) -> int | None:
    """Size of the upload's file DATA_DIR/uploads/ID.<extension> (`bin`: its data, `staged`: a
    checksummed chunk set aside until verified), None when there is no such file."""
    upload_id = urlsplit(upload_url).path.rstrip("/").rsplit("/", 1)[-1]
    try:
        return os.path.getsize(os.path.join(server.data_dir, "uploads", f"{upload_id}.{extension}"))
    except FileNotFoundError:
        return None


def wait_until(condition, what: str, timeout: float = 20.0, interval: float = 0.05):
    """Polls condition() until it returns something truthy, which it returns; fails after
    `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)
