"""Runs the benchmark of resumable against its peers and writes the report.

Started by bench/run.sh (which installs everything first); see README "Benchmarks".

For every scenario and server: a fresh data dir, `sync` so no earlier run's dirty pages are
still being written, a fresh server process (so its peak RSS belongs to this run), the bench
client (bench/client, one client for every server), then the server's CPU time and VmHWM from
/proc. The physical limits (dd to the data disk, the client to a loopback discard listener) are
measured in the same run. Results: RESULTS.md, results.png and results.json in the output dir.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import json
import os
import platform
import queue
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / ".data"
# Where cargo put the release build (run.sh builds with the caller's CARGO_TARGET_DIR).
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
CLIENT = TARGET / "release/resumable-bench"
OURS = TARGET / "release/resumable"
RUSTUS = BENCH / ".tools/bin/rustus"
TUS_NODE = BENCH / "peers/tus-node-server.mjs"
# Garage for the S3 scenarios: where ./test.sh builds it (crates/testkit looks there too).
GARAGE = Path(os.environ.get("RESUMABLE_GARAGE",
                             Path.home() / ".cache/resumable/garage/bin/garage"))

MB = 1_000_000  # MB/s are decimal, like dd's
GIB = 1 << 30
MIB = 1 << 20
KIB = 1 << 10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# -------------------------------------------------------------------------------------------
# Servers


@dataclass
class ServerKind:
    name: str
    label: str
    endpoint_path: str
    durability: str
    peer: bool

    def command(self, port: int, data_dir: Path) -> list[str]:
        if self.name == "resumable":
            # The benchmark measures capacity from one address: the limits that protect a
            # production server (connections, creations per minute, the minimum body rate,
            # which would cut the idle scenario's held bodies) are off.
            return [str(OURS), "serve", "--listen", f"127.0.0.1:{port}",
                    "--data-dir", str(data_dir), "--max-size", "unlimited",
                    "--max-connections", "0", "--max-connections-per-client", "0",
                    "--max-creations-per-minute", "0", "--min-body-rate", "0"]
        if self.name.startswith("rustus"):
            # rustus reads a whole PATCH body into memory; the limit must fit the biggest chunk.
            command = [str(RUSTUS), "--host", "127.0.0.1", "--port", str(port),
                       "--data-dir", str(data_dir), "--info-dir", str(data_dir),
                       "--max-body-size", str(2 * GIB)]
            return command + (["--force-fsync", "true"] if self.name == "rustus-fsync" else [])
        return ["node", str(TUS_NODE), str(port), str(data_dir)]


SERVERS = [
    ServerKind(
        "resumable", "resumable (ours)", "/files/",
        "fdatasync of the data before every answer that reports an offset; upload info written "
        "atomically (temp file, fsync, rename, fsync dir)",
        peer=False),
    ServerKind(
        "rustus", "rustus", "/files/",
        "no fsync by default (`--force-fsync` is opt-in: next line); the offset lives in an "
        ".info JSON file rewritten in place without fsync; each PATCH body is buffered whole "
        "in memory before it is written",
        peer=True),
    # Not a default configuration, so not a "best peer": how rustus fares when it syncs too.
    ServerKind(
        "rustus-fsync", "rustus --force-fsync", "/files/",
        "fdatasync of the data after each PATCH's write, before answering; the .info file is "
        "still rewritten in place without fsync",
        peer=False),
    ServerKind(
        "tus-node", "@tus/server + file-store", "/files",
        "no fsync: file-store pipes the body into fs.createWriteStream and answers when the "
        "stream ends (data in the page cache); the offset is the data file's size",
        peer=True),
]


class RunningServer:
    """A server process on a free loopback port, with its stdout/stderr in a log file."""

    def __init__(self, kind: ServerKind, data_dir: Path, log: Path):
        self.kind = kind
        self.port = free_port()
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                kind.command(self.port, data_dir), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while not port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"{kind.name} did not start; see {log}")
            time.sleep(0.05)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.kind.endpoint_path}"

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.process.pid)

    def memory_kib(self, key: str) -> int:
        return proc_memory_kib(self.process.pid, key)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are the 14th and 15th fields; fields[0] is the 3rd (state).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_memory_kib(pid: int, key: str) -> int:
    """A number from /proc/PID/status (kB for the Vm* keys)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# -------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Scenario:
    key: str
    title: str
    # "upload", "idle", "heads", or "h2-vs-h1": ours only, the same upload over HTTP/1.1 and
    # over HTTP/2 with prior knowledge (h2c), runs alternating so that both see the same noise.
    kind: str
    runs: int
    size: int = 0  # bytes per upload
    chunk: int = 0  # bytes per PATCH
    uploads: int = 1
    connections: int = 0
    seconds: float = 0


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [
            Scenario("one-patch", "64 MiB in one PATCH", "upload", 1, 64 * MIB, 64 * MIB),
            Scenario("1mib", "64 MiB in 1 MiB PATCHes", "upload", 1, 64 * MIB, MIB),
            Scenario("256kib", "16 MiB in 256 KiB PATCHes", "upload", 1, 16 * MIB, 256 * KIB),
            Scenario("concurrent", "20 × 1 MiB at once", "upload", 1, MIB, MIB, uploads=20),
            Scenario("idle", "200 idle connections", "idle", 1, connections=200),
            Scenario("heads", "HEADs, 4 connections × 1 s", "heads", 1, connections=4,
                     seconds=1),
            Scenario("h2", "64 MiB in one PATCH, h2c vs HTTP/1.1", "h2-vs-h1", 1, 64 * MIB,
                     64 * MIB),
        ]
    return [
        Scenario("one-patch", "1 GiB in one PATCH", "upload", 5, GIB, GIB),
        Scenario("1mib", "1 GiB in 1 MiB PATCHes", "upload", 3, GIB, MIB),
        Scenario("256kib", "1 GiB in 256 KiB PATCHes", "upload", 3, GIB, 256 * KIB),
        Scenario("concurrent", "200 × 16 MiB at once", "upload", 3, 16 * MIB, 16 * MIB,
                 uploads=200),
        Scenario("idle", "10,000 idle connections", "idle", 1, connections=10_000),
        Scenario("heads", "HEADs, 20 connections × 5 s", "heads", 3, connections=20, seconds=5),
        Scenario("h2", "1 GiB in one PATCH, h2c vs HTTP/1.1", "h2-vs-h1", 5, GIB, GIB),
    ]


