//! Smoke test of the bench client: every subcommand of `resumable-bench`, in tiny sizes, against
//! the real `resumable` binary on a free loopback port. Checks the client works, not how fast.
//!
//! The server binary is `$RESUMABLE_BIN`, else `resumable` beside this test's target directory
//! (`cargo test --workspace` builds it), else it is built with `cargo build --bin resumable`.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

/// Longest any one step may take.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("RESUMABLE_BIN") {
            return path.into();
        }
        // target/<profile>/deps/smoke-… → target/<profile>/resumable
        let test = std::env::current_exe().expect("test path");
        let deps = test.parent().expect("deps dir");
        let binary = deps.parent().expect("profile dir").join("resumable");
        if !binary.exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "resumable-cli", "--bin", "resumable"])
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build --bin resumable failed");
        }
        binary
    })
}

/// `resumable serve` on 127.0.0.1:0, killed when dropped.
struct Server {
    child: Child,
    endpoint: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch dir");
        let mut child = Command::new(server_binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--max-size",
                "unlimited",
            ])
            .arg("--data-dir")
            .arg(data.path())
            .env("RESUMABLE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start resumable");
        let stdout = child.stdout.take().expect("piped stdout");
        let first_line = lines_of(stdout).recv_timeout(STEP_DEADLINE);
        let line = first_line.expect("resumable prints its address");
        let url = line
            .strip_prefix("resumable listening on ")
            .expect("the address line");
        Server {
            child,
            endpoint: format!("{url}/files/"),
            _data: data,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of a child's output, read on a thread so every wait can be bounded.
fn lines_of(output: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

fn bench(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_resumable-bench"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start resumable-bench")
}

/// Runs `resumable-bench ARGS` and parses its one JSON line.
fn bench_report(args: &[&str]) -> Value {
    let mut child = bench(args);
    let lines = lines_of(child.stdout.take().expect("piped stdout"));
    let line = lines.recv_timeout(STEP_DEADLINE).expect("a report line");
    assert!(child.wait().expect("wait").success(), "{args:?} failed");
    serde_json::from_str(&line).expect("JSON report")
}

#[test]
fn uploads_in_chunks_and_at_once_complete_with_every_byte_acknowledged() {
    let server = Server::start();
    let report = bench_report(&[
        "upload",
        "--endpoint",
        &server.endpoint,
        "--size",
        "3000000",
        "--chunk",
        "256KiB",
        "--uploads",
        "4",
        "--concurrency",
        "2",
    ]);
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["completed"], 4, "{report}");
    assert_eq!(report["bytes"], 4 * 3_000_000, "{report}");
    assert!(report["seconds"].as_f64().expect("seconds") > 0.0);
}

#[test]
fn uploads_over_http2_complete_with_every_byte_acknowledged() {
    let server = Server::start();
    let report = bench_report(&[
        "upload",
        "--http2",
        "--endpoint",
        &server.endpoint,
        "--size",
        "3000000",
        "--chunk",
        "1MiB",
        "--uploads",
        "2",
    ]);
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["completed"], 2, "{report}");
    assert_eq!(report["bytes"], 2 * 3_000_000, "{report}");
}

#[test]
fn heads_are_counted() {
    let server = Server::start();
    let report = bench_report(&[
        "heads",
        "--endpoint",
        &server.endpoint,
        "--connections",
        "2",
        "--duration",
        "300ms",
    ]);
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        report["requests"].as_u64().expect("requests") > 0,
        "{report}"
    );
}

#[test]
fn idle_connections_are_held_and_a_new_upload_still_completes() {
    let server = Server::start();
    let mut child = bench(&[
        "idle",
        "--endpoint",
        &server.endpoint,
        "--connections",
        "20",
        "--probe-size",
        "1MiB",
    ]);
    let lines = lines_of(child.stdout.take().expect("piped stdout"));
    let holding: Value =
        serde_json::from_str(&lines.recv_timeout(STEP_DEADLINE).expect("holding line"))
            .expect("JSON");
    assert_eq!(holding["phase"], "holding");
    assert_eq!(holding["holding"], 20, "{holding}");
    let mut stdin = child.stdin.take().expect("piped stdin");
    writeln!(stdin, "probe").expect("tell it to probe");
    let probe: Value =
        serde_json::from_str(&lines.recv_timeout(STEP_DEADLINE).expect("probe line"))
            .expect("JSON");
    assert_eq!(probe["phase"], "probe");
    assert_eq!(probe["probe_ok"], true, "{probe}");
    assert_eq!(probe["still_holding"], 20, "{probe}");
    assert!(child.wait().expect("wait").success());
}

#[test]
fn the_discard_listener_takes_uploads_like_a_server() {
    let report = bench_report(&["discard", "--size", "5MiB", "--chunk", "1MiB"]);
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["bytes"], 5 << 20, "{report}");
}
