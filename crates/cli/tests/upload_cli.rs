//! `resumable upload` against the real server binary: interrupted with SIGINT and SIGKILL
//! mid-upload and rerun, the server restarted under it, output in each mode, exit codes, and
//! `status` / `download` / `delete`.
//!
//! "Mid-upload" is made, not raced for: the client uploads through a [`Gate`] proxy that lets
//! through only the body bytes the test allows and holds the rest, so when the test acts the
//! client's request is still in flight and the server has exactly the allowed bytes, however fast
//! or loaded the machine is.

mod common;
mod uploader;

use common::gate::Gate;
use common::{Server, committed_length, scratch};
use std::time::Duration;
use uploader::{
    MIB, Running, assert_resumed, download_sha256, gate_endpoint, json_lines, mask, number,
    remembered_uploads, run, serve_at, single_report, stored_bytes, text, tus_endpoint,
    upload_big_args, wait_for, wait_until_held, write_source,
};

const SIZE: u64 = 64 * MIB;
const CHUNK: u64 = 8 * MIB;
/// Where the first run is cut: a quarter of the file and a bit, so two chunks are confirmed and
/// the third is cut after 12 345 of its bytes.
const CUT: u64 = 2 * CHUNK + 12_345;
const RUN_DEADLINE: Duration = Duration::from_secs(60);
/// For the server to settle a request whose client went away.
const SETTLE_DEADLINE: Duration = Duration::from_secs(20);

/// The id of an upload: the last segment of its URL.
fn upload_id(url: &str) -> &str {
    url.rsplit('/').next().expect("an id in the URL")
}

/// How the first run is stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Interrupt,
    Kill,
}

/// Uploads a 64 MiB file through a gate that lets `CUT` bytes through, stops the client while
/// it is sending the rest, reruns the same command, and checks the rerun continued the same
/// upload from exactly the bytes the server had.
fn stop_and_rerun(stop: Stop) {
    let scratch = scratch();
    let work = scratch.path();
    let data_dir = work.join("data");
    let server = Server::serve(&data_dir, &[]);
    let gate = Gate::start(server.address);
    let source_sha = write_source(&work.join("big.bin"), SIZE, 0xC11);
    let endpoint = gate_endpoint(&gate);
    let args = upload_big_args(&endpoint, &["--chunk-size", "8MiB"]);

    gate.allow(CUT);
    let mut first = Running::start(work, "first", &args);
    wait_until_held(&gate, CUT, || stored_bytes(&data_dir), || first.stderr());
    match stop {
        Stop::Interrupt => first.interrupt(),
        Stop::Kill => first.kill(),
    }
    let first = first.wait(Duration::from_secs(10));
    // The client is gone: its held request ends, and the server keeps what it brought.
    gate.sever();
    let url = match stop {
        Stop::Interrupt => {
            assert_eq!(first.status.code(), Some(130), "{}", first.stderr);
            assert!(
                first.stderr.contains("run the same command"),
                "{}",
                first.stderr
            );
            let report = single_report(&first);
            assert_eq!(text(&report, "status"), "interrupted");
            assert_eq!(
                number(&report, "offset"),
                2 * CHUNK,
                "the two chunks the server answered are confirmed: {report}"
            );
            text(&report, "url").to_owned()
        }
        Stop::Kill => {
            assert_eq!(first.status.code(), None, "killed by a signal");
            let created = first
                .stderr
                .lines()
                .find_map(|line| line.strip_prefix("big.bin: created "));
            created
                .expect("the first run printed the upload URL")
                .to_owned()
        }
    };
    let remembered = remembered_uploads(&work.join("state"));
    assert_eq!(remembered.len(), 1, "{remembered:?}");
    assert_eq!(
        remembered[0]["url"].as_str(),
        Some(url.as_str()),
        "the client remembered the upload: {}",
        remembered[0]
    );
    let id = upload_id(&url);
    wait_for(
        "the server committed the cut request's bytes",
        SETTLE_DEADLINE,
        || committed_length(&data_dir, id) == CUT,
        || server.log(),
    );
    assert_eq!(stored_bytes(&data_dir), CUT, "the server has what passed");

    gate.open();
    let second = Running::start(work, "second", &args).wait(RUN_DEADLINE);
    assert_resumed(&second, &url, CUT, SIZE);
    assert_eq!(stored_bytes(&data_dir), SIZE, "nothing stored twice");
    assert_eq!(download_sha256(work, &url, "copy.bin"), source_sha);
    assert!(
        remembered_uploads(&work.join("state")).is_empty(),
        "a finished upload is forgotten"
    );
}

