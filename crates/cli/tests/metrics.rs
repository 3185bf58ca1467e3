//! `/metrics`, `--metrics-listen` and `/readyz` against the real binary: counters move by
//! exactly the requests and bytes a test makes (scraped while an upload is held mid-body), the
//! text passes `promtool check metrics`, a separate metrics listener takes `/metrics` off the
//! main one, and `/readyz` fails with its reasons while the data directory cannot take files
//! (or the store cannot be reached, or space is short) and recovers when it can again.

mod common;

use common::scrape::{Scrape, promtool_check, scrape};
use common::{Server, Tus, open_patch, pseudo_random, raw_header, read_response, scratch, send};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const REQUESTS: &str = "resumable_http_requests_total";
const DURATIONS: &str = "resumable_http_request_duration_seconds_count";
const RECEIVED: &str = "resumable_received_bytes_total";
const IN_PROGRESS: &str = "resumable_uploads_in_progress";
const STORE_CALLS: &str = "resumable_store_operation_duration_seconds_count";

/// The metrics of one server, and how many times they were scraped (each scrape is itself an
/// `other` GET, counted once its answer is ready: in the next scrape, not its own).
struct Scraper {
    http: reqwest::Client,
    url: String,
    scrapes: u64,
}

impl Scraper {
    fn new(url: String) -> Self {
        Scraper {
            http: reqwest::Client::new(),
            url,
            scrapes: 0,
        }
    }

    async fn scrape(&mut self) -> Scrape {
        self.scrapes += 1;
        scrape(&self.http, &self.url).await
    }

