//! Hooks against the real binary and a real receiver on 127.0.0.1 that the test starts, stops,
//! and makes refuse, stall or fail: every event arrives, in order per upload, signed, once per
//! id, filtered by `--hook-events`, and across a SIGKILL of the server (the receiver down while
//! the upload completes; or the server killed while it waits on `pre-finish`).

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{Server, Tus, header, scratch, wait_until};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bound on any wait for an event.
const EVENT_DEADLINE: Duration = Duration::from_secs(15);
const SECRET: &str = "s3cret-key";

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Received {
    body: Vec<u8>,
    signature: Option<String>,
    event: Value,
}

impl Received {
    fn kind(&self) -> &str {
        self.event["type"].as_str().unwrap_or_default()
    }

    fn upload(&self) -> &str {
        self.event["upload"]["id"].as_str().unwrap_or_default()
    }
}

/// How the receiver answers an event: status, body, and how long it waits first.
type Policy = Arc<dyn Fn(&Value) -> (u16, String, Duration) + Send + Sync>;

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    policy: Policy,
}

/// A hook receiver on loopback; stops when dropped.
struct Receiver {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

fn accept_all() -> Policy {
    Arc::new(|_| (200, String::new(), Duration::ZERO))
}

impl Receiver {
    async fn start(address: SocketAddr, policy: Policy) -> Receiver {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .expect("bind the receiver");
        Self::serve(listener, policy)
    }

    /// On a port held since `reserve_port`: no other process can have taken it meanwhile.
    fn start_on(reserved: tokio::net::TcpSocket, policy: Policy) -> Receiver {
        let listener = reserved.listen(128).expect("listen on the reserved port");
        Self::serve(listener, policy)
    }

