//! `resumable upload` against an independent tus server, @tus/server with @tus/file-store
//! (tests/peer, installed by `./test.sh` with `npm ci`): the CLI uploads, is interrupted, and
//! resumes there too.
//!
//! Without `tests/peer/node_modules` the test is skipped, unless `RESUMABLE_REQUIRE_PEER` is set
//! (as `./test.sh` does), in which case it fails.
//!
//! The interrupted run goes through a [`Gate`] proxy that holds the body past a budget, so the
//! client is stopped mid-upload by construction and the peer has exactly the allowed bytes.

mod common;
mod uploader;

use common::gate::Gate;
use common::{scratch, sha256_hex};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uploader::{
    MIB, Running, files_size, gate_endpoint, number, run, single_report, text, upload_big_args,
    wait_for, wait_until_held, write_source,
};

/// A running `node tests/peer/server.mjs DIR`, killed when dropped.
struct PeerServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// Where @tus/file-store keeps uploads: the data file is named by the upload id, its
    /// metadata sits beside it as `ID.json`.
    dir: PathBuf,
}

impl PeerServer {
    fn start(work: &Path) -> Option<PeerServer> {
        let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peer");
        if !peer.join("node_modules/@tus/server").is_dir() {
            assert!(
                std::env::var_os("RESUMABLE_REQUIRE_PEER").is_none(),
                "tests/peer/node_modules is missing: run `npm ci` in tests/peer (./test.sh does)"
            );
            // Straight to the process's stderr: libtest captures `eprintln!` of a passing test,
            // and a skip that nobody sees reads as a pass.
            let _ = writeln!(
                std::io::stderr(),
                "\nWARNING: peer_tus_server SKIPPED, nothing was tested: tests/peer/node_modules \
                 is missing (run `npm ci` in tests/peer; RESUMABLE_REQUIRE_PEER=1 makes this an \
                 error)\n"
            );
            return None;
        }
        let dir = work.join("peer-files");
        let stdout = work.join("peer.stdout");
        let child = Command::new("node")
            .arg(peer.join("server.mjs"))
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("create peer stdout"))
            .stderr(std::fs::File::create(work.join("peer.stderr")).expect("create peer stderr"))
            .spawn()
            .expect("spawn node (install nodejs)");
        let mut server = PeerServer {
            child,
            base: String::new(),
            dir,
        };
        let started = Instant::now();
        server.base = loop {
            let printed = std::fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(base) = printed
                .lines()
                .find_map(|line| line.strip_prefix("listening on "))
            {
                break base.trim().to_owned();
            }
            assert!(
                server.child.try_wait().expect("poll node").is_none(),
                "the peer server exited: {}",
                std::fs::read_to_string(work.join("peer.stderr")).unwrap_or_default()
            );
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the peer server printed no address"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            server.base.starts_with("http://127.0.0.1:"),
            "{}",
            server.base
        );
        Some(server)
    }

    /// Bytes in upload data files.
    fn stored_bytes(&self) -> u64 {
        files_size(&self.dir, |path| path.extension().is_none())
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn uploads_and_resumes_against_tus_node_server() {
    let scratch = scratch();
    let work = scratch.path();
    let Some(peer) = PeerServer::start(work) else {
        return;
    };
    let size = 32 * MIB;
    let source_sha = write_source(&work.join("big.bin"), size, 0x9EE);
    let upstream = peer
        .base
        .strip_prefix("http://")
        .and_then(|address| address.parse().ok())
        .expect("the peer's address");
    let gate = Gate::start(upstream);
    let endpoint = gate_endpoint(&gate);
    let args = upload_big_args(&endpoint, &["--chunk-size", "4MiB"]);
    // Two chunks answered, the third cut after 12 345 bytes.
    let cut = size / 4 + 12_345;
    gate.allow(cut);
    let first = Running::start(work, "first", &args);
    wait_until_held(&gate, cut, || peer.stored_bytes(), || first.stderr());
    first.interrupt();
    let first = first.wait(Duration::from_secs(10));
    gate.sever();
    assert_eq!(first.status.code(), Some(130), "{}", first.stderr);
    let report = single_report(&first);
    assert_eq!(number(&report, "offset"), size / 4, "{report}");
    let url = text(&report, "url").to_owned();
    // The peer keeps the cut request's bytes (its offset is its data file's length).
    wait_for(
        "the peer settled the cut request",
        Duration::from_secs(20),
        || {
            let finished = run(work, &["status", &url], Duration::from_secs(30));
            finished.stdout.contains(&format!("offset: {cut}\n"))
        },
        || format!("{} bytes on the peer's disk", peer.stored_bytes()),
    );

    gate.open();
    let second = Running::start(work, "second", &args).wait(Duration::from_secs(60));
    assert!(second.status.success(), "{}", second.stderr);
    let report = single_report(&second);
    assert_eq!(text(&report, "url"), url);
    assert_eq!(number(&report, "resumed_from"), cut, "{report}");

    let id = url.rsplit('/').next().expect("an id in the URL");
    let stored = std::fs::read(peer.dir.join(id)).expect("the peer's data file");
    assert_eq!(sha256_hex(&stored), source_sha);
    let status = run(work, &["status", &url], Duration::from_secs(30));
    assert!(
        status.stdout.contains("complete: yes"),
        "{}\n{}",
        status.stdout,
        status.stderr
    );
}

/// @tus/file-store offers no concatenation, so `--parts` is refused before anything is created.
#[test]
fn parts_are_refused_by_tus_node_server_which_cannot_join_them() {
    let scratch = scratch();
    let work = scratch.path();
    let Some(peer) = PeerServer::start(work) else {
        return;
    };
    write_source(&work.join("big.bin"), 4 * MIB, 0x9EF);
    let endpoint = format!("{}/files/", peer.base);
    let refused = run(
        work,
        &[
            "upload",
            "big.bin",
            "--to",
            &endpoint,
            "--state-dir",
            "state",
            "--parts",
            "4",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("lacks \"concatenation\""),
        "{}",
        refused.stderr
    );
    assert_eq!(peer.stored_bytes(), 0);
    let created = std::fs::read_dir(&peer.dir).map_or(0, |entries| entries.count());
    assert_eq!(created, 0, "nothing was created on the peer");
}