#[test]
fn sigint_mid_upload_then_rerun_resumes_from_the_server_offset() {
    stop_and_rerun(Stop::Interrupt);
}

#[test]
fn sigkill_mid_upload_then_rerun_resumes_from_the_server_offset() {
    stop_and_rerun(Stop::Kill);
}

#[test]
fn a_server_restart_during_the_upload_is_waited_out() {
    let scratch = scratch();
    let work = scratch.path();
    let data_dir = work.join("data");
    let mut server = Server::serve(&data_dir, &[]);
    let address = server.address;
    let gate = Gate::start(address);
    let source_sha = write_source(&work.join("big.bin"), SIZE, 0xC12);
    let endpoint = gate_endpoint(&gate);
    let args = upload_big_args(&endpoint, &["--chunk-size", "8MiB"]);
    gate.allow(CUT);
    let client = Running::start(work, "client", &args);
    wait_until_held(&gate, CUT, || stored_bytes(&data_dir), || client.stderr());
    // Killed with the client's request in flight.
    server.kill();
    wait_for(
        "the client retries",
        Duration::from_secs(10),
        || client.stderr().contains("retrying"),
        || client.stderr(),
    );
    let _restarted = serve_at(&data_dir, address);
    gate.open();
    let finished = client.wait(RUN_DEADLINE);
    assert!(finished.status.success(), "{}", finished.stderr);
    let report = single_report(&finished);
    assert_eq!(text(&report, "status"), "done");
    assert!(number(&report, "retries") >= 1, "{report}");
    assert!(
        !finished.stderr.contains("starting over"),
        "{}",
        finished.stderr
    );
    assert_eq!(stored_bytes(&data_dir), SIZE);
    let url = text(&report, "url");
    assert_eq!(download_sha256(work, url, "copy.bin"), source_sha);
}

#[test]
fn plain_output_when_stdout_is_not_a_terminal() {
    let scratch = scratch();
    let work = scratch.path();
    let server = Server::serve(&work.join("data"), &[]);
    std::fs::create_dir_all(work.join("photos/2024")).unwrap();
    std::fs::write(work.join("photos/a.txt"), b"hello").unwrap();
    write_source(&work.join("photos/2024/b.bin"), 3000, 1);
    std::fs::write(work.join("photos/empty"), b"").unwrap();
    let endpoint = tus_endpoint(&server);
    let finished = run(
        work,
        &[
            "upload",
            "photos",
            "--to",
            &endpoint,
            "--state-dir",
            "state",
            "--chunk-size",
            "1000",
            "--parallel",
            "1",
        ],
        RUN_DEADLINE,
    );
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(finished.stderr, "");
    let expected = "\
photos/2024/b.bin: created URL
photos/2024/b.bin: 33% stored (1000 of 3000 bytes)
photos/2024/b.bin: 66% stored (2000 of 3000 bytes)
photos/2024/b.bin: done in TIME (RATE): URL
photos/a.txt: created URL
photos/a.txt: done in TIME (RATE): URL
photos/empty: created URL
photos/empty: done in TIME (RATE): URL
3 files uploaded (3005 bytes) in TIME";
    assert_eq!(
        mask(&finished.stdout),
        expected,
        "raw:\n{}",
        finished.stdout
    );
}

#[test]
fn json_output_is_one_object_per_file() {
    let scratch = scratch();
    let work = scratch.path();
    let server = Server::serve(&work.join("data"), &[]);
    std::fs::write(work.join("one.txt"), b"one").unwrap();
    std::fs::write(work.join("two.txt"), b"second").unwrap();
    let endpoint = tus_endpoint(&server);
    let finished = run(
        work,
        &[
            "upload",
            "one.txt",
            "two.txt",
            "--to",
            &endpoint,
            "--state-dir",
            "state",
            "--json",
        ],
        RUN_DEADLINE,
    );
    assert!(finished.status.success(), "{}", finished.stderr);
    let mut reports = json_lines(&finished.stdout);
    reports.sort_by_key(|report| text(report, "file").to_owned());
    assert_eq!(reports.len(), 2, "{}", finished.stdout);
    for (report, (file, size)) in reports.iter().zip([("one.txt", 3), ("two.txt", 6)]) {
        assert_eq!(text(report, "file"), file);
        assert_eq!(text(report, "status"), "done");
        assert_eq!(number(report, "size"), size);
        assert_eq!(number(report, "offset"), size);
        assert!(text(report, "url").starts_with(&endpoint), "{report}");
        assert!(report["resumed_from"].is_null());
        assert!(report["error"].is_null());
    }
    // Progress lines go to stderr, so stdout stays machine-readable.
    assert!(
        finished.stderr.contains("one.txt: done in"),
        "{}",
        finished.stderr
    );
}