@dataclass
class Run:
    ok: bool
    mb_per_s: float = 0  # upload scenarios
    requests_per_s: float = 0  # heads
    cpu_seconds: float = 0
    cpu_per_gib: float = 0
    peak_rss_mib: float = 0
    errors: int = 0
    note: str = ""
    idle: dict = field(default_factory=dict)
    # S3 scenarios through our server: our server's own cost (cpu_* and peak_rss_mib are
    # Garage's there, the store's cost of the same bytes either way).
    server_cpu_per_gib: float = 0
    server_peak_rss_mib: float = 0


def run_scenario(kind: ServerKind, scenario: Scenario, number: int, http2: bool = False) -> Run:
    data_dir = DATA / "store" / kind.name
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    settle_disk()
    protocol = "-h2" if http2 else ""
    log = DATA / "logs" / f"{kind.name}-{scenario.key}{protocol}-{number}.log"
    server = RunningServer(kind, data_dir, log)
    try:
        cpu_before = server.cpu_seconds()
        if scenario.kind in ("upload", "h2-vs-h1"):
            run = measure_uploads(server, scenario, http2)
        elif scenario.kind == "heads":
            run = measure_heads(server, scenario)
        else:
            run = measure_idle(server, scenario)
        run.cpu_seconds = server.cpu_seconds() - cpu_before
        if scenario.kind in ("upload", "h2-vs-h1") and run.ok:
            run.cpu_per_gib = run.cpu_seconds / (scenario.size * scenario.uploads / GIB)
        run.peak_rss_mib = server.memory_kib("VmHWM") / 1024
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return run


def measure_uploads(server: RunningServer, scenario: Scenario, http2: bool = False) -> Run:
    report = client("upload", "--endpoint", server.endpoint, "--size", str(scenario.size),
                    "--chunk", str(scenario.chunk), "--uploads", str(scenario.uploads),
                    "--deadline", "240s", *(["--http2"] if http2 else []), timeout=300)
    ok = report["errors"] == 0
    return Run(ok=ok, mb_per_s=report["bytes"] / MB / report["seconds"],
               errors=report["errors"], note=report.get("first_error") or "")


def measure_heads(server: RunningServer, scenario: Scenario) -> Run:
    report = client("heads", "--endpoint", server.endpoint,
                    "--connections", str(scenario.connections),
                    "--duration", f"{scenario.seconds}s", timeout=scenario.seconds + 90)
    return Run(ok=report["errors"] == 0, requests_per_s=report["requests"] / report["seconds"],
               errors=report["errors"], note=report.get("first_error") or "")


def measure_idle(server: RunningServer, scenario: Scenario) -> Run:
    """Holds the connections, reads the server's RSS, then has a new upload made while they
    are still held, then lets them all go."""
    args = [str(CLIENT), "idle", "--endpoint", server.endpoint,
            "--connections", str(scenario.connections), "--setup-deadline", "120s",
            "--hold", "120s", "--probe-size", "1MiB"]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines = line_queue(process.stdout)
    try:
        holding = json.loads(lines.get(timeout=240))
        time.sleep(2)  # let the server settle before reading its memory
        rss_mib = server.memory_kib("VmRSS") / 1024
        threads = server.memory_kib("Threads")  # a count, read from the same file
        process.stdin.write("probe\n")
        process.stdin.flush()
        probe = json.loads(lines.get(timeout=120))
        process.wait(timeout=60)
    except (queue.Empty, subprocess.TimeoutExpired):
        process.kill()
        process.wait()
        return Run(ok=False, note="the idle client did not report in time")
    held = probe["still_holding"]
    ok = held == scenario.connections and probe["probe_ok"]
    notes = [n for n in (holding.get("first_error"), probe.get("probe_error")) if n]
    if probe["answered_while_held"]:
        notes.append(f"{probe['answered_while_held']} held requests were answered or cut "
                     f"before the probe (the first: {probe['first_answer']})")
    return Run(ok=ok, errors=holding["failed"], note="; ".join(notes), idle={
        "holding": holding["holding"], "held_at_probe": held,
        "answered_while_held": probe["answered_while_held"],
        "setup_seconds": holding["setup_seconds"], "rss_mib": rss_mib, "threads": threads,
        "probe_ok": probe["probe_ok"], "probe_seconds": probe["probe_seconds"]})