    /// Scrapes until `condition` holds (10 s at most).
    async fn until(&mut self, what: &str, condition: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let scraped = self.scrape().await;
            if condition(&scraped) {
                return scraped;
            }
            assert!(Instant::now() < deadline, "never {what}:\n{}", scraped.text);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `after - before` of one series.
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

fn request(
    protocol: &'static str,
    method: &'static str,
    status: u16,
) -> [(&'static str, String); 3] {
    [
        ("protocol", protocol.to_owned()),
        ("method", method.to_owned()),
        ("status", status.to_string()),
    ]
}

fn labels<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect()
}

#[tokio::test]
async fn counters_move_by_exactly_the_requests_and_bytes_made() {
    let scratch = scratch();
    let server = Server::serve(&scratch.path().join("data"), &[]);
    let mut metrics = Scraper::new(format!("{}/metrics", server.base));
    let http = reqwest::Client::new();
    let tus = Tus::new(&server);
    let before = metrics.scrape().await;

    // An upload held mid-body: its PATCH streams while everything else happens.
    const HELD: u64 = 10_000;
    let held = tus.create(HELD).await;
    let mut held_patch = open_patch(server.address, &held, 0, HELD).await;
    send(&mut held_patch, &pseudo_random(4096, 1)).await;
    let streaming = metrics
        .until("one body in progress", |scraped| {
            scraped.value(IN_PROGRESS, &[]) == 1.0
        })
        .await;
    assert_eq!(
        delta(&before, &streaming, RECEIVED, &[]),
        0.0,
        "bytes count once the store has made them durable, not as they arrive"
    );

    // Three tus PATCHes of known sizes.
    let sizes = [1000usize, 2345, 70_000];
    let id = tus.create(sizes.iter().sum::<usize>() as u64).await;
    let mut offset = 0;
    for (seed, size) in sizes.into_iter().enumerate() {
        let response = tus
            .patch(&id, offset, pseudo_random(size, 10 + seed as u64))
            .await;
        assert_eq!(response.status(), 204, "PATCH at {offset}");
        offset += size as u64;
    }
    // One IETF creation carrying the whole upload.
    const IETF: usize = 4321;
    let created = http
        .post(format!("{}/files/", server.base))
        .header("Upload-Draft-Interop-Version", "8")
        .header("Upload-Complete", "?1")
        .body(pseudo_random(IETF, 20))
        .send()
        .await
        .expect("IETF creation");
    let ietf_status = created.status().as_u16();
    assert!(
        created.status().is_success(),
        "IETF creation: {ietf_status}"
    );
    // One upload of the seed's simple protocol.
    const SIMPLE: usize = 777;
    let uploaded = http
        .post(format!("{}/upload", server.base))
        .header("X-File-Id", "photo.jpg-777-1700000000")
        .header("X-Start-Byte", "0")
        .header("X-File-Size", SIMPLE.to_string())
        .body(pseudo_random(SIMPLE, 30))
        .send()
        .await
        .expect("simple upload");
    let simple_status = uploaded.status().as_u16();
    assert!(
        uploaded.status().is_success(),
        "simple upload: {simple_status}"
    );

    let during = metrics.scrape().await;
    assert_eq!(
        during.value(IN_PROGRESS, &[]),
        1.0,
        "the held body still streams"
    );
    let finished_bytes = (sizes.iter().sum::<usize>() + IETF + SIMPLE) as f64;
    assert_eq!(delta(&before, &during, RECEIVED, &[]), finished_bytes);

    // The held body ends; then one termination.
    send(&mut held_patch, &pseudo_random(HELD as usize - 4096, 2)).await;
    let answer = read_response(&mut held_patch, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "held PATCH: {answer}");
    assert_eq!(
        raw_header(&answer, "Upload-Offset").as_deref(),
        Some("10000")
    );
    let doomed = tus.create(5).await;
    let deleted = http
        .delete(tus.url(&doomed))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);

    let after = metrics.scrape().await;
    // Every scrape from `before` on, but not `after` itself.
    let scrapes_between = metrics.scrapes - 1;
    assert_eq!(after.value(IN_PROGRESS, &[]), 0.0);
    assert_eq!(
        delta(&before, &after, RECEIVED, &[]),
        finished_bytes + HELD as f64,
        "received bytes: every body byte stored, exactly"
    );
    let expected: Vec<([(&str, String); 3], f64)> = vec![
        (request("tus", "POST", 201), 3.0),
        (request("tus", "PATCH", 204), 4.0),
        (request("tus", "DELETE", 204), 1.0),
        (request("ietf", "POST", ietf_status), 1.0),
        (request("simple", "POST", simple_status), 1.0),
        (request("other", "GET", 200), scrapes_between as f64),
    ];
    for (series, count) in &expected {
        assert_eq!(
            delta(&before, &after, REQUESTS, &labels(series)),
            *count,
            "{REQUESTS}{series:?}\n{}",
            after.text
        );
    }
    let total = |scraped: &Scrape| -> f64 {
        scraped
            .text
            .lines()
            .filter(|line| line.starts_with(REQUESTS))
            .map(|line| line.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum()
    };
    let counted: f64 = expected.iter().map(|(_, count)| count).sum();
    assert_eq!(
        total(&after) - total(&before),
        counted,
        "no other request counted"
    );
    for (protocol, method, count) in [("tus", "PATCH", 4.0), ("ietf", "POST", 1.0)] {
        let route = [("protocol", protocol), ("method", method)];
        assert_eq!(
            delta(&before, &after, DURATIONS, &route),
            count,
            "{route:?}"
        );
    }
    // Each body went through one store append: 4 tus, 1 IETF, 1 simple.
    let append = [("operation", "append")];
    assert_eq!(delta(&before, &after, STORE_CALLS, &append), 6.0);
    for (name, protocol, count) in [
        ("resumable_uploads_created_total", "tus", 3.0),
        ("resumable_uploads_created_total", "ietf", 1.0),
        ("resumable_uploads_created_total", "simple", 1.0),
        ("resumable_uploads_completed_total", "tus", 2.0),
        ("resumable_uploads_completed_total", "ietf", 1.0),
        ("resumable_uploads_completed_total", "simple", 1.0),
        ("resumable_uploads_terminated_total", "tus", 1.0),
        ("resumable_uploads_terminated_total", "ietf", 0.0),
        ("resumable_uploads_expired_total", "tus", 0.0),
    ] {
        let series = [("protocol", protocol)];
        assert_eq!(
            delta(&before, &after, name, &series),
            count,
            "{name}{series:?}"
        );
    }
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(after.value(name, &[]) > 0.0, "{name} missing or 0");
    }
    promtool_check(&during.text);
    promtool_check(&after.text);
}

#[tokio::test]
async fn a_request_that_takes_over_a_held_upload_counts_a_wait_and_a_takeover() {
    let scratch = scratch();
    let server = Server::serve(&scratch.path().join("data"), &[]);
    let mut metrics = Scraper::new(format!("{}/metrics", server.base));
    let tus = Tus::new(&server);
    let id = tus.create(100_000).await;
    let before = metrics.scrape().await;
    let mut held = open_patch(server.address, &id, 0, 100_000).await;
    send(&mut held, &pseudo_random(3000, 3)).await;
    metrics
        .until("the body streams", |scraped| {
            scraped.value(IN_PROGRESS, &[]) == 1.0
        })
        .await;
    // A HEAD asks the PATCH to let go: it stores what it read and answers.
    let offset = tus.offset(&id).await;
    assert!(offset <= 3000, "offset {offset}");
    let answer = read_response(&mut held, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 "), "held PATCH: {answer}");
    let after = metrics.scrape().await;
    for (name, count) in [
        ("resumable_lock_waits_total", 1.0),
        ("resumable_lock_wait_duration_seconds_count", 1.0),
        ("resumable_lock_takeovers_total", 1.0),
        (RECEIVED, offset as f64),
    ] {
        assert_eq!(
            delta(&before, &after, name, &[]),
            count,
            "{name}\n{}",
            after.text
        );
    }
    assert_eq!(after.value(IN_PROGRESS, &[]), 0.0);
    promtool_check(&after.text);
}

#[tokio::test]
async fn checksummed_chunks_count_once_verified_and_never_when_discarded() {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let scratch = scratch();
    let server = Server::serve(&scratch.path().join("data"), &[]);
    let mut metrics = Scraper::new(format!("{}/metrics", server.base));
    let tus = Tus::new(&server);
    let id = tus.create(2000).await;
    let http = reqwest::Client::new();
    let patch = |offset: u64, body: Vec<u8>, digest_of: Vec<u8>| {
        let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&digest_of));
        http.patch(tus.url(&id))
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .header("Upload-Checksum", format!("sha256 {digest}"))
            .body(body)
            .send()
    };
    let before = metrics.scrape().await;
    let good = pseudo_random(1000, 4);
    let verified = patch(0, good.clone(), good).await.expect("PATCH");
    assert_eq!(verified.status(), 204);
    let bad = pseudo_random(1000, 5);
    let refused = patch(1000, bad, b"something else".to_vec())
        .await
        .expect("PATCH");
    assert_eq!(refused.status(), 460, "checksum mismatch");
    let after = metrics.scrape().await;
    assert_eq!(delta(&before, &after, RECEIVED, &[]), 1000.0);
    for (operation, count) in [
        ("stage", 2.0),
        ("commit_staged", 1.0),
        ("discard_staged", 1.0),
        ("append", 0.0),
    ] {
        let series = [("operation", operation)];
        assert_eq!(
            delta(&before, &after, STORE_CALLS, &series),
            count,
            "{operation}"
        );
    }
    let mismatch = [("protocol", "tus"), ("method", "PATCH"), ("status", "460")];
    assert_eq!(delta(&before, &after, REQUESTS, &mismatch), 1.0);
}