    fn serve(listener: tokio::net::TcpListener, policy: Policy) -> Receiver {
        let address = listener.local_addr().expect("receiver address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            received: received.clone(),
            policy,
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            address,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    fn events(&self) -> Vec<Received> {
        self.received.lock().expect("events").clone()
    }

    /// Waits until an event of `kind` for `upload` has arrived.
    async fn wait_for(&self, kind: &str, upload: &str) {
        let what = format!("{kind} of {upload}");
        wait_until(&what, EVENT_DEADLINE, || {
            self.events()
                .iter()
                .any(|event| event.kind() == kind && event.upload() == upload)
        })
        .await;
    }

    /// The kinds that arrived for `upload`, in arrival order.
    fn kinds_of(&self, upload: &str) -> Vec<String> {
        self.events()
            .iter()
            .filter(|event| event.upload() == upload)
            .map(|event| event.kind().to_owned())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let event: Value = serde_json::from_slice(&body).expect("events are JSON");
    let (status, answer, delay) = (state.policy)(&event);
    tokio::time::sleep(delay).await;
    let signature = headers
        .get("resumable-signature")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    state.received.lock().expect("events").push(Received {
        body: body.to_vec(),
        signature,
        event,
    });
    (StatusCode::from_u16(status).expect("status"), answer)
}

/// A port nobody listens on (the receiver is "down"), for a receiver to start on later with
/// `Receiver::start_on`. Bound but not listening: connections are refused, as by a receiver
/// that is down, and the port stays ours (a port freed and bound again later can be taken by
/// another process in between).
fn reserve_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let address = socket.local_addr().expect("address");
    (socket, address)
}

fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn write_secret(directory: &Path) -> String {
    let path = directory.join("hook-secret");
    // With the line break `echo` would add: not part of the key.
    std::fs::write(&path, format!("{SECRET}\n")).expect("write the secret");
    path.display().to_string()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

/// POST /files/ of `length` bytes with `Upload-Metadata`.
async fn create_with_metadata(server: &Server, length: u64, metadata: &str) -> reqwest::Response {
    http()
        .post(format!("{}/files/", server.base))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", length.to_string())
        .header("Upload-Metadata", metadata)
        .send()
        .await
        .expect("POST /files/")
}

fn id_of(response: &reqwest::Response) -> String {
    let location = header(response, "Location");
    location.rsplit('/').next().unwrap_or_default().to_owned()
}

fn post_events(kinds: &[String]) -> Vec<&str> {
    kinds
        .iter()
        .map(String::as_str)
        .filter(|kind| kind.starts_with("post-"))
        .collect()
}

fn position(kinds: &[String], kind: &str) -> usize {
    kinds
        .iter()
        .position(|found| found == kind)
        .unwrap_or_else(|| panic!("no {kind} in {kinds:?}"))
}

#[tokio::test]
async fn every_event_arrives_signed_once_and_in_order_per_upload() {
    let scratch = scratch();
    let data_dir = scratch.path().join("data");
    let receiver = Receiver::start("127.0.0.1:0".parse().expect("address"), accept_all()).await;
    let secret = write_secret(scratch.path());
    let url = receiver.url();
    let server = Server::serve(
        &data_dir,
        &["--hook-url", &url, "--hook-secret-file", &secret],
    );
    let tus = Tus::new(&server);

    // "filename a.txt": base64 of a.txt is YS50eHQ=.
    let created = create_with_metadata(&server, 10, "filename YS50eHQ=").await;
    assert_eq!(created.status(), 201);
    let kept = id_of(&created);
    assert_eq!(tus.patch(&kept, 0, b"0123".to_vec()).await.status(), 204);
    assert_eq!(tus.patch(&kept, 4, b"456789".to_vec()).await.status(), 204);
    let removed = tus.create(5).await;
    let deleted = http()
        .delete(tus.url(&removed))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);

    receiver.wait_for("post-finish", &kept).await;
    receiver.wait_for("post-terminate", &removed).await;

    let kinds = receiver.kinds_of(&kept);
    assert_eq!(
        post_events(&kinds),
        ["post-create", "post-receive", "post-receive", "post-finish"],
        "post-* events of the finished upload, in order: {kinds:?}"
    );
    assert_eq!(kinds[0], "pre-create", "{kinds:?}");
    assert!(position(&kinds, "pre-finish") < position(&kinds, "post-finish"));
    let kinds = receiver.kinds_of(&removed);
    assert_eq!(
        post_events(&kinds),
        ["post-create", "post-terminate"],
        "{kinds:?}"
    );

    let events = receiver.events();
    let ids: HashSet<&str> = events
        .iter()
        .map(|event| event.event["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(ids.len(), events.len(), "every event has its own id");
    for event in &events {
        assert_eq!(
            event.signature.as_deref(),
            Some(expected_signature(&event.body).as_str()),
            "signature of {}",
            event.kind()
        );
    }
    let offsets: Vec<u64> = events
        .iter()
        .filter(|event| event.kind() == "post-receive" && event.upload() == kept)
        .map(|event| event.event["upload"]["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, [4, 10]);

    let finished = events
        .iter()
        .find(|event| event.kind() == "post-finish")
        .expect("post-finish");
    let upload = &finished.event["upload"];
    assert_eq!(upload["size"], 10);
    assert_eq!(upload["offset"], 10);
    assert_eq!(upload["owner"], "anonymous");
    assert_eq!(upload["protocol"], "tus");
    assert_eq!(upload["metadata"]["filename"], "a.txt");
    assert_eq!(upload["storage"]["type"], "file");
    let path = upload["storage"]["path"].as_str().expect("a storage path");
    assert_eq!(std::fs::read(path).expect("the stored file"), b"0123456789");
}

#[tokio::test]
async fn hook_events_narrows_what_is_sent() {
    let scratch = scratch();
    let data_dir = scratch.path().join("data");
    let receiver = Receiver::start("127.0.0.1:0".parse().expect("address"), accept_all()).await;
    let url = receiver.url();
    let server = Server::serve(
        &data_dir,
        &["--hook-url", &url, "--hook-events", "post-finish"],
    );
    let tus = Tus::new(&server);

    let removed = tus.create(5).await;
    let deleted = http()
        .delete(tus.url(&removed))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);
    let first = tus.create(3).await;
    assert_eq!(tus.patch(&first, 0, b"abc".to_vec()).await.status(), 204);
    let last = tus.create(2).await;
    assert_eq!(tus.patch(&last, 0, b"de".to_vec()).await.status(), 204);

    // Delivery is FIFO: once the last upload's post-finish is here, anything recorded before
    // it would be here too.
    receiver.wait_for("post-finish", &last).await;
    let kinds: Vec<String> = receiver
        .events()
        .iter()
        .map(|event| format!("{} {}", event.kind(), event.upload()))
        .collect();
    assert_eq!(
        kinds,
        [
            format!("post-finish {first}"),
            format!("post-finish {last}")
        ]
    );
}

/// The receiver is down while the upload completes; the server is SIGKILLed before it could
/// deliver anything, restarted, and only then the receiver comes up: every post-* event
/// arrives, in order.
#[tokio::test]
async fn post_finish_survives_sigkill_while_the_receiver_is_down() {
    let scratch = scratch();
    let data_dir = scratch.path().join("data");
    let (reserved, address) = reserve_port();
    let url = format!("http://{address}/hook");
    let flags = [
        "--hook-url",
        &url,
        "--hook-failure",
        "allow",
        "--hook-retry-max",
        "200ms",
    ];
    let mut server = Server::serve(&data_dir, &flags);
    let tus = Tus::new(&server);
    let id = tus.create(6).await;
    assert_eq!(tus.patch(&id, 0, b"abcdef".to_vec()).await.status(), 204);
    server.kill();
    let outbox = std::fs::read_dir(data_dir.join("outbox"))
        .expect("the outbox")
        .count();
    assert!(
        outbox >= 3,
        "post-create, post-receive, post-finish wait in the outbox: {outbox}"
    );
    drop(server);

    let server = Server::serve(&data_dir, &flags);
    let receiver = Receiver::start_on(reserved, accept_all());
    receiver.wait_for("post-finish", &id).await;
    assert_eq!(
        receiver.kinds_of(&id),
        ["post-create", "post-receive", "post-finish"]
    );
    drop(server);
}

/// The server is SIGKILLed while the last PATCH waits on `pre-finish`: every byte is stored,
/// the finish hooks are not run. The restarted server runs them: `post-finish` arrives.
#[tokio::test]
async fn finish_hooks_owed_at_a_sigkill_run_after_the_restart() {
    let scratch = scratch();
    let data_dir = scratch.path().join("data");
    let stalling: Policy = Arc::new(|event: &Value| {
        let delay = if event["type"] == "pre-finish" {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        };
        (200, String::new(), delay)
    });
    let receiver = Receiver::start("127.0.0.1:0".parse().expect("address"), stalling).await;
    let url = receiver.url();
    let flags = ["--hook-url", &url, "--hook-timeout", "60s"];
    let mut server = Server::serve(&data_dir, &flags);
    let tus = Tus::new(&server);
    let id = tus.create(4).await;
    // Never answered: the server is killed while it waits on pre-finish.
    let patch = tokio::spawn(
        http()
            .patch(tus.url(&id))
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", "0")
            .body(b"wxyz".to_vec())
            .send(),
    );
    // The receiver records an event once it has answered, so wait on the stored length and
    // give the request time to reach the hook.
    wait_until("the bytes are committed", EVENT_DEADLINE, || {
        common::committed_length(&data_dir, &id) == 4
    })
    .await;
    receiver.wait_for("post-receive", &id).await;
    server.kill();
    let _ = patch.await;
    drop(server);
    drop(receiver);
    assert!(
        !std::fs::read_dir(data_dir.join("outbox"))
            .expect("the outbox")
            .filter_map(Result::ok)
            .any(|entry| std::fs::read_to_string(entry.path())
                .is_ok_and(|text| text.contains("post-finish"))),
        "no post-finish was recorded before the kill"
    );

    let receiver = Receiver::start("127.0.0.1:0".parse().expect("address"), accept_all()).await;
    let url = receiver.url();
    let server = Server::serve(&data_dir, &["--hook-url", &url]);
    receiver.wait_for("post-finish", &id).await;
    let kinds = receiver.kinds_of(&id);
    assert!(
        position(&kinds, "pre-finish") < position(&kinds, "post-finish"),
        "{kinds:?}"
    );
    let tus = Tus::new(&server);
    assert_eq!(tus.download(&id).await, b"wxyz");
}

#[tokio::test]
async fn pre_create_refuses_with_its_message_or_sets_metadata() {
    let scratch = scratch();
    let data_dir = scratch.path().join("data");
    let policy: Policy = Arc::new(|event: &Value| {
        if event["type"] != "pre-create" {
            return (200, String::new(), Duration::ZERO);
        }
        let answer = if event["upload"]["metadata"]["filename"] == "forbidden.txt" {
            r#"{"reject": {"status": 422, "message": "forbidden.txt is not welcome here"}}"#
        } else {
            r#"{"metadata": {"approved": "yes"}}"#
        };
        (200, answer.to_owned(), Duration::ZERO)
    });
    let receiver = Receiver::start("127.0.0.1:0".parse().expect("address"), policy).await;
    let url = receiver.url();
    let server = Server::serve(&data_dir, &["--hook-url", &url]);

    // base64("forbidden.txt")
    let refused = create_with_metadata(&server, 5, "filename Zm9yYmlkZGVuLnR4dA==").await;
    assert_eq!(refused.status(), 422);
    assert_eq!(
        refused.text().await.expect("body"),
        "forbidden.txt is not welcome here"
    );

    let accepted = create_with_metadata(&server, 5, "filename YS50eHQ=").await;
    assert_eq!(accepted.status(), 201);
    let head = http()
        .head(format!("{}/files/{}", server.base, id_of(&accepted)))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("HEAD");
    // base64("yes") = eWVz
    assert_eq!(
        header(&head, "Upload-Metadata"),
        "filename YS50eHQ=,approved eWVz"
    );
}

#[tokio::test]
async fn pre_finish_refusal_fails_the_upload_and_says_why() {
    let scratch = scratch();
    let data_dir = scratch.path().join("data");
    let policy: Policy = Arc::new(|event: &Value| {
        let answer = if event["type"] == "pre-finish" {
            r#"{"reject": {"status": 422, "message": "virus found"}}"#
        } else {
            ""
        };
        (200, answer.to_owned(), Duration::ZERO)
    });
    let receiver = Receiver::start("127.0.0.1:0".parse().expect("address"), policy).await;
    let url = receiver.url();
    let server = Server::serve(&data_dir, &["--hook-url", &url]);
    let tus = Tus::new(&server);

    let id = tus.create(5).await;
    let refused = tus.patch(&id, 0, b"EICAR".to_vec()).await;
    assert_eq!(refused.status(), 422);
    assert_eq!(refused.text().await.expect("body"), "virus found");
    assert_eq!(tus.offset(&id).await, 5, "HEAD still tells the true offset");
    let download = http().get(tus.url(&id)).send().await.expect("GET");
    assert_eq!(download.status(), 422);
    assert!(download.text().await.expect("body").contains("virus found"));
    let again = tus.patch(&id, 5, Vec::new()).await;
    assert_eq!(again.status(), 422);

    // The simple protocol's completion is refused the same way.
    let simple = http()
        .post(format!("{}/upload", server.base))
        .header("X-File-Id", "eicar.com-5-1")
        .header("X-Start-Byte", "0")
        .header("X-File-Size", "5")
        .body(b"EICAR".to_vec())
        .send()
        .await
        .expect("POST /upload");
    assert_eq!(simple.status(), 422);
    assert_eq!(simple.text().await.expect("body"), "virus found");

    // Nothing finished: a later upload's post-create arrives with no post-finish before it.
    let later = tus.create(1).await;
    receiver.wait_for("post-create", &later).await;
    assert!(
        !receiver
            .events()
            .iter()
            .any(|event| event.kind() == "post-finish"),
        "a refused upload has no post-finish"
    );
}

#[tokio::test]
async fn every_call_to_the_receiver_is_counted_by_event_and_outcome() {
    use common::scrape::{Scrape, promtool_check, scrape};
    use std::sync::atomic::{AtomicBool, Ordering};
    const DELIVERIES: &str = "resumable_hook_deliveries_total";
    let scratch = scratch();
    // The first post-create is answered 503; everything else is taken.
    let refused_once = Arc::new(AtomicBool::new(false));
    let policy: Policy = Arc::new(move |event: &Value| {
        if event["type"] == "post-create" && !refused_once.swap(true, Ordering::SeqCst) {
            return (503, String::new(), Duration::ZERO);
        }
        (200, String::new(), Duration::ZERO)
    });
    let receiver = Receiver::start("127.0.0.1:0".parse().expect("address"), policy).await;
    let url = receiver.url();
    let server = Server::serve(&scratch.path().join("data"), &["--hook-url", &url]);
    let tus = Tus::new(&server);
    let id = tus.create(3).await;
    assert_eq!(tus.patch(&id, 0, b"abc".to_vec()).await.status(), 204);
    receiver.wait_for("post-finish", &id).await;

    let http = http();
    let metrics = format!("{}/metrics", server.base);
    let delivered = |kind: &'static str| [("event", kind), ("outcome", "delivered")];
    let mut scraped: Scrape = scrape(&http, &metrics).await;
    // The receiver records an event before the server reads its answer.
    let deadline = std::time::Instant::now() + EVENT_DEADLINE;
    while scraped.value(DELIVERIES, &delivered("post-finish")) < 1.0 {
        assert!(std::time::Instant::now() < deadline, "{}", scraped.text);
        tokio::time::sleep(Duration::from_millis(10)).await;
        scraped = scrape(&http, &metrics).await;
    }
    for kind in [
        "pre-create",
        "post-create",
        "post-receive",
        "pre-finish",
        "post-finish",
    ] {
        assert_eq!(scraped.value(DELIVERIES, &delivered(kind)), 1.0, "{kind}");
    }
    let refused = [("event", "post-create"), ("outcome", "bad_status")];
    assert_eq!(scraped.value(DELIVERIES, &refused), 1.0);
    let all: f64 = scraped
        .text
        .lines()
        .filter(|line| line.starts_with(DELIVERIES))
        .map(|line| {
            line.rsplit_once(' ')
                .expect("a value")
                .1
                .parse::<f64>()
                .expect("a number")
        })
        .sum();
    assert_eq!(
        all,
        receiver.events().len() as f64,
        "one count per call received"
    );
    assert_eq!(all, 6.0);
    promtool_check(&scraped.text);
}