def client(*args: str, timeout: float) -> dict:
    result = subprocess.run([str(CLIENT), *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if result.returncode != 0:
        sys.exit(f"resumable-bench {' '.join(args)} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def line_queue(stream) -> queue.Queue:
    """The lines of `stream`, read on a thread so that every wait for one can be bounded."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def settle_disk() -> None:
    """Flushes dirty pages left by earlier runs (or other users of the disk)."""
    subprocess.run(["sync"], timeout=180, check=False)


# -------------------------------------------------------------------------------------------
# S3 scenarios (--s3): uploads to Garage through our server, against the same bytes sent
# straight to Garage (the limit).

GARAGE_REGION = "garage"
GARAGE_BUCKET = "resumable-bench"


@dataclass
class S3Scenario:
    key: str
    title: str
    runs: int
    size: int  # bytes per upload
    uploads: int
    # How the direct baseline sends: parts of this size (an object no larger goes in one
    # PutObject), this many in flight over all objects, one keep-alive connection each. The
    # fastest of a sweep on this machine (8 to 256 MiB parts, 4 to 50 in flight; see the
    # commit that set them): the limit should be the best a direct uploader gets.
    part_size: int
    connections: int


def s3_scenarios(quick: bool) -> list[S3Scenario]:
    if quick:
        return [S3Scenario("s3-one", "S3: 64 MiB, one upload", 1, 64 * MIB, 1, 16 * MIB, 8),
                S3Scenario("s3-concurrent", "S3: 10 × 16 MiB at once", 1, 16 * MIB, 10,
                           8 * MIB, 16)]
    return [S3Scenario("s3-one", "S3: 1 GiB, one upload", 3, GIB, 1, 64 * MIB, 8),
            S3Scenario("s3-concurrent", "S3: 50 × 64 MiB at once", 3, 64 * MIB, 50,
                       32 * MIB, 16)]


class RunningGarage:
    """One Garage node configured like crates/testkit's (replication_factor 1, sqlite, region
    "garage"), with a key and a bucket made by its CLI, its data in `data_dir`."""

    def __init__(self, data_dir: Path, log: Path):
        if not GARAGE.is_file():
            sys.exit(f"Garage is missing at {GARAGE}: ./test.sh builds it (cargo install "
                     "--locked garage --version 2.5.0 --root ~/.cache/resumable/garage), or set "
                     "RESUMABLE_GARAGE")
        self.rpc_port, self.s3_port = free_port(), free_port()
        self.config = data_dir / "garage.toml"
        self.config.write_text(
            f'metadata_dir = "{data_dir / "meta"}"\n'
            f'data_dir = "{data_dir / "data"}"\n'
            'db_engine = "sqlite"\n'
            "replication_factor = 1\n"
            f'rpc_bind_addr = "127.0.0.1:{self.rpc_port}"\n'
            f'rpc_public_addr = "127.0.0.1:{self.rpc_port}"\n'
            f'rpc_secret = "{os.urandom(32).hex()}"\n'
            "\n[s3_api]\n"
            f's3_region = "{GARAGE_REGION}"\n'
            f'api_bind_addr = "127.0.0.1:{self.s3_port}"\n')
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [str(GARAGE), "-c", str(self.config), "server"], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.log = log
        try:
            self._set_up()
        except BaseException:
            self.stop()
            raise

    def _set_up(self) -> None:
        deadline = time.monotonic() + 60
        while self.cli("status", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"Garage did not start; see {self.log}")
            time.sleep(0.05)
        node = self.cli("node", "id", "-q").stdout.strip().split("@")[0]
        self.cli("layout", "assign", "-z", "dc1", "-c", "1G", node)
        self.cli("layout", "apply", "--version", "1")
        key = self.cli("key", "create", "bench").stdout
        fields = dict(line.split(":", 1) for line in key.splitlines() if ":" in line)
        self.access_key_id = fields["Key ID"].strip()
        self.secret_access_key = fields["Secret key"].strip()
        self.cli("bucket", "create", GARAGE_BUCKET)
        self.cli("bucket", "allow", "--read", "--write", "--owner", GARAGE_BUCKET,
                 "--key", "bench")
        # Ready once a signed upload goes through (a new key reaches the S3 front-end shortly
        # after the CLI returns).
        while True:
            report = self.direct("probe/", MIB, 1, check=False)
            if report and report["completed"] == 1:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"Garage did not accept a signed upload; see {self.log}: {report}")
            time.sleep(0.05)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(GARAGE), "-c", str(self.config), *args],
                                capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            sys.exit(f"garage {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def direct(self, prefix: str, size: int, uploads: int, check: bool = True,
               part_size: int = 16 * MIB, connections: int = 16,
               signed: bool = False) -> dict | None:
        """The bench client's s3-direct run against this node (parts signed with a SHA-256
        of their bytes if `signed`, else `UNSIGNED-PAYLOAD`); its report."""
        args = [str(CLIENT), "s3-direct", "--endpoint", self.endpoint, "--bucket",
                GARAGE_BUCKET, "--region", GARAGE_REGION, "--prefix", prefix,
                "--size", str(size), "--uploads", str(uploads), "--part-size", str(part_size),
                "--connections", str(connections), "--deadline", "240s",
                *(["--signed-payload"] if signed else [])]
        environment = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key_id,
                       "AWS_SECRET_ACCESS_KEY": self.secret_access_key}
        result = subprocess.run(args, capture_output=True, text=True, timeout=300,
                                check=False, env=environment)
        if result.returncode != 0:
            if not check:
                return None
            sys.exit(f"resumable-bench s3-direct failed:\n{result.stderr}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def objects(self, prefix: str) -> list[int]:
        """The sizes of the bucket's objects under `prefix` (one ListObjectsV2 page, signed
        with SigV4 by hand so that bench.py needs no S3 library)."""
        query = f"list-type=2&prefix={urllib.parse.quote(prefix, safe='')}"
        path = f"/{GARAGE_BUCKET}"
        host = f"127.0.0.1:{self.s3_port}"
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        empty = hashlib.sha256(b"").hexdigest()
        headers = f"host:{host}\nx-amz-content-sha256:{empty}\nx-amz-date:{stamp}\n"
        signed = "host;x-amz-content-sha256;x-amz-date"
        canonical = f"GET\n{path}\n{query}\n{headers}\n{signed}\n{empty}"
        scope = f"{day}/{GARAGE_REGION}/s3/aws4_request"
        to_sign = (f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n"
                   f"{hashlib.sha256(canonical.encode()).hexdigest()}")
        key = f"AWS4{self.secret_access_key}".encode()
        for part in (day, GARAGE_REGION, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        request = urllib.request.Request(f"{self.endpoint}{path}?{query}", headers={
            "x-amz-date": stamp, "x-amz-content-sha256": empty,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={self.access_key_id}/{scope}, "
                             f"SignedHeaders={signed}, Signature={signature}"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            listing = ElementTree.fromstring(answer.read())
        namespace = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        return [int(entry.findtext(f"{namespace}Size"))
                for entry in listing.iter(f"{namespace}Contents")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def run_s3_scenario(scenario: S3Scenario, side: str, number: int, data_dir: Path,
                    redis: bool = False, ours_args: tuple[str, ...] = (),
                    direct_signed: bool = False) -> Run:
    """One run of `side` ("direct" or "ours") on a fresh Garage with an empty bucket, its
    metadata and data in `data_dir`."""
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    settle_disk()
    garage = RunningGarage(data_dir, DATA / "logs" / f"garage-{scenario.key}-{side}-{number}.log")
    try:
        cpu_before = proc_cpu_seconds(garage.process.pid)
        if side == "direct":
            run = measure_s3_direct(garage, scenario, direct_signed)
        else:
            run = measure_s3_through_our_server(garage, scenario, number, redis, ours_args)
        # CPU and memory here are Garage's: the store's cost of the same bytes either way.
        run.cpu_seconds = proc_cpu_seconds(garage.process.pid) - cpu_before
        if run.ok:
            run.cpu_per_gib = run.cpu_seconds / (scenario.size * scenario.uploads / GIB)
        run.peak_rss_mib = proc_memory_kib(garage.process.pid, "VmHWM") / 1024
    finally:
        garage.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return run


def measure_s3_direct(garage: RunningGarage, scenario: S3Scenario, signed: bool = False) -> Run:
    """The limit: the bench client sends the objects straight to Garage, multipart, parts in
    parallel (signed with their SHA-256 if `signed`)."""
    report = garage.direct("direct/", scenario.size, scenario.uploads,
                           part_size=scenario.part_size, connections=scenario.connections,
                           signed=signed)
    return Run(ok=report["errors"] == 0, mb_per_s=report["bytes"] / MB / report["seconds"],
               errors=report["errors"], note=report.get("first_error") or "")


class RunningRedis:
    """redis-server on a free loopback port, no persistence, for --s3-redis runs."""

    def __init__(self, log: Path):
        self.port = free_port()
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no"], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while not port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"redis-server did not start; see {log}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


def measure_s3_through_our_server(garage: RunningGarage, scenario: S3Scenario, number: int,
                                  redis: bool = False, ours_args: tuple[str, ...] = ()) -> Run:
    """The same uploads through `resumable serve --store s3://BUCKET/PREFIX --s3-endpoint URL`
    in front of `garage`, each in one PATCH (its RSS must stay under 256 MiB during the 50):
    the bench client's tus mode, which HEADs every upload at the end and counts it completed
    only when the offset S3 gives equals the length."""
    node = DATA / "store" / "ours-s3-node"
    shutil.rmtree(node, ignore_errors=True)
    node.mkdir(parents=True)
    port = free_port()
    locks = RunningRedis(DATA / "logs" / f"redis-{scenario.key}-{number}.log") if redis else None
    command = [str(OURS), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(node),
               "--store", f"s3://{GARAGE_BUCKET}/ours", "--s3-endpoint", garage.endpoint,
               "--s3-region", GARAGE_REGION, "--max-size", "unlimited",
               "--max-connections", "0", "--max-connections-per-client", "0",
               "--max-creations-per-minute", "0", "--min-body-rate", "0",
               *(["--redis", locks.url] if locks else []), *ours_args]
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": garage.access_key_id,
                   "AWS_SECRET_ACCESS_KEY": garage.secret_access_key}
    log = DATA / "logs" / f"resumable-{scenario.key}-s3-{number}.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  env=environment)
    try:
        deadline = time.monotonic() + 20
        while not port_open(port):
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"resumable serve --store s3://… did not start; see {log}")
            time.sleep(0.05)
        cpu_before = proc_cpu_seconds(server.pid)
        report = client("upload", "--endpoint", f"http://127.0.0.1:{port}/files/",
                        "--size", str(scenario.size), "--chunk", str(scenario.size),
                        "--uploads", str(scenario.uploads), "--deadline", "240s", timeout=300)
        cpu = proc_cpu_seconds(server.pid) - cpu_before
        # The server is fresh for this run, so its high-water mark is the peak of the run.
        peak_rss_mib = proc_memory_kib(server.pid, "VmHWM") / 1024
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=15)
        if locks:
            locks.stop()
        shutil.rmtree(node, ignore_errors=True)
    ok = report["errors"] == 0 and report["completed"] == scenario.uploads
    note = report.get("first_error") or ""
    if ok:
        stored = garage.objects("ours/data/")
        if stored != [scenario.size] * scenario.uploads:
            ok = False
            note = (f"Garage holds {len(stored)} objects under ours/data/ (sizes "
                    f"{sorted(set(stored))}), not {scenario.uploads} of {scenario.size} bytes")
    run = Run(ok=ok, mb_per_s=report["bytes"] / MB / report["seconds"], errors=report["errors"],
              note=note, server_peak_rss_mib=peak_rss_mib)
    run.server_cpu_per_gib = cpu / (scenario.size * scenario.uploads / GIB)
    return run


def run_s3(quick: bool, only: str | None, direct_only: bool, out: Path, data_dir: Path,
           redis: bool = False, ours_args: tuple[str, ...] = (),
           direct_signed: bool = False) -> None:
    """The S3 scenarios: each side on a fresh Garage per run, the sides alternating run by run
    (so that the machine's load noise hits both); results in s3-results.json."""
    plan = [s for s in s3_scenarios(quick) if not only or s.key in only.split(",")]
    sides = ["direct"] if direct_only else ["direct", "ours"]
    runs: dict = {}
    for scenario in plan:
        runs[scenario.key] = {side: [] for side in sides}
        for number in range(scenario.runs):
            for side in sides:
                run = run_s3_scenario(scenario, side, number, data_dir, redis, ours_args,
                                      direct_signed)
                runs[scenario.key][side].append(run.__dict__)
                ours = (f"; our server: CPU {run.server_cpu_per_gib:.2f} s/GiB, peak RSS "
                        f"{run.server_peak_rss_mib:.0f} MiB" if side == "ours" else "")
                print(f"{scenario.key:>14} {side:>6} #{number + 1}: {describe(run)} (Garage's "
                      f"CPU and RSS{ours}), load {load_average()}", flush=True)
    summary = {}
    for key, by_side in runs.items():
        summary[key] = {}
        for side, outcomes in by_side.items():
            good = [r for r in outcomes if r["ok"]]
            summary[key][side] = {
                "mb_per_s": median([r["mb_per_s"] for r in good]),
                "mb_per_s_range": value_range([r["mb_per_s"] for r in good]),
                "failed_runs": len(outcomes) - len(good)}
            if side == "ours":
                summary[key][side] |= {
                    "server_peak_rss_mib": max([r["server_peak_rss_mib"] for r in outcomes],
                                               default=0),
                    "server_cpu_per_gib": median([r["server_cpu_per_gib"] for r in good])}
        direct = summary[key]["direct"]["mb_per_s"]
        if "ours" in summary[key] and direct:
            summary[key]["ratio"] = summary[key]["ours"]["mb_per_s"] / direct
            # Each run's ratio to the direct run beside it (same session, same load).
            summary[key]["paired_ratios"] = [
                o["mb_per_s"] / d["mb_per_s"] if o["ok"] and d["ok"] else 0
                for d, o in zip(by_side["direct"], by_side["ours"])]
    results = {"quick": quick, "machine": machine(), "load": load_average(),
               "redis_locks": redis, "ours_args": list(ours_args),
               "direct_signed_payloads": direct_signed,
               "garage_data": f"{data_dir} ({file_system(data_dir)})",
               "garage": subprocess.run([str(GARAGE), "--version"], capture_output=True,
                                        text=True, check=False).stdout.strip(),
               "scenarios": {s.key: s.__dict__ for s in plan}, "runs": runs,
               "summary": summary}
    name = "s3-results-redis.json" if redis else "s3-results.json"
    (out / name).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {out / name}")
    for key, by_side in summary.items():
        line = f"  {key}: direct {spread([r['mb_per_s'] for r in runs[key]['direct']])} MB/s"
        if "ratio" in by_side:
            ours = by_side["ours"]
            line += (f", ours {spread([r['mb_per_s'] for r in runs[key]['ours']])} MB/s = "
                     f"{by_side['ratio']:.2f}× direct (target ≥ 0.8; per pair "
                     f"{', '.join(f'{r:.2f}' for r in by_side['paired_ratios'])}), our peak RSS "
                     f"{ours['server_peak_rss_mib']:.0f} MiB, our CPU "
                     f"{ours['server_cpu_per_gib']:.2f} s/GiB")
        print(line)


# -------------------------------------------------------------------------------------------
# Physical limits


def disk_limit(size_mib: int) -> float:
    """MB/s of `dd bs=1M conv=fdatasync` into the data dir's file system."""
    target = DATA / "store" / "dd.bin"
    target.parent.mkdir(parents=True, exist_ok=True)
    settle_disk()
    started = time.monotonic()
    subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={size_mib}",
                    "conv=fdatasync", "status=none"], timeout=300, check=True)
    seconds = time.monotonic() - started
    target.unlink()
    return size_mib * MIB / MB / seconds


