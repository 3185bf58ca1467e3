//! The fleet end to end: two `resumable serve` nodes of the built binary on one Garage bucket
//! and one Redis, so that any node takes any request of any upload, whatever happened on the
//! other (a PATCH in flight, a SIGKILL, Redis gone for a while).
//!
//! Garage and Redis are real servers from `resumable-testkit`; without them the tests print why
//! and pass, unless `RESUMABLE_REQUIRE_S3` / `RESUMABLE_REQUIRE_REDIS` is set (as `./test.sh`
//! does), in which case they fail. Parts are 1 MiB (Garage takes parts that small) so that a
//! few MiB cross several parts and leave a tail, and leases are short so that a dead node's
//! lock runs out within the test.

mod common;

use common::{
    Server, Tus, assert_prefix_of, header, mentions, open_patch, pseudo_random, raw_header,
    scratch, send, serve_command, sha256_hex,
};
use resumable_testkit::sigv4::{self, Unsigned};
use resumable_testkit::{Garage, Redis, http, require};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// The nodes' `--lock-lease`: how long a dead node's locks outlive it.
const LEASE: Duration = Duration::from_secs(3);
/// What the wait for a dead node's lock may take beyond its lease: the waiter's poll and the
/// requests around it.
const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// The S3 part size of every upload.
const PART: usize = MIB;
/// The key prefix of the nodes' uploads in the bucket.
const PREFIX: &str = "fleet";

/// Garage, Redis, and two nodes on them, all killed when dropped (the nodes first).
struct Fleet {
    a: Server,
    b: Server,
    redis: Redis,
    garage: Garage,
    /// The nodes' data dirs and logs; declared last so it outlives the processes.
    _work: tempfile::TempDir,
}

impl Fleet {
    /// Both nodes on Garage and Redis; `None` (after a printed skip) when either is missing
    /// and not required.
    fn start() -> Option<Fleet> {
        let garage = require(Garage::start(), "RESUMABLE_REQUIRE_S3")?;
        let redis = require(Redis::start(), "RESUMABLE_REQUIRE_REDIS")?;
        let work = scratch();
        let lease = format!("{}s", LEASE.as_secs());
        let redis_locks = ["--redis", &redis.url(), "--lock-lease", &lease];
        let a = node(&work, "a", &garage, &redis_locks);
        let b = node(&work, "b", &garage, &redis_locks);
        Some(Fleet {
            a,
            b,
            redis,
            garage,
            _work: work,
        })
    }
}

/// `resumable serve` on the bucket with its own data dir (`WORK/NAME`) and `locks` flags.
fn node(work: &tempfile::TempDir, name: &str, garage: &Garage, locks: &[&str]) -> Server {
    let store = format!("s3://{}/{PREFIX}", garage.bucket());
    let endpoint = garage.endpoint();
    let part = PART.to_string();
    let mut command = serve_command(
        &work.path().join(name),
        &[
            "--store",
            &store,
            "--s3-endpoint",
            &endpoint,
            "--s3-region",
            garage.region(),
            "--s3-part-size",
            &part,
        ],
    );
    command
        .args(locks)
        .env("AWS_ACCESS_KEY_ID", garage.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", garage.secret_access_key());
    for inherited in [
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
    ] {
        command.env_remove(inherited);
    }
    Server::start(&mut command, work.path())
}

/// A signed GET of the bucket's S3 API (blocking); fails the test unless it answers 200.
fn s3_get(garage: &Garage, path: &str, query: &[(&str, &str)]) -> String {
    let (address, host) = (garage.address(), garage.address().to_string());
    let unsigned = Unsigned {
        method: "GET",
        host: &host,
        path,
        query,
        headers: &[],
        payload_sha256: &sigv4::sha256_hex(b""),
    };
    let signed = garage.signer().sign(&unsigned, SystemTime::now());
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let target = format!(
        "{}?{}",
        sigv4::encode_path(path),
        sigv4::canonical_query(query)
    );
    let response = http::exchange(address, "GET", &target, &headers, b"").expect("S3 request");
    assert_eq!(response.status, 200, "GET {target}: {}", response.text());
    response.text()
}

/// How many parts S3 has acknowledged of upload `id`'s open multipart upload (0 before it has
/// one): what a node has stored of a PATCH still in flight, seen without asking the node.
fn acknowledged_parts(garage: &Garage, id: &str) -> usize {
    let key = format!("{PREFIX}/data/{id}");
    let bucket = format!("/{}", garage.bucket());
    let uploads = s3_get(garage, &bucket, &[("prefix", &key), ("uploads", "")]);
    let Some(upload_id) = between(&uploads, "<UploadId>", "</UploadId>") else {
        return 0;
    };
    let parts = s3_get(
        garage,
        &format!("{bucket}/{key}"),
        &[("uploadId", upload_id)],
    );
    parts.matches("<Part>").count()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let (_, rest) = text.split_once(start)?;
    Some(rest.split_once(end)?.0)
}

fn offset_of(response: &reqwest::Response) -> usize {
    header(response, "Upload-Offset")
        .parse()
        .expect("numeric Upload-Offset")
}

/// GET `/readyz`: its status and body.
async fn readyz(server: &Server) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{}/readyz", server.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET /readyz");
    let status = response.status().as_u16();
    (status, response.text().await.expect("readyz body"))
}

