//! `resumable upload --protocol ietf` against the real server binary: a chunked upload the
//! server records as the IETF draft's, a client killed mid-upload and rerun (through the
//! [`Gate`] proxy, so "mid-upload" is made, not raced for), the server's `max-size` refused up
//! front, and the tus-only flags refused.

mod common;
mod uploader;

use common::gate::Gate;
use common::{Server, committed_length, scratch};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use uploader::{
    MIB, Running, assert_resumed, download_sha256, gate_endpoint, number, remembered_uploads, run,
    single_report, stored_bytes, text, tus_endpoint, upload_big_args, wait_for, wait_until_held,
    write_source,
};

const RUN_DEADLINE: Duration = Duration::from_secs(60);
/// For the server to settle a request whose client went away.
const SETTLE_DEADLINE: Duration = Duration::from_secs(20);

/// The id of an upload: the last segment of its URL.
fn upload_id(url: &str) -> &str {
    url.rsplit('/').next().expect("an id in the URL")
}

/// The server's record of upload `id` (`uploads/ID.info`).
fn info(data_dir: &Path, id: &str) -> Value {
    let path = data_dir.join("uploads").join(format!("{id}.info"));
    let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_slice(&bytes).expect("info is JSON")
}

/// How many uploads the server has (info files).
fn upload_count(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("uploads")).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "info"))
            .count()
    })
}

#[test]
fn an_ietf_upload_arrives_whole_and_is_the_drafts() {
    let scratch = scratch();
    let work = scratch.path();
    let data_dir = work.join("data");
    let server = Server::serve(&data_dir, &[]);
    let size = 3 * MIB + 7;
    let source_sha = write_source(&work.join("notes.bin"), size, 0x1E7F);
    let endpoint = tus_endpoint(&server);
    let finished = run(
        work,
        &[
            "upload",
            "notes.bin",
            "--to",
            &endpoint,
            "--protocol",
            "ietf",
            "--state-dir",
            "state",
            "--json",
            "--chunk-size",
            "1MiB",
        ],
        RUN_DEADLINE,
    );
    assert!(finished.status.success(), "{}", finished.stderr);
    let report = single_report(&finished);
    assert_eq!(text(&report, "status"), "done");
    assert_eq!(number(&report, "offset"), size);
    let url = text(&report, "url");
    assert!(url.starts_with(&endpoint), "{report}");
    assert_eq!(download_sha256(work, url, "copy.bin"), source_sha);

    // Created through the draft, named by its Content-Disposition: tus sees the file name.
    let id = upload_id(url);
    let recorded = info(&data_dir, id);
    assert_eq!(recorded["protocol"], "ietf", "{recorded}");
    let status = run(work, &["status", url], RUN_DEADLINE);
    assert!(status.status.success(), "{}", status.stderr);
    assert_eq!(
        status.stdout,
        format!("url: {url}\nfilename: notes.bin\noffset: {size}\nlength: {size}\ncomplete: yes\n")
    );
    assert!(
        remembered_uploads(&work.join("state")).is_empty(),
        "a finished upload is forgotten"
    );
}