#[test]
fn progress_bars_under_a_terminal() {
    let scratch = scratch();
    let work = scratch.path();
    let server = Server::serve(&work.join("data"), &[]);
    write_source(&work.join("a.bin"), 4 * MIB, 2);
    write_source(&work.join("b.bin"), 2 * MIB, 3);
    let command = format!(
        "stty cols 100 rows 30; {} upload a.bin b.bin --to {} --state-dir state \
         --chunk-size 1MiB --limit-rate 8MiB",
        env!("CARGO_BIN_EXE_resumable"),
        tus_endpoint(&server)
    );
    // `script` runs the command under a pseudo-terminal and passes its exit code on (-e).
    let mut script = std::process::Command::new("script");
    script
        .args(["-qefc", &command, "/dev/null"])
        .current_dir(work)
        .env("TERM", "xterm-256color")
        // Without a readable stdin (CI closes it) `script` loses the output.
        .stdin(std::process::Stdio::null());
    let finished = common::run_to_exit(&mut script, work, RUN_DEADLINE);
    assert!(
        finished.status.success(),
        "{}\n{}",
        finished.stdout,
        finished.stderr
    );
    let screen = finished.stdout;
    assert!(
        screen.contains("\u{1b}["),
        "no terminal control sequences:\n{screen}"
    );
    assert!(screen.contains("total (2 files)"), "{screen}");
    assert!(screen.contains("MiB/s"), "no speed shown:\n{screen}");
    assert!(
        screen.contains("a.bin: done in") && screen.contains("b.bin: done in"),
        "{screen}"
    );
    assert!(
        !screen.contains("% stored ("),
        "log lines instead of bars:\n{screen}"
    );
}

#[test]
fn exit_codes_tell_usage_errors_from_failed_uploads() {
    let scratch = scratch();
    let work = scratch.path();
    let server = Server::serve(&work.join("data"), &["--max-size", "10"]);
    std::fs::write(work.join("small.txt"), b"hi").unwrap();
    std::fs::write(work.join("large.txt"), b"more than ten bytes").unwrap();
    let endpoint = tus_endpoint(&server);
    let deadline = Duration::from_secs(30);
    let upload = |extra: &[&str]| {
        let mut args = vec!["upload", "--to", &endpoint, "--state-dir", "state"];
        args.extend_from_slice(extra);
        run(work, &args, deadline)
    };

    let missing = upload(&["missing.txt"]);
    assert_eq!(missing.status.code(), Some(2), "{}", missing.stderr);
    assert!(missing.stderr.contains("missing.txt"), "{}", missing.stderr);

    // The server offers the checksum extension, so checksummed chunks are sent and verified.
    let checksum = upload(&["small.txt", "--checksum", "sha256"]);
    assert_eq!(checksum.status.code(), Some(0), "{}", checksum.stderr);

    for bad in [
        &["small.txt", "--header", "no colon"][..],
        &["small.txt", "--metadata", "novalue"],
        &["small.txt", "--chunk-size", "0"],
        &["small.txt", "--checksum", "crc64"],
    ] {
        let finished = upload(bad);
        assert_eq!(
            finished.status.code(),
            Some(2),
            "{bad:?}: {}",
            finished.stderr
        );
    }
    let bad_url = run(
        work,
        &["upload", "small.txt", "--to", "not a url"],
        deadline,
    );
    assert_eq!(bad_url.status.code(), Some(2), "{}", bad_url.stderr);

    let too_large = upload(&["small.txt", "large.txt", "--parallel", "1"]);
    assert_eq!(too_large.status.code(), Some(1), "{}", too_large.stderr);
    assert!(
        too_large.stdout.contains("small.txt: done in"),
        "{}",
        too_large.stdout
    );
    assert!(
        too_large.stderr.contains("large.txt: failed") && too_large.stderr.contains("413"),
        "{}",
        too_large.stderr
    );
    assert!(
        too_large.stderr.contains("1 of 2 uploads failed"),
        "{}",
        too_large.stderr
    );
}

