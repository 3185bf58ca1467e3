//! `resumable serve` as users meet it: its help, its flags and `RESUMABLE_*` variables, and how
//! it refuses bad settings.

mod common;

use common::{
    Server, Tus, command, data_file, mentions, run_to_exit, scratch, serve_command, sha256_hex,
};
use std::time::Duration;

/// Bound on a run that should exit by itself.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn serve_help_lists_the_flags_and_their_variables() {
    let scratch = scratch();
    let finished = run_to_exit(
        command(scratch.path()).args(["serve", "--help"]),
        scratch.path(),
        EXIT_DEADLINE,
    );
    assert!(
        finished.status.success(),
        "serve --help: {}",
        finished.status
    );
    for expected in [
        "--listen",
        "--data-dir",
        "--max-size",
        "RESUMABLE_LISTEN",
        "RESUMABLE_DATA_DIR",
        "RESUMABLE_MAX_SIZE",
        // The limits, each with its variable and its default.
        "--max-connections",
        "RESUMABLE_MAX_CONNECTIONS",
        "--max-connections-per-client",
        "RESUMABLE_MAX_CONNECTIONS_PER_CLIENT",
        "--max-header-size",
        "RESUMABLE_MAX_HEADER_SIZE",
        "--min-body-rate",
        "RESUMABLE_MIN_BODY_RATE",
        "--min-body-rate-window",
        "RESUMABLE_MIN_BODY_RATE_WINDOW",
        "--max-metadata-size",
        "RESUMABLE_MAX_METADATA_SIZE",
        "--max-creations-per-minute",
        "RESUMABLE_MAX_CREATIONS_PER_MINUTE",
        "[default: 10000]",
        "[default: 256]",
        "[default: 32KiB]",
        "[default: 1KiB]",
        "[default: 4KiB]",
        "[default: 120]",
        "--metrics-listen",
        "RESUMABLE_METRICS_LISTEN",
        "--min-free-space",
        "RESUMABLE_MIN_FREE_SPACE",
    ] {
        assert!(
            finished.stdout.contains(expected),
            "serve --help does not mention {expected}:\n{}",
            finished.stdout
        );
    }
}

#[tokio::test]
async fn environment_variables_choose_the_address_and_the_data_dir() {
    let scratch = scratch();
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).expect("create working directory");
    let data_dir = scratch.path().join("nested").join("data");
    let mut command = command(&work);
    command
        .arg("serve")
        .env("RESUMABLE_LISTEN", "127.0.0.1:0")
        .env("RESUMABLE_DATA_DIR", &data_dir);
    let server = Server::start(&mut command, scratch.path());
    assert!(data_dir.is_dir(), "the data dir was not created");

    let tus = Tus::new(&server);
    let body = b"hello from the environment".to_vec();
    let id = tus.create(body.len() as u64).await;
    let response = tus.patch(&id, 0, body.clone()).await;
    assert_eq!(response.status(), 204, "PATCH");
    assert_eq!(
        std::fs::read(data_file(&data_dir, &id)).expect("read the data file"),
        body,
        "the upload is stored in RESUMABLE_DATA_DIR"
    );
    assert_eq!(sha256_hex(&tus.download(&id).await), sha256_hex(&body));
    assert!(
        !work.join("uploads").exists(),
        "the default ./uploads was used despite RESUMABLE_DATA_DIR"
    );
}

#[tokio::test]
async fn max_size_flag_limits_uploads() {
    let scratch = scratch();
    let server = Server::serve(&scratch.path().join("data"), &["--max-size", "1KiB"]);
    let http = reqwest::Client::new();
    let options = http
        .request(reqwest::Method::OPTIONS, format!("{}/files/", server.base))
        .send()
        .await
        .expect("OPTIONS /files/");
    assert_eq!(options.status(), 204, "OPTIONS");
    assert_eq!(common::header(&options, "Tus-Max-Size"), "1024");

    let tus = Tus::new(&server);
    assert_eq!(tus.post(2000).await.status(), 413, "2000 bytes over 1KiB");
    assert_eq!(tus.post(1024).await.status(), 201, "exactly 1KiB");
}

#[tokio::test]
async fn max_size_variable_limits_uploads() {
    let scratch = scratch();
    let mut command = serve_command(&scratch.path().join("data"), &[]);
    command.env("RESUMABLE_MAX_SIZE", "2KB");
    let server = Server::start(&mut command, scratch.path());
    let tus = Tus::new(&server);
    assert_eq!(tus.post(2001).await.status(), 413, "2001 bytes over 2KB");
    assert_eq!(tus.post(2000).await.status(), 201, "exactly 2KB");
}

#[test]
fn invalid_max_size_exits_naming_the_flag() {
    let scratch = scratch();
    let finished = run_to_exit(
        &mut serve_command(&scratch.path().join("data"), &["--max-size", "1e3"]),
        scratch.path(),
        EXIT_DEADLINE,
    );
    assert!(!finished.status.success(), "accepted --max-size 1e3");
    assert!(
        finished.stderr.contains("--max-size") && finished.stderr.contains("1e3"),
        "the error does not name the flag and value:\n{}",
        finished.stderr
    );
    assert!(
        !finished.stdout.contains("listening"),
        "it listened anyway: {}",
        finished.stdout
    );
}

#[test]
fn port_in_use_exits_with_a_clear_message() {
    let scratch = scratch();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("take a port");
    let address = taken.local_addr().expect("taken address").to_string();
    let mut command = command(scratch.path());
    command
        .arg("serve")
        .args(["--listen", &address, "--data-dir"])
        .arg(scratch.path().join("data"));
    let finished = run_to_exit(&mut command, scratch.path(), EXIT_DEADLINE);
    assert!(!finished.status.success(), "started on a taken port");
    assert!(
        finished.stderr.contains(&address) && mentions(&finished.stderr, "in use"),
        "the error does not say that {address} is in use:\n{}",
        finished.stderr
    );
    assert!(
        !finished.stdout.contains("listening"),
        "claims to listen: {}",
        finished.stdout
    );
    drop(taken);
}
