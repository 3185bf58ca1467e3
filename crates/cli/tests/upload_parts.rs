//! `resumable upload --parts N` against the real server binary: one file as N partial uploads
//! joined by the server (tus concatenation), killed mid-way and rerun, and refused by a server
//! that cannot join parts.
//!
//! What the server holds is read from its data dir: each upload's info file says whether it is a
//! partial, a final or a plain upload, so "no part was created twice" is counted, not guessed.
//! The interrupted run goes through a [`Gate`] proxy that holds the parts' bodies past a budget,
//! so it is killed mid-upload by construction, not by winning a race against the machine.

mod common;
mod uploader;

use common::gate::Gate;
use common::{Server, committed_length, scratch};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;
use uploader::{
    MIB, Running, UploadKinds, download_sha256, gate_endpoint, number, remembered_uploads, run,
    single_report, stored_bytes, text, tus_endpoint, upload_big_args, upload_kinds, wait_for,
    wait_until_held, write_source,
};

const RUN_DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn a_file_in_four_parts_is_joined_by_the_server() {
    let scratch = scratch();
    let work = scratch.path();
    let data_dir = work.join("data");
    let server = Server::serve(&data_dir, &[]);
    let size = 10 * MIB + 12_345;
    let source_sha = write_source(&work.join("big.bin"), size, 0xA11);
    let endpoint = tus_endpoint(&server);
    let finished = run(
        work,
        &[
            "upload",
            "big.bin",
            "--to",
            &endpoint,
            "--state-dir",
            "state",
            "--json",
            "--parts",
            "4",
            "--chunk-size",
            "1MiB",
        ],
        RUN_DEADLINE,
    );
    assert!(finished.status.success(), "{}", finished.stderr);
    let report = single_report(&finished);
    assert_eq!(text(&report, "status"), "done");
    assert_eq!(number(&report, "parts"), 4);
    assert_eq!(number(&report, "offset"), size);
    let url = text(&report, "url");
    assert!(
        finished
            .stderr
            .contains("big.bin: created 4 parts: http://"),
        "{}",
        finished.stderr
    );
    assert!(
        finished
            .stderr
            .contains(&format!("big.bin: created {url}\n")),
        "the final upload is announced: {}",
        finished.stderr
    );
    assert_eq!(
        upload_kinds(&data_dir),
        UploadKinds {
            partial: 4,
            finals: 1,
            whole: 0
        }
    );

    let status = run(work, &["status", url], RUN_DEADLINE);
    assert!(
        status.stdout.contains("filename: big.bin\n") && status.stdout.contains("complete: yes"),
        "the final upload has the file's metadata: {}",
        status.stdout
    );
    assert_eq!(download_sha256(work, url, "copy.bin"), source_sha);
    assert!(remembered_uploads(&work.join("state")).is_empty());
}