#[test]
fn status_download_and_delete_an_upload() {
    let scratch = scratch();
    let work = scratch.path();
    let server = Server::serve(&work.join("data"), &[]);
    let source_sha = write_source(&work.join("report.pdf"), 100_000, 4);
    let endpoint = tus_endpoint(&server);
    let deadline = Duration::from_secs(30);
    let uploaded = run(
        work,
        &[
            "upload",
            "report.pdf",
            "--to",
            &endpoint,
            "--state-dir",
            "state",
            "--json",
            "--metadata",
            "album=summer",
        ],
        deadline,
    );
    assert!(uploaded.status.success(), "{}", uploaded.stderr);
    let url = text(&single_report(&uploaded), "url").to_owned();

    let status = run(work, &["status", &url], deadline);
    assert!(status.status.success(), "{}", status.stderr);
    assert_eq!(
        status.stdout,
        format!(
            "url: {url}\nfilename: report.pdf\noffset: 100000\nlength: 100000\ncomplete: yes\n"
        )
    );

    // Without -o the file is named after the upload's filename metadata.
    std::fs::create_dir(work.join("out")).unwrap();
    let downloaded = run(&work.join("out"), &["download", &url], deadline);
    assert!(downloaded.status.success(), "{}", downloaded.stderr);
    let copy = std::fs::read(work.join("out/report.pdf")).unwrap();
    assert_eq!(common::sha256_hex(&copy), source_sha);
    let again = run(&work.join("out"), &["download", &url], deadline);
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing file is kept: {}",
        again.stderr
    );

    let deleted = run(work, &["delete", &url], deadline);
    assert!(deleted.status.success(), "{}", deleted.stderr);
    assert_eq!(deleted.stdout, format!("deleted {url}\n"));
    let gone = run(work, &["status", &url], deadline);
    assert_eq!(gone.status.code(), Some(1));
    assert!(gone.stderr.contains("no longer exists"), "{}", gone.stderr);
}

#[test]
fn a_remembered_upload_deleted_on_the_server_starts_over() {
    let scratch = scratch();
    let work = scratch.path();
    let data_dir = work.join("data");
    let server = Server::serve(&data_dir, &[]);
    let gate = Gate::start(server.address);
    let source_sha = write_source(&work.join("big.bin"), 8 * MIB, 5);
    let endpoint = gate_endpoint(&gate);
    let args = upload_big_args(&endpoint, &["--chunk-size", "1MiB"]);
    let cut = MIB + 12_345;
    gate.allow(cut);
    let first = Running::start(work, "first", &args);
    wait_until_held(&gate, cut, || stored_bytes(&data_dir), || first.stderr());
    first.interrupt();
    let first = first.wait(Duration::from_secs(10));
    gate.sever();
    assert_eq!(first.status.code(), Some(130), "{}", first.stderr);
    let old_url = text(&single_report(&first), "url").to_owned();
    assert_eq!(
        remembered_uploads(&work.join("state")).len(),
        1,
        "the interrupted upload is remembered"
    );
    wait_for(
        "the server committed the cut request's bytes",
        SETTLE_DEADLINE,
        || committed_length(&data_dir, upload_id(&old_url)) == cut,
        || server.log(),
    );
    gate.open();
    let deleted = run(work, &["delete", &old_url], Duration::from_secs(30));
    assert!(deleted.status.success(), "{}", deleted.stderr);

    let second = run(work, &args, RUN_DEADLINE);
    assert!(second.status.success(), "{}", second.stderr);
    let report = single_report(&second);
    assert!(
        report["started_over"].as_bool().unwrap_or_default(),
        "{report}"
    );
    let new_url = text(&report, "url");
    assert_ne!(new_url, old_url);
    assert!(
        second.stderr.contains("big.bin: starting over"),
        "{}",
        second.stderr
    );
    assert_eq!(download_sha256(work, new_url, "copy.bin"), source_sha);
}