#[test]
fn an_ietf_upload_killed_mid_way_resumes_from_the_server_offset() {
    const SIZE: u64 = 16 * MIB;
    const CHUNK: u64 = 4 * MIB;
    // Two chunks confirmed, the third cut after 12 345 of its bytes.
    const CUT: u64 = 2 * CHUNK + 12_345;
    let scratch = scratch();
    let work = scratch.path();
    let data_dir = work.join("data");
    let server = Server::serve(&data_dir, &[]);
    let gate = Gate::start(server.address);
    let source_sha = write_source(&work.join("big.bin"), SIZE, 0x1E7E);
    let endpoint = gate_endpoint(&gate);
    let args = upload_big_args(&endpoint, &["--protocol", "ietf", "--chunk-size", "4MiB"]);

    gate.allow(CUT);
    let mut first = Running::start(work, "first", &args);
    wait_until_held(&gate, CUT, || stored_bytes(&data_dir), || first.stderr());
    first.kill();
    let first = first.wait(Duration::from_secs(10));
    assert_eq!(first.status.code(), None, "killed by a signal");
    // The client is gone: its held request ends, and the server keeps what it brought.
    gate.sever();
    let url = first
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("big.bin: created "))
        .expect("the first run printed the upload URL")
        .to_owned();
    let remembered = remembered_uploads(&work.join("state"));
    assert_eq!(remembered.len(), 1, "{remembered:?}");
    assert_eq!(remembered[0]["url"].as_str(), Some(url.as_str()));
    assert_eq!(remembered[0]["protocol"], "ietf", "{}", remembered[0]);
    let id = upload_id(&url);
    wait_for(
        "the server committed the cut request's bytes",
        SETTLE_DEADLINE,
        || committed_length(&data_dir, id) == CUT,
        || server.log(),
    );

    gate.open();
    let second = Running::start(work, "second", &args).wait(RUN_DEADLINE);
    assert_resumed(&second, &url, CUT, SIZE);
    // Every body byte crossed the gate once: the rerun sent only what the server lacked.
    assert_eq!(gate.passed(), SIZE, "bytes sent over both runs");
    assert_eq!(stored_bytes(&data_dir), SIZE, "nothing stored twice");
    assert_eq!(upload_count(&data_dir), 1, "one upload");
    assert_eq!(info(&data_dir, id)["protocol"], "ietf");
    assert_eq!(download_sha256(work, &url, "copy.bin"), source_sha);
    assert!(
        remembered_uploads(&work.join("state")).is_empty(),
        "a finished upload is forgotten"
    );
}

#[test]
fn a_file_over_the_servers_max_size_is_refused_before_it_is_sent() {
    let scratch = scratch();
    let work = scratch.path();
    let data_dir = work.join("data");
    let server = Server::serve(&data_dir, &["--max-size", "10"]);
    std::fs::write(work.join("small.txt"), b"hi").unwrap();
    std::fs::write(work.join("large.txt"), b"more than ten bytes").unwrap();
    let endpoint = tus_endpoint(&server);
    let finished = run(
        work,
        &[
            "upload",
            "small.txt",
            "large.txt",
            "--to",
            &endpoint,
            "--protocol",
            "ietf",
            "--state-dir",
            "state",
            "--parallel",
            "1",
        ],
        RUN_DEADLINE,
    );
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished.stdout.contains("small.txt: done in"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stderr.contains("large.txt: failed")
            && finished.stderr.contains(
                "large.txt is 19 bytes, more than the 10 bytes \
                 http://127.0.0.1"
            )
            && finished.stderr.contains("Upload-Limit max-size"),
        "{}",
        finished.stderr
    );
    assert_eq!(upload_count(&data_dir), 1, "only small.txt was created");
}

#[test]
fn parts_and_checksums_are_refused_with_ietf() {
    let scratch = scratch();
    let work = scratch.path();
    let data_dir = work.join("data");
    let server = Server::serve(&data_dir, &[]);
    write_source(&work.join("big.bin"), 3 * MIB, 9);
    let endpoint = tus_endpoint(&server);
    for (extra, says) in [
        (
            &["--parts", "2"][..],
            "--parts 2: the IETF draft protocol sends each file whole",
        ),
        (
            &["--checksum", "sha256"],
            "--checksum sha256: per-chunk checksums are the tus checksum extension",
        ),
    ] {
        let mut args = upload_big_args(&endpoint, &["--protocol", "ietf"]);
        args.extend_from_slice(extra);
        let finished = run(work, &args, RUN_DEADLINE);
        assert_eq!(
            finished.status.code(),
            Some(2),
            "{extra:?}: {}",
            finished.stderr
        );
        assert!(finished.stderr.contains(says), "{}", finished.stderr);
    }
    assert_eq!(upload_count(&data_dir), 0, "nothing was created");
}