def loopback_limit(size: int) -> float:
    """MB/s of the bench client uploading to its own loopback listener that discards bodies."""
    report = client("discard", "--size", str(size), timeout=120)
    return report["bytes"] / MB / report["seconds"]


# -------------------------------------------------------------------------------------------
# Report


def machine() -> dict:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    memory = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    disk = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE", "-T", str(DATA)],
                          capture_output=True, text=True, check=False).stdout.split()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu.group(1) if cpu else "unknown",
        "memory_gib": round(int(memory.group(1)) / (1 << 20), 1) if memory else 0,
        "disk": " ".join(disk) or "unknown",
        "kernel": platform.release(),
        "open_files": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def file_system(path: Path) -> str:
    """The device and type of the file system that holds `path` (or its nearest parent)."""
    while not path.exists():
        path = path.parent
    found = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE", "-T", str(path)],
                           capture_output=True, text=True, check=False).stdout.split()
    return " ".join(found) or "unknown"


def load_average() -> str:
    """The 1-minute load average: how busy the shared machine was."""
    return Path("/proc/loadavg").read_text().split()[0]


def versions() -> dict:
    def output(*command: str) -> str:
        return subprocess.run(command, capture_output=True, text=True, check=False,
                              cwd=ROOT).stdout.strip()

    def npm_version(package: str) -> str:
        path = BENCH / "peers/node_modules" / package / "package.json"
        if not path.exists():
            return "not installed"
        return json.loads(path.read_text())["version"]

    commit = output("git", "rev-parse", "--short", "HEAD")
    return {
        "resumable": f"{output(str(OURS), '--version')} (commit {commit})",
        "rustus": output(str(RUSTUS), "--version") if RUSTUS.exists() else "not installed",
        "tus-node": f"@tus/server {npm_version('@tus/server')}, @tus/file-store "
                    f"{npm_version('@tus/file-store')}, node {output('node', '--version')}",
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def value_range(values: list[float]) -> list[float]:
    return [min(values), max(values)] if values else [0.0, 0.0]


def spread(values: list[float]) -> str:
    """A median with its range, e.g. "758 (581–1012)"; just the value for one run."""
    if len(values) == 1:
        return f"{values[0]:,.0f}"
    return f"{median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def summarize(results: dict, limits: dict) -> dict:
    """Medians per scenario and server, and ratios to the best peer and to the disk."""
    summary = {}
    for key, by_server in results["runs"].items():
        kind = results["scenarios"][key]["kind"]
        rows = {}
        for name, runs in by_server.items():
            good = [run for run in runs if run["ok"]] or runs
            rows[name] = {
                "mb_per_s": median([run["mb_per_s"] for run in good]),
                "mb_per_s_range": value_range([run["mb_per_s"] for run in good]),
                "requests_per_s": median([run["requests_per_s"] for run in good]),
                "requests_per_s_range": value_range([run["requests_per_s"] for run in good]),
                "cpu_per_gib": median([run["cpu_per_gib"] for run in good]),
                "cpu_seconds": median([run["cpu_seconds"] for run in good]),
                "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
                "errors": sum(run["errors"] for run in runs),
                "failed_runs": sum(not run["ok"] for run in runs),
                "runs": len(runs),
                "notes": sorted({run["note"] for run in runs if run["note"]}),
                "idle": runs[0]["idle"],
            }
        metric = "requests_per_s" if kind == "heads" else "mb_per_s"
        best_peer = max((rows[s.name][metric] for s in SERVERS if s.peer and s.name in rows),
                        default=0)
        for row in rows.values():
            row["vs_best_peer"] = row[metric] / best_peer if best_peer else 0
            uploads = kind in ("upload", "h2-vs-h1")
            row["vs_disk"] = row["mb_per_s"] / limits["disk"] if uploads else 0
        if kind == "h2-vs-h1" and rows.get("resumable-http1", {}).get("mb_per_s"):
            rows["resumable"]["vs_http1"] = (rows["resumable"]["mb_per_s"]
                                             / rows["resumable-http1"]["mb_per_s"])
        summary[key] = rows
    return summary


def results_table(results: dict) -> str:
    header = ("| scenario | server | MB/s: median (range) | × best peer | × disk | "
              "CPU s/GiB | peak RSS MiB | errors |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for key, rows in results["summary"].items():
        scenario = results["scenarios"][key]
        if scenario["kind"] == "h2-vs-h1":
            lines += h2_rows(scenario, rows)
            continue
        for server in SERVERS:
            row = rows.get(server.name)
            if not row:
                continue
            label = f"{scenario['title']} ({row['runs']} run{'s' * (row['runs'] > 1)})"
            if scenario["kind"] == "upload":
                low, high = row["mb_per_s_range"]
                speed = f"{row['mb_per_s']:,.0f}" + (f" ({low:,.0f}–{high:,.0f})"
                                                      if row["runs"] > 1 else "")
                disk = f"{row['vs_disk']:.2f}"
                cpu = f"{row['cpu_per_gib']:.2f}"
            elif scenario["kind"] == "heads":
                low, high = row["requests_per_s_range"]
                speed = f"{row['requests_per_s']:,.0f} HEAD/s" + (
                    f" ({low:,.0f}–{high:,.0f})" if row["runs"] > 1 else "")
                disk, cpu = "", ""
            else:
                idle = row["idle"]
                speed = (f"{idle.get('held_at_probe', 0):,} held, RSS "
                         f"{idle.get('rss_mib', 0):.0f} MiB, {idle.get('threads', 0)} threads, "
                         f"new upload {'ok' if idle.get('probe_ok') else 'FAILED'}")
                disk, cpu = "", ""
            ratio = "" if scenario["kind"] == "idle" else f"{row['vs_best_peer']:.2f}"
            errors = str(row["errors"]) + (f" ({row['failed_runs']} failed runs)"
                                           if row["failed_runs"] else "")
            lines.append(f"| {label} | {server.label} | {speed} | {ratio} | {disk} | {cpu} | "
                         f"{row['peak_rss_mib']:.0f} | {errors} |")
    limits = results["limits"]
    lines.append(f"| disk: `dd bs=1M conv=fdatasync` ({len(limits['disk_runs'])} runs) | — | "
                 f"{spread(limits['disk_runs'])} | | 1.00 | | | |")
    lines.append(f"| loopback: client → discard listener ({len(limits['loopback_runs'])} runs) "
                 f"| — | {spread(limits['loopback_runs'])} | | | | | |")
    return "\n".join(lines)


def h2_rows(scenario: dict, rows: dict) -> list[str]:
    """The h2c-vs-HTTP/1.1 scenario: both medians and their ratio in one row."""
    h2, h1 = rows.get("resumable"), rows.get("resumable-http1")
    if not (h2 and h1):
        return []

    def speed(row: dict) -> str:
        low, high = row["mb_per_s_range"]
        return f"{row['mb_per_s']:,.0f}" + (f" ({low:,.0f}–{high:,.0f})" if row["runs"] > 1 else "")

    label = f"{scenario['title']} ({h2['runs']} + {h1['runs']} runs, alternating)"
    ratio = h2.get("vs_http1", 0)
    errors = h2["errors"] + h1["errors"]
    failed = h2["failed_runs"] + h1["failed_runs"]
    return [f"| {label} | resumable (ours) | h2c {speed(h2)}, HTTP/1.1 {speed(h1)}: "
            f"**{ratio:.2f}×** | | {h2['vs_disk']:.2f} | {h2['cpu_per_gib']:.2f} (HTTP/1.1 "
            f"{h1['cpu_per_gib']:.2f}) | {max(h2['peak_rss_mib'], h1['peak_rss_mib']):.0f} | "
            f"{errors}{f' ({failed} failed runs)' if failed else ''} |"]


def targets(results: dict) -> list[tuple[str, bool, str]]:
    """The project's performance targets, checked against this run."""
    summary, disk = results["summary"], results["limits"]["disk"]
    ours = {key: rows.get("resumable") for key, rows in summary.items()}
    titles = {key: scenario["title"] for key, scenario in results["scenarios"].items()}
    checks = []
    if ours.get("one-patch"):
        ratio = ours["one-patch"]["vs_disk"]
        checks.append((f"{titles['one-patch']} ≥ 90% of dd", ratio >= 0.9, f"{ratio:.0%} of dd"))
    if ours.get("one-patch"):
        # A server that buffers bodies peaks near the file's size (rustus: 1 GiB); ours should
        # stay a small constant: the batches and aligned buffers of one upload.
        rss = ours["one-patch"]["peak_rss_mib"]
        checks.append(("Memory per upload independent of file size: one 1 GiB PATCH peaks "
                       "below 64 MiB RSS", rss < 64, f"peak RSS {rss:.0f} MiB"))
    for key in ("1mib", "256kib"):
        if ours.get(key):
            ratio = ours[key]["vs_best_peer"]
            # Three decimals: 1.4986 must not read as a met 1.50.
            checks.append((f"{titles[key]} ≥ 1.5× the best peer", ratio >= 1.5, f"{ratio:.3f}×"))
    if ours.get("concurrent"):
        row = ours["concurrent"]
        ok = row["vs_disk"] >= 0.8 and row["errors"] == 0 and row["peak_rss_mib"] < 128
        checks.append((f"{titles['concurrent']} ≥ 80% of disk, zero errors, RSS < 128 MiB", ok,
                       f"{row['vs_disk']:.0%} of dd ({row['mb_per_s']:.0f} of {disk:.0f} MB/s), "
                       f"{row['errors']} errors, peak RSS {row['peak_rss_mib']:.0f} MiB"))
    if ours.get("h2") and "vs_http1" in ours["h2"]:
        # "Not slower": within the 5% that alternating runs of the same thing differ by here.
        ratio = ours["h2"]["vs_http1"]
        checks.append((f"{titles['h2']}: h2c not slower than HTTP/1.1 (≥ 0.95×)", ratio >= 0.95,
                       f"{ratio:.2f}× ({ours['h2']['mb_per_s']:.0f} vs "
                       f"{summary['h2']['resumable-http1']['mb_per_s']:.0f} MB/s)"))
    if ours.get("idle"):
        idle, wanted = ours["idle"]["idle"], results["scenarios"]["idle"]["connections"]
        ok = (idle.get("held_at_probe") == wanted and idle.get("rss_mib", 1e9) < 256
              and idle.get("probe_ok"))
        checks.append((f"{wanted:,} idle connections held, RSS < 256 MiB, new upload completes",
                       bool(ok), f"{idle.get('held_at_probe', 0):,} held, RSS "
                       f"{idle.get('rss_mib', 0):.0f} MiB, new upload "
                       f"{'completed' if idle.get('probe_ok') else 'FAILED'} "
                       f"in {idle.get('probe_seconds', 0):.2f} s"))
    return checks


def write_report(results: dict, out: Path, quick: bool) -> None:
    m, v = results["machine"], results["versions"]
    text = [
        "# Benchmark results" + (" (quick smoke run: small sizes, 1 run)" if quick else ""),
        "",
        f"Run by `bench/run.sh{' --quick' if quick else ''}` on {m['date']}, "
        f"{results['minutes']:.1f} minutes. MB/s are decimal (10^6 bytes/s), like dd's; the "
        "bench client, the server and anything else running share the same cores.",
        "",
        "![MB/s by scenario and server](results.png)",
        "",
        results_table(results),
        "",
        "Throughput is the median of the runs (uploads acknowledged by the server ÷ wall time "
        "from the first connection to the last answer). *× best peer* compares with the faster "
        "of rustus and @tus/server in their default configurations (`rustus --force-fsync` is "
        "shown for comparison, not counted as a peer); *× disk* with `dd`. CPU s/GiB is the server process's "
        "utime+stime over the run per GiB uploaded (median); peak RSS is the largest VmHWM of "
        "the runs (each run starts a fresh server).",
        "",
        "## Targets (ours)",
        "",
        "| target | met | measured |",
        "|---|---|---|",
        *[f"| {name} | {'yes' if ok else '**no**'} | {detail} |"
          for name, ok, detail in targets(results)],
        "",
        "## Durability: what an acknowledged byte means",
        "",
        *[f"- **{s.label}**: {s.durability}." for s in SERVERS],
        "",
        "So the default peers' figures are mostly page-cache speed: their bytes may still be "
        "in memory when they answer (and would be lost with the machine, and with them the "
        "offset they reported). Ours are on the disk when we answer.",
        "",
        "## Machine",
        "",
        f"- {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB memory, data on {m['disk']}, "
        f"Linux {m['kernel']}; open files per process: {m['open_files']:,}, the hard limit "
        "here (10,000 held connections fit; a server that also keeps each held upload's file "
        "open, like @tus/file-store, runs out just short of 10,000)",
        f"- resumable: {v['resumable']}; rustus: {v['rustus']}; {v['tus-node']}",
        "- A shared virtual machine: other engineers' builds and tests run on the same "
        f"{m['nproc']} cores and disk (1-minute load average {m['load']}), so figures move "
        "between runs, the disk limit included (see the spread in results.json).",
        "",
    ]
    notes = [(key, s, note) for key, rows in results["summary"].items()
             for s, row in rows.items() for note in row["notes"]]
    if notes:
        text += ["## Errors seen", ""]
        text += [f"- {key}, {server}: {' '.join(note.split())}" for key, server, note in notes]
        text.append("")
    (out / "RESULTS.md").write_text("\n".join(text))


def plot(results: dict, out: Path) -> None:
    """Bars of median MB/s per upload scenario and server (whiskers: the runs' range), the
    disk limit as a dashed line over the band its runs spanned; HEADs/s beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, scenario_info, limits = results["summary"], results["scenarios"], results["limits"]
    uploads = [k for k, s in scenario_info.items() if s["kind"] == "upload"]
    heads = [k for k, s in scenario_info.items() if s["kind"] == "heads"]
    colors = {"resumable": "#1f6f3f", "rustus": "#c4622d", "rustus-fsync": "#e8a87c",
              "tus-node": "#3a6ea5"}
    short = {"resumable": "ours", "rustus": "rustus", "rustus-fsync": "rustus\nfsync",
             "tus-node": "@tus/\nserver"}
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(12, 5.6), gridspec_kw={"width_ratios": [4, 1.2]})
    width = 0.8 / len(SERVERS)

    def bars(axis, xs, rows, metric, **style):
        values = [row.get(metric, 0) for row in rows]
        ranges = [row.get(metric + "_range", [0, 0]) for row in rows]
        whiskers = [[max(v - r[0], 0) for v, r in zip(values, ranges)],
                    [max(r[1] - v, 0) for v, r in zip(values, ranges)]]
        drawn = axis.bar(xs, values, yerr=whiskers, capsize=2,
                         error_kw={"linewidth": 0.8}, **style)
        axis.bar_label(drawn, fmt="%.0f", fontsize=7, padding=2)

    for index, server in enumerate(SERVERS):
        offset = (index - (len(SERVERS) - 1) / 2) * width
        rows = [summary[k].get(server.name, {}) for k in uploads]
        bars(left, [i + offset for i in range(len(uploads))], rows, "mb_per_s", width=width,
             label=server.label, color=colors[server.name])
        bars(right, [index], [summary[k].get(server.name, {}) for k in heads[:1]],
             "requests_per_s", width=0.8, color=colors[server.name])
    left.axhspan(min(limits["disk_runs"]), max(limits["disk_runs"]), color="black", alpha=0.06)
    left.axhline(limits["disk"], color="black", linestyle="--", linewidth=1,
                 label=f"disk: dd fdatasync, median {limits['disk']:.0f} MB/s (band: its range)")
    left.set_xticks(range(len(uploads)), [scenario_info[k]["title"] for k in uploads],
                    fontsize=8)
    left.set_ylabel("MB/s (median of runs; whiskers: range)")
    left.set_title(f"Uploads (loopback ceiling {limits['loopback']:.0f} MB/s)", fontsize=10)
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=3,
                frameon=False)
    right.set_xticks(range(len(SERVERS)), [short[s.name] for s in SERVERS], fontsize=8)
    right.set_title(scenario_info[heads[0]]["title"] if heads else "HEADs", fontsize=9)
    right.set_ylabel("HEAD requests/s")
    figure.suptitle(f"resumable vs peers, {results['machine']['date']}"
                    f"{' (quick)' if results['quick'] else ''}: ours fdatasyncs before "
                    "answering, the peers by default do not", fontsize=10)
    figure.tight_layout()
    figure.savefig(out / "results.png", dpi=110)


def update_readme(results: dict) -> None:
    """Replaces the table between the markers in README.md's Benchmarks section."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    table = (f"\n{results_table(results)}\n\n(Run of {results['machine']['date']}; details, "
             "durability and machine in [bench/RESULTS.md](bench/RESULTS.md).)\n")
    readme.write_text(head + start + table + end + tail)


# -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, one run each: a smoke test of the whole benchmark")
    parser.add_argument("--only", help="comma-separated scenario keys to run")
    parser.add_argument("--servers", help="comma-separated servers (resumable,rustus,"
                        "rustus-fsync,tus-node)")
    parser.add_argument("--report", metavar="RESULTS_JSON", type=Path,
                        help="only rewrite RESULTS.md and results.png (beside the file) from a "
                        "results.json of an earlier run")
    parser.add_argument("--s3", action="store_true",
                        help="run the S3 scenarios instead (Garage; see s3_scenarios): uploads "
                        "through our server and straight to Garage")
    parser.add_argument("--s3-direct-only", action="store_true",
                        help="with --s3: only the direct baseline")
    parser.add_argument("--s3-data-dir", type=Path, default=DATA / "store" / "garage",
                        help="with --s3: where Garage keeps its metadata and data (default: "
                        "bench/.data/store/garage, on the worktree's disk)")
    parser.add_argument("--s3-redis", action="store_true",
                        help="with --s3: our server locks in a fresh redis-server (--redis) "
                        "instead of in-process")
    parser.add_argument("--s3-direct-signed", action="store_true",
                        help="with --s3: the direct baseline signs each part with a SHA-256 of "
                        "its bytes (as our server does over plain http by default) instead of "
                        "UNSIGNED-PAYLOAD")
    parser.add_argument("--s3-ours-args", default="", metavar="ARGS",
                        help="with --s3: extra flags for our server, space-separated (e.g. "
                        "\"--s3-part-size 32MiB --s3-buffer 256MiB\")")
    args = parser.parse_args()
    if args.s3:
        out = BENCH / ".quick" if args.quick else BENCH / ".data"
        out.mkdir(parents=True, exist_ok=True)
        (DATA / "logs").mkdir(parents=True, exist_ok=True)
        run_s3(args.quick, args.only, args.s3_direct_only, out, args.s3_data_dir.resolve(),
               args.s3_redis, tuple(args.s3_ours_args.split()), args.s3_direct_signed)
        return
    if args.report:
        results = json.loads(args.report.read_text())
        write_report(results, args.report.parent, results["quick"])
        plot(results, args.report.parent)
        return

    started = time.monotonic()
    load_at_start = load_average()
    # A subset must not overwrite the full run's report: it goes beside it.
    partial = bool(args.only or args.servers)
    out = BENCH / (".quick" if args.quick else ".partial" if partial else "")
    out.mkdir(exist_ok=True)
    (DATA / "logs").mkdir(parents=True, exist_ok=True)
    plan = scenarios(args.quick)
    if args.only:
        plan = [s for s in plan if s.key in args.only.split(",")]
    servers = [s for s in SERVERS if not args.servers or s.name in args.servers.split(",")]

    # The limits are measured before and after the scenarios: on a shared machine they drift.
    limit_runs = 1 if args.quick else 3
    limit_size = 64 * MIB if args.quick else GIB
    limit_samples: dict = {"disk": [], "loopback": []}

    def measure_limits(when: str) -> None:
        print(f"limits ({when}): dd {limit_size // MIB} MiB and loopback, {limit_runs} runs each",
              flush=True)
        disk = [disk_limit(limit_size // MIB) for _ in range(limit_runs)]
        loopback = [loopback_limit(limit_size) for _ in range(limit_runs)]
        limit_samples["disk"] += disk
        limit_samples["loopback"] += loopback
        print(f"  disk {spread(disk)} MB/s, loopback {spread(loopback)} MB/s", flush=True)

    measure_limits("before")

    runs: dict = {}
    for scenario in plan:
        runs[scenario.key] = {}
        if scenario.kind == "h2-vs-h1":
            ours = [s for s in servers if s.name == "resumable"]
            if ours:
                runs[scenario.key] = h2_vs_h1(ours[0], scenario)
            else:
                del runs[scenario.key]
            continue
        for server in servers:
            outcomes = []
            for number in range(scenario.runs):
                run = run_scenario(server, scenario, number)
                outcomes.append(run.__dict__)
                print(f"{scenario.key:>10} {server.name:>9} #{number + 1}: {describe(run)}",
                      flush=True)
            runs[scenario.key][server.name] = outcomes

    measure_limits("after")
    limits = {
        "disk": median(limit_samples["disk"]),
        "loopback": median(limit_samples["loopback"]),
        "disk_runs": limit_samples["disk"],
        "loopback_runs": limit_samples["loopback"],
    }
    results = {
        "quick": args.quick,
        "machine": {**machine(), "load": f"{load_at_start} at the start, "
                                         f"{load_average()} at the end"},
        "versions": versions(),
        "limits": limits,
        "scenarios": {s.key: s.__dict__ for s in plan},
        "runs": runs,
    }
    results["summary"] = summarize(results, limits)
    results["minutes"] = (time.monotonic() - started) / 60
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, out, args.quick)
    plot(results, out)
    if not args.quick and not partial:
        update_readme(results)
    print(f"\nwrote {out / 'RESULTS.md'} and {out / 'results.png'} "
          f"({results['minutes']:.1f} minutes)")
    for name, ok, detail in targets(results):
        print(f"  target {'met   ' if ok else 'MISSED'} {name}: {detail}")


def h2_vs_h1(server: ServerKind, scenario: Scenario) -> dict:
    """The same upload over HTTP/1.1 and over h2c, alternating, a fresh server each run."""
    by_protocol: dict = {"resumable-http1": [], "resumable": []}
    for number in range(scenario.runs):
        for http2, name in ((False, "resumable-http1"), (True, "resumable")):
            run = run_scenario(server, scenario, number, http2)
            by_protocol[name].append(run.__dict__)
            protocol = "h2c" if http2 else "HTTP/1.1"
            print(f"{scenario.key:>10} {protocol:>9} #{number + 1}: {describe(run)}", flush=True)
    return by_protocol


def describe(run: Run) -> str:
    if run.idle:
        i = run.idle
        text = (f"{i['held_at_probe']} held, RSS {i['rss_mib']:.0f} MiB, {i['threads']} threads, "
                f"setup "
                f"{i['setup_seconds']:.1f} s, new upload {'ok' if i['probe_ok'] else 'FAILED'}")
    elif run.requests_per_s:
        text = f"{run.requests_per_s:,.0f} HEAD/s"
    else:
        text = f"{run.mb_per_s:.0f} MB/s, CPU {run.cpu_per_gib:.2f} s/GiB"
    text += f", peak RSS {run.peak_rss_mib:.0f} MiB"
    if not run.ok:
        text += f", FAILED ({run.errors} errors: {run.note})"
    return text


if __name__ == "__main__":
    main()