#[test]
fn sigkill_mid_upload_then_rerun_resumes_every_part_from_its_offset() {
    let scratch = scratch();
    let work = scratch.path();
    let data_dir = work.join("data");
    let server = Server::serve(&data_dir, &[]);
    let size = 32 * MIB;
    let source_sha = write_source(&work.join("big.bin"), size, 0xA12);
    let gate = Gate::start(server.address);
    let endpoint = gate_endpoint(&gate);
    let args = upload_big_args(&endpoint, &["--parts", "4", "--chunk-size", "1MiB"]);
    // A quarter of the file and a bit, spread over the parts as their requests take it.
    let cut = size / 4 + 12_345;
    gate.allow(cut);
    let mut first = Running::start(work, "first", &args);
    wait_until_held(&gate, cut, || stored_bytes(&data_dir), || first.stderr());
    first.kill();
    let first = first.wait(Duration::from_secs(10));
    gate.sever();
    assert_eq!(first.status.code(), None, "killed by a signal");
    assert!(
        first.stderr.contains("big.bin: created 4 parts: "),
        "{}",
        first.stderr
    );
    assert_eq!(
        upload_kinds(&data_dir),
        UploadKinds {
            partial: 4,
            finals: 0,
            whole: 0
        }
    );
    let remembered = remembered_uploads(&work.join("state"));
    assert_eq!(remembered.len(), 1, "{remembered:?}");
    let parts = remembered[0]["parts"].as_array().expect("parts remembered");
    assert_eq!(parts.len(), 4, "{}", remembered[0]);
    assert!(remembered[0]["url"].is_null(), "no final upload yet");
    let part_ids: Vec<String> = parts
        .iter()
        .map(|part| {
            let url = part["url"].as_str().expect("a part's URL");
            url.rsplit('/').next().expect("an id").to_owned()
        })
        .collect();
    wait_for(
        "the server committed what each part's cut request brought",
        Duration::from_secs(20),
        || {
            part_ids
                .iter()
                .map(|id| committed_length(&data_dir, id))
                .sum::<u64>()
                == cut
        },
        || server.log(),
    );
    assert_eq!(stored_bytes(&data_dir), cut, "the server has what passed");

    gate.open();
    let second = Running::start(work, "second", &args).wait(RUN_DEADLINE);
    assert!(second.status.success(), "rerun failed:\n{}", second.stderr);
    let report = single_report(&second);
    assert_eq!(text(&report, "status"), "done");
    assert_eq!(number(&report, "parts"), 4);
    assert_eq!(
        number(&report, "resumed_from"),
        cut,
        "every part resumed from the server's offset"
    );
    assert!(
        second
            .stderr
            .contains(&format!("big.bin: resuming at {cut} of {size} bytes")),
        "{}",
        second.stderr
    );
    assert!(
        !second.stderr.contains("parts:"),
        "no part created again: {}",
        second.stderr
    );
    assert_eq!(
        upload_kinds(&data_dir),
        UploadKinds {
            partial: 4,
            finals: 1,
            whole: 0
        },
        "the rerun made only the final upload"
    );
    // The parts hold the file once, the final upload a second time: nothing was stored twice.
    assert_eq!(stored_bytes(&data_dir), 2 * size);
    let url = text(&report, "url");
    assert_eq!(download_sha256(work, url, "copy.bin"), source_sha);
    assert!(
        remembered_uploads(&work.join("state")).is_empty(),
        "a finished upload is forgotten"
    );
}

/// A tus server that offers no concatenation: every request gets the answer to `OPTIONS`.
fn server_without_concatenation() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|read| read > 0)
            {
                head.push(byte[0]);
            }
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\nTus-Resumable: 1.0.0\r\nTus-Version: 1.0.0\r\n\
                  Tus-Extension: creation,termination\r\nConnection: close\r\n\r\n",
            );
        }
    });
    format!("http://{address}/files/")
}

#[test]
fn parts_are_a_usage_error_where_the_server_cannot_join_them() {
    let scratch = scratch();
    let work = scratch.path();
    write_source(&work.join("big.bin"), 4 * MIB, 0xA13);
    let endpoint = server_without_concatenation();
    let deadline = Duration::from_secs(30);
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
        deadline,
    );
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--parts 4")
            && refused.stderr.contains("\"concatenation\"")
            && refused.stderr.contains("creation,termination"),
        "{}",
        refused.stderr
    );

    let simple = run(
        work,
        &[
            "upload",
            "big.bin",
            "--to",
            "http://127.0.0.1:9/",
            "--protocol",
            "simple",
            "--state-dir",
            "state",
            "--parts",
            "2",
        ],
        deadline,
    );
    assert_eq!(simple.status.code(), Some(2), "{}", simple.stderr);
    assert!(
        simple.stderr.contains("simple protocol"),
        "{}",
        simple.stderr
    );
    let zero = run(
        work,
        &["upload", "big.bin", "--to", &endpoint, "--parts", "0"],
        deadline,
    );
    assert_eq!(zero.status.code(), Some(2), "{}", zero.stderr);
}
