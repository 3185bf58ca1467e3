//! `resumable upload` (and friends) as child processes, and what the upload tests observe.

#![allow(dead_code)]

use crate::common::gate::Gate;
use crate::common::{self, Finished, Server, pseudo_random, sha256_hex};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub(crate) const MIB: u64 = 1 << 20;
/// Between two looks at a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Writes `length` deterministic bytes to `path`; their SHA-256.
pub(crate) fn write_source(path: &Path, length: u64, seed: u64) -> String {
    let bytes = pseudo_random(usize::try_from(length).expect("fits usize"), seed);
    std::fs::write(path, &bytes).expect("write the source file");
    sha256_hex(&bytes)
}

/// `resumable ARGS...` run from `work` with a clean environment.
pub(crate) fn resumable(work: &Path, args: &[&str]) -> Command {
    let mut command = common::command(work);
    command.args(args);
    command
}

/// Runs `resumable ARGS...` to its exit (at most `deadline`); logs land in `work`.
pub(crate) fn run(work: &Path, args: &[&str], deadline: Duration) -> Finished {
    common::run_to_exit(&mut resumable(work, args), work, deadline)
}

/// `resumable upload big.bin --to ENDPOINT --state-dir state --json EXTRA...`: the upload the
/// stop-and-resume tests start, stop and run again.
pub(crate) fn upload_big_args<'a>(endpoint: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "upload",
        "big.bin",
        "--to",
        endpoint,
        "--state-dir",
        "state",
        "--json",
    ];
    args.extend_from_slice(extra);
    args
}

/// The tus creation URL of a server.
pub(crate) fn tus_endpoint(server: &Server) -> String {
    format!("{}/files/", server.base)
}

/// The tus creation URL through a gate proxy.
pub(crate) fn gate_endpoint(gate: &Gate) -> String {
    format!("{}/files/", gate.base)
}

/// How long a client may take to reach the gate's hold (start, create, send what is allowed).
const HOLD_DEADLINE: Duration = Duration::from_secs(30);

/// Waits until every body byte `gate` allowed (`allowed` in all) went through, the server shows
/// them all (`stored()`), and a request is waiting at the gate for more: the client is provably
/// mid-upload and the server has exactly `allowed` bytes. Shows `context()` on a timeout.
pub(crate) fn wait_until_held(
    gate: &Gate,
    allowed: u64,
    stored: impl Fn() -> u64,
    context: impl Fn() -> String,
) {
    wait_for(
        &format!("the server has the {allowed} allowed bytes and the client is sending more"),
        HOLD_DEADLINE,
        || gate.passed() == allowed && gate.holding() && stored() == allowed,
        || {
            format!(
                "gate: {} bytes passed, holding: {}; server shows {}\n{}",
                gate.passed(),
                gate.holding(),
                stored(),
                context()
            )
        },
    );
}

/// Bytes in the upload data files of a `resumable serve` data dir.
pub(crate) fn stored_bytes(data_dir: &Path) -> u64 {
    files_size(&data_dir.join("uploads"), |path| {
        path.extension().is_some_and(|extension| extension == "bin")
    })
}

/// Bytes in the files of `dir` that `select` picks (0 while `dir` does not exist).
pub(crate) fn files_size(dir: &Path, select: impl Fn(&Path) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| select(&entry.path()))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// The uploads in a `resumable serve` data dir, by their role in concatenation.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct UploadKinds {
    /// Created with `Upload-Concat: partial`.
    pub(crate) partial: usize,
    /// Created with `Upload-Concat: final;...`.
    pub(crate) finals: usize,
    /// Plain uploads.
    pub(crate) whole: usize,
}

/// Counts the uploads of a `resumable serve` data dir from their info files.
pub(crate) fn upload_kinds(data_dir: &Path) -> UploadKinds {
    let mut kinds = UploadKinds::default();
    let Ok(entries) = std::fs::read_dir(data_dir.join("uploads")) else {
        return kinds;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_none_or(|extension| extension != "info") {
            continue;
        }
        let text = std::fs::read(&path).expect("read an upload's info");
        let info: Value = serde_json::from_slice(&text).expect("info is JSON");
        match &info["concat"] {
            Value::String(role) if role == "partial" => kinds.partial += 1,
            Value::Object(role) if role.contains_key("final") => kinds.finals += 1,
            Value::Null => kinds.whole += 1,
            other => panic!("unknown concat {other} in {}", path.display()),
        }
    }
    kinds
}

/// The resume state files in `state_dir`, parsed.
pub(crate) fn remembered_uploads(state_dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("uploads")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .map(|path| {
            let text = std::fs::read(&path).expect("read a state file");
            serde_json::from_slice(&text).expect("state is JSON")
        })
        .collect()
}