/// HEAD of an upload as it is answered, whatever the status.
async fn head(server: &Server, id: &str) -> reqwest::Response {
    reqwest::Client::new()
        .head(format!("{}/files/{id}", server.base))
        .header("Tus-Resumable", "1.0.0")
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .expect("HEAD")
}

/// Downloads the upload from both nodes and compares each with `source`.
async fn assert_both_serve(fleet: &Fleet, id: &str, source: &[u8]) {
    for (name, server) in [("A", &fleet.a), ("B", &fleet.b)] {
        let downloaded = Tus::new(server).download(id).await;
        assert_eq!(downloaded.len(), source.len(), "length from node {name}");
        assert_eq!(
            sha256_hex(&downloaded),
            sha256_hex(source),
            "SHA-256 of the download from node {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_alternating_between_nodes_make_one_upload() {
    let Some(fleet) = Fleet::start() else { return };
    let source = pseudo_random(6 * MIB + 12_345, 13);
    let nodes = [("A", Tus::new(&fleet.a)), ("B", Tus::new(&fleet.b))];
    let id = nodes[0].1.create(source.len() as u64).await;
    // Sizes that straddle part boundaries, fill a part exactly from a tail, and stay in one.
    let sizes = [700 * KIB, 300 * KIB, MIB + 1, 64 * KIB, 2 * MIB - 7];
    let (mut offset, mut turn) = (0, 0);
    while offset < source.len() {
        let (name, tus) = &nodes[turn % 2];
        let end = (offset + sizes[turn % sizes.len()]).min(source.len());
        let response = tus
            .patch(&id, offset as u64, source[offset..end].to_vec())
            .await;
        assert_eq!(
            response.status(),
            204,
            "PATCH {turn} on node {name} at {offset}"
        );
        assert_eq!(
            offset_of(&response),
            end,
            "offset after PATCH {turn} on {name}"
        );
        (offset, turn) = (end, turn + 1);
    }
    assert!(turn >= 6, "only {turn} PATCHes");
    for (name, tus) in &nodes {
        assert_eq!(tus.offset(&id).await, source.len() as u64, "HEAD on {name}");
    }
    assert_both_serve(&fleet, &id, &source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_patch_holds_its_upload_no_longer_than_its_lease() {
    let Some(mut fleet) = Fleet::start() else {
        return;
    };
    let source = pseudo_random(4 * MIB + 777, 21);
    let (a, b) = (Tus::new(&fleet.a), Tus::new(&fleet.b));
    let id = a.create(source.len() as u64).await;
    // A part and a tail stored before the PATCH that dies.
    let first = PART + PART / 2;
    let response = a.patch(&id, 0, source[..first].to_vec()).await;
    assert_eq!(response.status(), 204, "first PATCH");
    let sent = first + 2 * MIB;
    let mut dying = open_patch(
        fleet.a.address,
        &id,
        first as u64,
        (source.len() - first) as u64,
    )
    .await;
    send(&mut dying, &source[first..sent]).await;
    // Killed only once this PATCH's bytes reached S3 (the tail absorbed into a second part), so
    // that the kill lands in a PATCH that stored something and still holds the lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut parts = 0;
    while parts < 2 {
        assert!(Instant::now() < deadline, "node A stored no second part");
        tokio::time::sleep(Duration::from_millis(20)).await;
        parts = acknowledged_parts(&fleet.garage, &id);
    }
    fleet.a.kill();
    let killed = Instant::now();
    let offset = b.offset(&id).await as usize;
    let waited = killed.elapsed();
    // The lease was renewed at most a third of it before the kill, so at least two thirds of
    // it were left: B waited for it rather than writing beside a holder it could not ask.
    assert!(
        waited >= LEASE / 3,
        "node B took the upload {waited:?} after A died, inside A's lease"
    );
    assert!(
        waited < LEASE + LEASE_MARGIN,
        "node B waited {waited:?} for a dead node's lock (lease {LEASE:?})"
    );
    assert!(offset <= sent, "offset {offset}, only {sent} bytes sent");
    // The dead PATCH wrote no tail segment, so the second part (acknowledged by S3, never
    // reported to the client) counts for nothing; what the first PATCH's answer reported does.
    assert_eq!(
        offset, first,
        "offset {offset}: the {parts} parts S3 holds count only as far as a segment vouches"
    );
    let response = b.patch(&id, offset as u64, source[offset..].to_vec()).await;
    assert_eq!(response.status(), 204, "resuming PATCH on B from {offset}");
    assert_eq!(offset_of(&response), source.len());
    let downloaded = b.download(&id).await;
    assert_prefix_of(&downloaded, &source);
    assert_eq!(sha256_hex(&downloaded), sha256_hex(&source), "SHA-256");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_on_one_node_stops_a_patch_streaming_on_the_other_within_a_second() {
    let Some(fleet) = Fleet::start() else { return };
    let source = Arc::new(pseudo_random(8 * MIB, 34));
    let (a, b) = (Tus::new(&fleet.a), Tus::new(&fleet.b));
    let id = a.create(source.len() as u64).await;
    let stream = open_patch(fleet.a.address, &id, 0, source.len() as u64).await;
    let (mut reading, mut writing) = stream.into_split();
    let (sent, answered) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    // A body that keeps coming, slowly (about 2.5 MiB/s), until the node answers.
    let writer = tokio::spawn({
        let (source, sent, answered) = (source.clone(), sent.clone(), answered.clone());
        async move {
            for chunk in source.chunks(64 * KIB) {
                if answered.load(Ordering::SeqCst) || writing.write_all(chunk).await.is_err() {
                    return;
                }
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            // Closing our side would make the server drop the request unanswered.
            while !answered.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            drop(writing);
        }
    });
    // Read from the start, so the answer is taken before the node closes the connection on
    // the bytes still coming.
    let reader = tokio::spawn({
        let answered = answered.clone();
        async move {
            let mut received = Vec::new();
            let mut buffer = [0; 4096];
            while let Ok(read @ 1..) = reading.read(&mut buffer).await {
                answered.store(true, Ordering::SeqCst);
                received.extend_from_slice(&buffer[..read]);
            }
            String::from_utf8_lossy(&received).into_owned()
        }
    });
    // Past a part, so A has a part in S3 and a tail in memory when it is asked to let go.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sent.load(Ordering::SeqCst) < (PART + PART / 2) as u64 {
        assert!(Instant::now() < deadline, "the body did not get going");
        assert!(
            !answered.load(Ordering::SeqCst),
            "A answered before the HEAD"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = Instant::now();
    let offset = b.offset(&id).await;
    let elapsed = asked.elapsed();
    let sent_by_then = sent.load(Ordering::SeqCst);
    assert!(
        elapsed < Duration::from_secs(1),
        "HEAD on B took {elapsed:?} while A streamed"
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("A answered its PATCH")
        .expect("reader task");
    writer.abort();
    // A was asked to let go: it stopped, stored what it had and says so (423, with the offset).
    assert!(
        answer.starts_with("HTTP/1.1 423 "),
        "A's answer to its PATCH: {answer}"
    );
    let kept: u64 = raw_header(&answer, "Upload-Offset")
        .unwrap_or_else(|| panic!("no Upload-Offset in {answer}"))
        .parse()
        .expect("numeric Upload-Offset");
    assert_eq!(offset, kept, "B's HEAD against what A kept");
    assert!(
        offset <= sent_by_then,
        "offset {offset}, {sent_by_then} sent"
    );
    assert!(
        offset >= PART as u64,
        "offset {offset}: A kept less than a part"
    );
    b.finish_and_verify(&id, &source).await;
    assert_eq!(sha256_hex(&a.download(&id).await), sha256_hex(&source));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_gone_answers_503_and_corrupts_nothing() {
    let Some(mut fleet) = Fleet::start() else {
        return;
    };
    let source = pseudo_random(3 * MIB + 99, 55);
    let (a, b) = (Tus::new(&fleet.a), Tus::new(&fleet.b));
    let id = a.create(source.len() as u64).await;
    let kept = PART + PART / 4;
    let response = a.patch(&id, 0, source[..kept].to_vec()).await;
    assert_eq!(response.status(), 204, "PATCH before the outage");
    fleet.redis.stop();

    let refused = a
        .patch(&id, kept as u64, source[kept..kept + 512 * KIB].to_vec())
        .await;
    assert_eq!(refused.status(), 503, "PATCH without Redis");
    let message = refused.text().await.expect("503 body");
    assert!(mentions(&message, "lock"), "503 says why: {message:?}");
    let head_refused = head(&fleet.b, &id).await;
    assert_eq!(head_refused.status(), 503, "HEAD without Redis");
    for (name, server) in [("A", &fleet.a), ("B", &fleet.b)] {
        let (status, report) = readyz(server).await;
        assert_eq!(status, 503, "/readyz of {name} without Redis: {report}");
        // The reasons, not the list of checks (which names Redis whether it answers or not).
        let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
        let reasons = report["reasons"].as_array().expect("reasons");
        assert!(
            reasons
                .iter()
                .any(|reason| mentions(reason.as_str().unwrap_or_default(), "redis")),
            "/readyz of {name} does not say Redis is gone: {report}"
        );
    }

    fleet.redis.start_again().expect("start Redis again");
    for (name, server) in [("A", &fleet.a), ("B", &fleet.b)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, report) = readyz(server).await;
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz of {name} after Redis came back: {status} {report}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(b.offset(&id).await, kept as u64, "offset after the outage");
    b.finish_and_verify(&id, &source).await;
    assert_both_serve(&fleet, &id, &source).await;
}