/// The address `--metrics-listen 127.0.0.1:0` picked, from the second line on stdout.
fn metrics_address(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let printed = server.printed();
        if let Some(line) = printed.lines().nth(1) {
            return line
                .strip_prefix("resumable metrics on ")
                .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
                .to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no metrics address in {printed:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn metrics_listen_serves_metrics_there_and_not_on_the_main_listener() {
    let scratch = scratch();
    let server = Server::serve(
        &scratch.path().join("data"),
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let url = metrics_address(&server);
    assert!(url.ends_with("/metrics"), "{url}");
    assert!(
        !url.contains(&server.address.to_string()),
        "the same listener: {url}"
    );
    let http = reqwest::Client::new();
    let main = http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("GET /metrics on the main listener");
    assert_eq!(main.status(), 404, "the main listener serves /metrics");
    let tus = Tus::new(&server);
    let id = tus.create(3).await;
    assert_eq!(tus.patch(&id, 0, b"abc".to_vec()).await.status(), 204);
    let scraped = scrape(&http, &url).await;
    assert_eq!(scraped.value(RECEIVED, &[]), 3.0);
    let not_found = [("protocol", "other"), ("method", "GET"), ("status", "404")];
    assert_eq!(scraped.value(REQUESTS, &not_found), 1.0, "{}", scraped.text);
    let patched = [("protocol", "tus"), ("method", "PATCH"), ("status", "204")];
    assert_eq!(scraped.value(REQUESTS, &patched), 1.0);
    // The metrics listener serves nothing else, and is not counted.
    let elsewhere = url.replace("/metrics", "/files/");
    let upload = http.post(elsewhere).send().await.expect("POST elsewhere");
    assert_eq!(upload.status(), 404);
    let again = scrape(&http, &url).await;
    assert_eq!(again.value(REQUESTS, &not_found), 1.0);
    promtool_check(&again.text);
}

#[tokio::test]
async fn metrics_and_readiness_on_the_main_listener_need_no_credentials() {
    let scratch = scratch();
    let tokens = scratch.path().join("tokens");
    std::fs::write(&tokens, "secret-token alice\n").expect("write tokens");
    let tokens = tokens.to_str().expect("UTF-8 path");
    let server = Server::serve(
        &scratch.path().join("data"),
        &["--auth", "tokens", "--tokens-file", tokens],
    );
    let http = reqwest::Client::new();
    let refused = http
        .post(format!("{}/files/", server.base))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "3")
        .send()
        .await
        .expect("POST without a token");
    assert_eq!(refused.status(), 401);
    let scraped = scrape(&http, &format!("{}/metrics", server.base)).await;
    let unauthorized = [("protocol", "tus"), ("method", "POST"), ("status", "401")];
    assert_eq!(scraped.value(REQUESTS, &unauthorized), 1.0);
    let ready = http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn expired_uploads_are_counted_by_protocol() {
    let scratch = scratch();
    let server = Server::serve(&scratch.path().join("data"), &["--expire-after", "1s"]);
    let mut metrics = Scraper::new(format!("{}/metrics", server.base));
    let tus = Tus::new(&server);
    tus.create(10).await;
    tus.create(10).await;
    let expired = [("protocol", "tus")];
    metrics
        .until("both uploads expired", |scraped| {
            scraped.value("resumable_uploads_expired_total", &expired) == 2.0
        })
        .await;
    // And no more than that.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = metrics.scrape().await;
    assert_eq!(
        later.value("resumable_uploads_expired_total", &expired),
        2.0
    );
    assert_eq!(
        later.value("resumable_uploads_terminated_total", &expired),
        0.0
    );
}

/// What `/readyz` answered: its status and JSON.
async fn readiness(http: &reqwest::Client, server: &Server) -> (u16, serde_json::Value) {
    let response = http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .expect("GET /readyz");
    let status = response.status().as_u16();
    assert_eq!(
        common::header(&response, "Content-Type"),
        "application/json"
    );
    let text = response.text().await.expect("the report");
    let report = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, report)
}

fn reasons(report: &serde_json::Value) -> Vec<String> {
    report["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|reason| reason.as_str().expect("a reason").to_owned())
        .collect()
}

/// Whether a new file can be made in `dir` (by this process, which may be root).
fn can_create_in(dir: &Path) -> bool {
    let probe = dir.join(".can-create");
    match std::fs::File::create(&probe) {
        Ok(_) => {
            std::fs::remove_file(&probe).expect("remove the probe");
            true
        }
        Err(_) => false,
    }
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|output| output.status.success())
}

/// A directory made to refuse new files until dropped, by the first way that works for this
/// process: mode 0500 stops an unprivileged user but not root; root is stopped by the immutable
/// attribute (`chattr +i`, where the file system has it), else by a read-only bind mount of the
/// directory on itself. Each is checked by trying to create a file.
enum Unwritable {
    Mode(PathBuf),
    Immutable(PathBuf),
    ReadOnlyMount(PathBuf),
}

impl Unwritable {
    fn make(dir: &Path) -> Unwritable {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.to_str().expect("UTF-8 path");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o500)).expect("chmod");
        if !can_create_in(dir) {
            return Unwritable::Mode(dir.to_owned());
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        if run("chattr", &["+i", path]) {
            if !can_create_in(dir) {
                return Unwritable::Immutable(dir.to_owned());
            }
            run("chattr", &["-i", path]);
        }
        if run("mount", &["--bind", path, path]) {
            let broken = Unwritable::ReadOnlyMount(dir.to_owned());
            if run("mount", &["-o", "remount,bind,ro", path]) && !can_create_in(dir) {
                return broken;
            }
            drop(broken);
        }
        panic!(
            "cannot make {} refuse new files: not as an unprivileged user (chmod 0500), nor \
             with chattr +i, nor with a read-only bind mount",
            dir.display()
        );
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        match self {
            Unwritable::Mode(dir) => {
                let _ = std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(0o755));
            }
            Unwritable::Immutable(dir) => {
                run("chattr", &["-i", dir.to_str().unwrap_or_default()]);
            }
            Unwritable::ReadOnlyMount(dir) => {
                run("umount", &[dir.to_str().unwrap_or_default()]);
            }
        }
    }
}

#[tokio::test]
async fn readyz_fails_with_its_reasons_while_the_data_dir_cannot_take_files() {
    let scratch = scratch();
    let data = scratch.path().join("data");
    let server = Server::serve(&data, &["--min-free-space", "1MiB"]);
    let http = reqwest::Client::new();
    let (status, report) = readiness(&http, &server).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ready"], true);
    assert_eq!(reasons(&report), Vec::<String>::new());
    assert_eq!(
        report["checks"],
        serde_json::json!(["store", "data_dir_writable", "free_space"])
    );

    let unwritable = Unwritable::make(&data);
    let (status, report) = readiness(&http, &server).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["ready"], false);
    let why = reasons(&report);
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].starts_with("data dir not writable: "), "{why:?}");
    drop(unwritable);
    let (status, report) = readiness(&http, &server).await;
    assert_eq!(status, 200, "fixed, but {report}");
    assert!(
        !data.join(".readyz-probe").exists(),
        "the probe file stayed"
    );

    // The store: its uploads directory gone (as an unmounted volume would be).
    let uploads = data.join("uploads");
    let moved = data.join("uploads.away");
    std::fs::rename(&uploads, &moved).expect("move the uploads dir away");
    let (status, report) = readiness(&http, &server).await;
    assert_eq!(status, 503, "{report}");
    let why = reasons(&report);
    assert!(
        why.len() == 1 && why[0].starts_with("store not answering: "),
        "{why:?}"
    );
    std::fs::rename(&moved, &uploads).expect("bring the uploads dir back");
    assert_eq!(readiness(&http, &server).await.0, 200);
}

#[tokio::test]
async fn readyz_fails_when_free_space_is_below_the_minimum() {
    let scratch = scratch();
    let server = Server::serve(&scratch.path().join("data"), &["--min-free-space", "100%"]);
    let http = reqwest::Client::new();
    let (status, report) = readiness(&http, &server).await;
    assert_eq!(status, 503, "{report}");
    let why = reasons(&report);
    assert!(
        why.len() == 1 && why[0].starts_with("free space low: "),
        "{why:?}"
    );
    // Liveness is another matter.
    let alive = http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(alive.status(), 200);
}