/// A running client, killed when dropped.
pub(crate) struct Running {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    /// Starts `resumable ARGS...` in `work`, output to files there.
    pub(crate) fn start(work: &Path, name: &str, args: &[&str]) -> Running {
        let stdout = work.join(format!("{name}.stdout"));
        let stderr = work.join(format!("{name}.stderr"));
        let child = resumable(work, args)
            .stdout(std::fs::File::create(&stdout).expect("create stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .expect("spawn resumable");
        Running {
            child,
            stdout,
            stderr,
        }
    }

    pub(crate) fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Whether the process has exited (it stays a zombie until [`Running::wait`] reaps it).
    pub(crate) fn has_exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// The process's peak resident memory so far (`VmHWM`, Linux), in KiB.
    pub(crate) fn peak_resident_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Sends SIGINT, as Ctrl-C does (`kill(1)`: the workspace forbids unsafe code).
    pub(crate) fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill -INT");
        assert!(status.success(), "kill -INT failed");
    }

    /// SIGKILL.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the client");
    }

    /// Waits for the exit; fails the test after `deadline`.
    pub(crate) fn wait(mut self, deadline: Duration) -> Finished {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the client") {
                break status;
            }
            assert!(
                started.elapsed() < deadline,
                "client still running after {deadline:?}; stdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(POLL_INTERVAL);
        };
        Finished {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `condition` until it holds; fails the test after `deadline`, showing `context()`.
pub(crate) fn wait_for(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what}\n{}",
            context()
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The JSON objects printed one per line on stdout.
pub(crate) fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line:?}")))
        .collect()
}

/// The one JSON object of a single-file run.
pub(crate) fn single_report(finished: &Finished) -> Value {
    let mut reports = json_lines(&finished.stdout);
    assert_eq!(
        reports.len(),
        1,
        "one JSON object per file; stdout:\n{}\nstderr:\n{}",
        finished.stdout,
        finished.stderr
    );
    reports.remove(0)
}

/// A string field of a JSON report.
pub(crate) fn text<'a>(report: &'a Value, field: &str) -> &'a str {
    report[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field} in {report}"))
}

/// A number field of a JSON report.
pub(crate) fn number(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {field} in {report}"))
}

/// Checks that a rerun of `big.bin` succeeded by continuing `url` from the server's offset
/// `cut` of `size` bytes, creating nothing new.
pub(crate) fn assert_resumed(second: &Finished, url: &str, cut: u64, size: u64) {
    assert!(second.status.success(), "rerun failed:\n{}", second.stderr);
    let report = single_report(second);
    assert_eq!(text(&report, "status"), "done");
    assert_eq!(
        text(&report, "url"),
        url,
        "the rerun continued the same upload"
    );
    assert_eq!(
        number(&report, "resumed_from"),
        cut,
        "the rerun resumed from the server's offset, not from its last confirmed chunk"
    );
    assert!(
        second
            .stderr
            .contains(&format!("big.bin: resuming at {cut} of {size} bytes")),
        "{}",
        second.stderr
    );
    assert!(!second.stderr.contains("created"), "{}", second.stderr);
}

/// `resumable download URL -o OUTPUT` in `work`; the SHA-256 of what it saved.
pub(crate) fn download_sha256(work: &Path, url: &str, output: &str) -> String {
    let finished = run(
        work,
        &["download", url, "-o", output],
        Duration::from_secs(30),
    );
    assert!(
        finished.status.success(),
        "download failed: {}",
        finished.stderr
    );
    let bytes = std::fs::read(work.join(output)).expect("read the download");
    sha256_hex(&bytes)
}

/// Starts `resumable serve` on exactly `address` (a restart on the port clients know), retrying
/// while the old process's port is still being released.
pub(crate) fn serve_at(data_dir: &Path, address: SocketAddr) -> Server {
    let work = data_dir.parent().expect("data dir has a parent");
    let started = Instant::now();
    loop {
        let mut command = common::command(work);
        command
            .args(["serve", "--listen", &address.to_string(), "--data-dir"])
            .arg(data_dir);
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Server::start(&mut command, work)
        }));
        match attempt {
            Ok(server) => return server,
            Err(_) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Masks what changes from run to run in the client's log lines: URLs, durations, rates.
pub(crate) fn mask(output: &str) -> String {
    output
        .lines()
        .map(|line| line.split(' ').map(mask_word).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn mask_word(word: &str) -> String {
    if word.starts_with("http://") {
        return "URL".into();
    }
    let (core, tail) = word.split_at(word.trim_end_matches([',', ':', ')']).len());
    let core_is_duration = core
        .strip_suffix('s')
        .is_some_and(|number| number.parse::<f64>().is_ok());
    if core_is_duration {
        return format!("TIME{tail}");
    }
    if core.starts_with('(') && core.ends_with("/s") {
        return format!("(RATE{tail}");
    }
    word.to_owned()
}