#[test]
fn the_simple_protocol_uploads_and_names_the_upload() {
    let scratch = scratch();
    let work = scratch.path();
    let server = Server::serve(&work.join("data"), &[]);
    let source_sha = write_source(&work.join("notes.txt"), 50_000, 6);
    let finished = run(
        work,
        &[
            "upload",
            "notes.txt",
            "--to",
            &server.base,
            "--protocol",
            "simple",
            "--state-dir",
            "state",
            "--json",
            "--chunk-size",
            "16000",
        ],
        RUN_DEADLINE,
    );
    assert!(finished.status.success(), "{}", finished.stderr);
    let report = single_report(&finished);
    let url = text(&report, "url");
    assert!(
        url.starts_with(&format!("{}/files/", server.base)),
        "{report}"
    );
    assert_eq!(download_sha256(work, url, "copy.txt"), source_sha);
}

#[test]
fn json_lines_stay_one_per_file_when_interrupted_before_some_start() {
    let scratch = scratch();
    let work = scratch.path();
    let data_dir = work.join("data");
    let server = Server::serve(&data_dir, &[]);
    let gate = Gate::start(server.address);
    write_source(&work.join("a.bin"), 8 * MIB, 7);
    write_source(&work.join("b.bin"), 8 * MIB, 8);
    let endpoint = gate_endpoint(&gate);
    // a.bin's second chunk is held, so b.bin (one upload at a time) cannot have started.
    let cut = MIB + 12_345;
    gate.allow(cut);
    let client = Running::start(
        work,
        "client",
        &[
            "upload",
            "a.bin",
            "b.bin",
            "--to",
            &endpoint,
            "--state-dir",
            "state",
            "--json",
            "--parallel",
            "1",
            "--chunk-size",
            "1MiB",
        ],
    );
    wait_until_held(&gate, cut, || stored_bytes(&data_dir), || client.stderr());
    client.interrupt();
    let finished = client.wait(Duration::from_secs(10));
    assert_eq!(finished.status.code(), Some(130), "{}", finished.stderr);
    let mut reports = json_lines(&finished.stdout);
    reports.sort_by_key(|report| text(report, "file").to_owned());
    assert_eq!(reports.len(), 2, "{}", finished.stdout);
    assert!(
        reports
            .iter()
            .all(|report| text(report, "status") == "interrupted"),
        "{}",
        finished.stdout
    );
    let (a, b) = (&reports[0], &reports[1]);
    assert_eq!(text(a, "file"), "a.bin");
    assert!(text(a, "url").starts_with(&endpoint), "{a}");
    assert_eq!(number(a, "offset"), MIB, "a.bin's first chunk is confirmed");
    assert_eq!(text(b, "file"), "b.bin");
    assert!(b["url"].is_null(), "b.bin never started: {b}");
    assert_eq!(number(b, "offset"), 0, "{b}");
}

#[test]
fn memory_stays_flat_for_a_large_single_request_upload() {
    let scratch = scratch();
    let work = scratch.path();
    let data_dir = work.join("data");
    let server = Server::serve(&data_dir, &[]);
    // A sparse file: large on the wire, instant to make.
    let size = 256 * MIB;
    std::fs::File::create(work.join("sparse.bin"))
        .and_then(|file| file.set_len(size))
        .expect("make a sparse file");
    let endpoint = tus_endpoint(&server);
    let mut client = Running::start(
        work,
        "client",
        &[
            "upload",
            "sparse.bin",
            "--to",
            &endpoint,
            "--state-dir",
            "state",
            "--chunk-size",
            "unlimited",
        ],
    );
    let mut peak_kib = 0;
    // Sampling, not waiting for a condition: the 10 ms only spaces the samples. Bounded, so a
    // client that hangs fails the test (and is killed by `Running`'s drop) instead of the run.
    let started = std::time::Instant::now();
    while !client.has_exited() {
        assert!(
            started.elapsed() < RUN_DEADLINE,
            "the client did not finish in {RUN_DEADLINE:?}"
        );
        peak_kib = peak_kib.max(client.peak_resident_kib().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(10));
    }
    let finished = client.wait(RUN_DEADLINE);
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(stored_bytes(&data_dir), size);
    eprintln!("client peak resident memory: {peak_kib} KiB for {size} bytes");
    assert!(peak_kib > 0, "never read the client's memory");
    assert!(
        peak_kib < 64 * 1024,
        "the client peaked at {peak_kib} KiB resident for a {size}-byte request"
    );
}
