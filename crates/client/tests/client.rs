//! The client against a real resumable server (in-process, on 127.0.0.1:0, memory store), with a
//! layer in front that injects failures: each test names the failures and checks the client
//! gets through them (or gives up) as documented.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use resumable_client::{
    ChecksumAlgorithm, Client, ClientConfig, ClientError, Fingerprint, Protocol, RetryPolicy,
    SavedUpload, Source, StateStore, UploadEvent, UploadOutcome, UploadRequest, Url, partial_path,
};
use resumable_core::{MemoryLocker, MemoryStore, ServiceConfig, SystemClock, UploadService};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What the layer in front of the server does.
#[derive(Default)]
struct Faults {
    /// Statuses answered, in order, instead of passing body-carrying requests (PATCH, POST
    /// /upload) to the server.
    appends: Mutex<VecDeque<StatusCode>>,
    /// PATCHes answered `204` with their own `Upload-Offset`, as if nothing of the body counted.
    swallowed: Mutex<u32>,
    /// Hide the checksum extension from OPTIONS, as a server without it would.
    hide_checksum: bool,
    /// Hide the concatenation extensions from OPTIONS, as a server without them would.
    hide_concatenation: bool,
    /// `Upload-Checksum` of every PATCH that reached the layer.
    checksums: Mutex<Vec<String>>,
    /// `Upload-Concat` of every tus creation POST (empty for a plain upload), in order.
    creations: Mutex<Vec<String>>,
}

async fn inject(State(faults): State<Arc<Faults>>, request: Request, next: Next) -> Response {
    if request.method() == Method::POST && request.uri().path() == "/files/" {
        let concat = request.headers().get("upload-concat");
        let concat = concat
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        faults.creations.lock().unwrap().push(concat.to_owned());
    }
    let appends = request.method() == Method::PATCH || request.uri().path() == "/upload";
    if appends {
        if let Some(checksum) = request.headers().get("upload-checksum") {
            let value = checksum.to_str().unwrap_or_default().to_owned();
            faults.checksums.lock().unwrap().push(value);
        }
        let injected = faults.appends.lock().unwrap().pop_front();
        if let Some(status) = injected {
            return (status, "injected").into_response();
        }
        let mut swallowed = faults.swallowed.lock().unwrap();
        if *swallowed > 0 && request.method() == Method::PATCH {
            *swallowed -= 1;
            let offset = request.headers().get("upload-offset").cloned();
            let mut response = StatusCode::NO_CONTENT.into_response();
            if let Some(offset) = offset {
                response.headers_mut().insert("upload-offset", offset);
            }
            return response;
        }
        drop(swallowed);
    }
    let options = request.method() == Method::OPTIONS;
    let mut response = next.run(request).await;
    if options {
        let hidden = |name: &str| {
            (faults.hide_checksum && name.starts_with("checksum"))
                || (faults.hide_concatenation && name.starts_with("concatenation"))
        };
        let headers = response.headers_mut();
        let extensions: Vec<String> = headers
            .get("tus-extension")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .split(',')
            .filter(|name| !hidden(name))
            .map(str::to_owned)
            .collect();
        let value = HeaderValue::from_str(&extensions.join(",")).unwrap();
        headers.insert("tus-extension", value);
        if faults.hide_checksum {
            headers.remove("tus-checksum-algorithm");
        }
    }
    response
}

/// The server, its base URL, and the faults it injects.
struct TestServer {
    base: String,
    faults: Arc<Faults>,
}

impl TestServer {
    async fn start(faults: Faults) -> Self {
        let service = Arc::new(UploadService::new(
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryLocker::new(Duration::from_secs(5))),
            Arc::new(SystemClock),
            ServiceConfig::default(),
        ));
        let faults = Arc::new(faults);
        let app = resumable_server::app(service, resumable_server::ServerConfig::default())
            .layer(axum::middleware::from_fn_with_state(faults.clone(), inject));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestServer { base, faults }
    }

    fn tus(&self) -> Url {
        Url::parse(&format!("{}/files/", self.base)).unwrap()
    }

    /// `Upload-Concat` of the creation POSTs so far: `partial`, `final;...` or empty.
    fn creations(&self) -> Vec<String> {
        self.faults.creations.lock().unwrap().clone()
    }

    fn fail_appends(&self, statuses: &[u16]) {
        let mut appends = self.faults.appends.lock().unwrap();
        appends.extend(
            statuses
                .iter()
                .map(|&code| StatusCode::from_u16(code).unwrap()),
        );
    }
}

fn client(retry: RetryPolicy) -> Client {
    Client::new(ClientConfig {
        retry,
        progress_interval: Duration::from_millis(5),
        ..ClientConfig::default()
    })
    .unwrap()
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        first_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        give_up_after: Duration::from_secs(10),
    }
}

/// Deterministic bytes written to `dir/name`.
fn source_file(dir: &Path, name: &str, length: usize) -> (PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..length)
        .map(|index| (index as u8).wrapping_mul(31) ^ (index >> 9) as u8)
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn request(path: &Path, endpoint: Url, chunk: u64) -> UploadRequest {
    let mut request = UploadRequest::new(path, endpoint);
    request.chunk_size = Some(chunk);
    request
}

/// Collects every event of an upload.
#[derive(Default)]
struct Recorder(Mutex<Vec<UploadEvent>>);

impl Recorder {
    fn record(&self, event: &UploadEvent) {
        self.0.lock().unwrap().push(event.clone());
    }

    fn confirmed(&self) -> Vec<u64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|event| match event {
                UploadEvent::Progress(progress) => Some(progress.confirmed),
                _ => None,
            })
            .collect()
    }

    fn retries(&self) -> usize {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|event| matches!(event, UploadEvent::Retrying { .. }))
            .count()
    }
}

async fn download(client: &Client, url: &Url, dir: &Path) -> Vec<u8> {
    let path = dir.join("downloaded");
    client.download(url, &path, &|_| {}).await.unwrap();
    std::fs::read(path).unwrap()
}

/// Uploads until the server confirmed at least `at_least` bytes, then drops the upload future,
/// as Ctrl-C does.
async fn interrupt_after(client: &Client, request: &UploadRequest, at_least: u64) {
    let reached = Notify::new();
    let watch = |event: &UploadEvent| {
        if let UploadEvent::Progress(progress) = event
            && progress.confirmed >= at_least
        {
            reached.notify_one();
        }
    };
    tokio::select! {
        result = client.upload(request, &watch) => panic!("finished before the interruption: {result:?}"),
        () = reached.notified() => {}
    }
}

#[tokio::test]
async fn retries_through_5xx_409_and_423() {
    let server = TestServer::start(Faults::default()).await;
    server.fail_appends(&[503, 423, 409, 500, 502]);
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "data.bin", 100_000);
    let client = client(quick_retries());
    let recorder = Recorder::default();
    let outcome = client
        .upload(&request(&path, server.tus(), 16 * 1024), &|event| {
            recorder.record(event)
        })
        .await
        .unwrap();
    assert_eq!(outcome.retries, 5);
    assert_eq!(recorder.retries(), 5);
    let confirmed = recorder.confirmed();
    assert!(
        confirmed.windows(2).all(|pair| pair[0] <= pair[1]),
        "{confirmed:?}"
    );
    assert_eq!(confirmed.last(), Some(&100_000));
    let url = outcome.url.unwrap();
    assert!(client.status(&url).await.unwrap().is_complete());
    assert_eq!(download(&client, &url, scratch.path()).await, bytes);
}

#[tokio::test]
async fn answers_that_store_nothing_are_retried_not_spun_on() {
    let server = TestServer::start(Faults {
        swallowed: Mutex::new(3),
        ..Faults::default()
    })
    .await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "data.bin", 10_000);
    let client = client(quick_retries());
    let outcome = client
        .upload(&request(&path, server.tus(), 4000), &|_| {})
        .await
        .unwrap();
    assert_eq!(outcome.retries, 3);
    assert_eq!(
        download(&client, outcome.url.as_ref().unwrap(), scratch.path()).await,
        bytes
    );
}

#[tokio::test]
async fn gives_up_after_the_configured_time_without_progress() {
    let server = TestServer::start(Faults::default()).await;
    server.fail_appends(&[503; 1000]);
    let scratch = tempfile::tempdir().unwrap();
    let (path, _) = source_file(scratch.path(), "data.bin", 1000);
    let client = client(RetryPolicy {
        first_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        give_up_after: Duration::from_millis(300),
    });
    let started = Instant::now();
    let error = client
        .upload(&request(&path, server.tus(), 1000), &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::GaveUp { .. }), "{error}");
    assert!(error.to_string().contains("503"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = TestServer::start(Faults::default()).await;
    server.fail_appends(&[400]);
    let scratch = tempfile::tempdir().unwrap();
    let (path, _) = source_file(scratch.path(), "data.bin", 1000);
    let error = client(quick_retries())
        .upload(&request(&path, server.tus(), 1000), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Status { status, .. } if *status == StatusCode::BAD_REQUEST),
        "{error}"
    );
}

#[tokio::test]
async fn refused_credentials_are_not_retried() {
    for code in [401, 403] {
        let server = TestServer::start(Faults::default()).await;
        // One refusal, then success: a retry would finish the upload.
        server.fail_appends(&[code]);
        let scratch = tempfile::tempdir().unwrap();
        let (path, _) = source_file(scratch.path(), "data.bin", 1000);
        let error = client(quick_retries())
            .upload(&request(&path, server.tus(), 1000), &|_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ClientError::Refused { status, .. } if status.as_u16() == code),
            "{code}: {error}"
        );
        assert!(
            error
                .to_string()
                .starts_with("the server refused the credentials: "),
            "{error}"
        );
    }
}

#[tokio::test]
async fn checksums_are_refused_unless_advertised() {
    let server = TestServer::start(Faults {
        hide_checksum: true,
        ..Faults::default()
    })
    .await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, _) = source_file(scratch.path(), "data.bin", 1000);
    let mut request = request(&path, server.tus(), 1000);
    request.checksum = Some(ChecksumAlgorithm::Sha256);
    let error = client(quick_retries())
        .upload(&request, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Unsupported(_)), "{error}");
    assert!(error.to_string().contains("checksum"), "{error}");
}

#[tokio::test]
async fn checksums_go_with_each_chunk_and_the_server_verifies_them() {
    let server = TestServer::start(Faults::default()).await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, _) = source_file(scratch.path(), "data.bin", 2500);
    let mut request = request(&path, server.tus(), 1000);
    request.checksum = Some(ChecksumAlgorithm::Sha1);
    client(quick_retries())
        .upload(&request, &|_| {})
        .await
        .unwrap();
    let checksums = server.faults.checksums.lock().unwrap().clone();
    assert_eq!(checksums.len(), 3, "{checksums:?}");
    assert!(checksums.iter().all(|value| value.starts_with("sha1 ")));
    assert_ne!(checksums[0], checksums[1]);
}

#[tokio::test]
async fn a_remembered_upload_resumes_at_the_server_offset() {
    let server = TestServer::start(Faults::default()).await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "data.bin", 64 * 1024);
    let mut request = request(&path, server.tus(), 8 * 1024);
    request.state = Some(StateStore::new(scratch.path().join("state")));
    let client = client(quick_retries());
    interrupt_after(&client, &request, 16 * 1024).await;

    let recorder = Recorder::default();
    let outcome = client
        .upload(&request, &|event| recorder.record(event))
        .await
        .unwrap();
    let resumed_from = outcome.resumed_from.expect("resumed");
    assert!(resumed_from >= 16 * 1024, "resumed from {resumed_from}");
    let created = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|event| matches!(event, UploadEvent::Created { .. }));
    assert!(!created, "a second upload was created");
    assert_eq!(
        download(&client, outcome.url.as_ref().unwrap(), scratch.path()).await,
        bytes
    );
    // Done: forgotten, so the next upload of the same file is a new one.
    let again = client.upload(&request, &|_| {}).await.unwrap();
    assert_eq!(again.resumed_from, None);
    assert_ne!(again.url, outcome.url);
}

#[tokio::test]
async fn a_remembered_upload_that_is_gone_starts_over() {
    let server = TestServer::start(Faults::default()).await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "data.bin", 64 * 1024);
    let mut request = request(&path, server.tus(), 8 * 1024);
    request.state = Some(StateStore::new(scratch.path().join("state")));
    let client = client(quick_retries());
    let first_url = Arc::new(Mutex::new(None));
    let reached = Notify::new();
    let watch = |event: &UploadEvent| match event {
        UploadEvent::Created { url } => *first_url.lock().unwrap() = Some(url.clone()),
        UploadEvent::Progress(progress) if progress.confirmed > 0 => reached.notify_one(),
        _ => {}
    };
    tokio::select! {
        _ = client.upload(&request, &watch) => panic!("finished before the interruption"),
        () = reached.notified() => {}
    }
    let first_url = first_url.lock().unwrap().clone().unwrap();
    client.terminate(&first_url).await.unwrap();

    let outcome = client.upload(&request, &|_| {}).await.unwrap();
    assert!(outcome.started_over);
    assert_eq!(outcome.resumed_from, None);
    assert_ne!(outcome.url.as_ref(), Some(&first_url));
    assert_eq!(
        download(&client, outcome.url.as_ref().unwrap(), scratch.path()).await,
        bytes
    );
}

#[tokio::test]
async fn the_simple_protocol_resumes_from_the_stored_count() {
    let server = TestServer::start(Faults::default()).await;
    // The first run gets through a 503 before it is interrupted; the second sees none.
    server.fail_appends(&[503]);
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "notes.txt", 50_000);
    let base = Url::parse(&server.base).unwrap();
    let mut request = request(&path, base, 10_000);
    request.protocol = Protocol::Simple;
    let client = client(quick_retries());
    interrupt_after(&client, &request, 20_000).await;

    let outcome: UploadOutcome = client.upload(&request, &|_| {}).await.unwrap();
    assert!(
        outcome.resumed_from.is_some_and(|offset| offset >= 20_000),
        "{outcome:?}"
    );
    assert_eq!(outcome.retries, 0);
    let url = outcome.url.expect("Location of the upload");
    assert_eq!(download(&client, &url, scratch.path()).await, bytes);
}

#[tokio::test]
async fn empty_files_upload_with_both_protocols() {
    let server = TestServer::start(Faults::default()).await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, _) = source_file(scratch.path(), "empty", 0);
    let client = client(quick_retries());
    let outcome = client
        .upload(&request(&path, server.tus(), 10), &|_| {})
        .await
        .unwrap();
    assert!(
        client
            .status(outcome.url.as_ref().unwrap())
            .await
            .unwrap()
            .is_complete()
    );
    let mut simple = request(&path, Url::parse(&server.base).unwrap(), 10);
    simple.protocol = Protocol::Simple;
    let outcome = client.upload(&simple, &|_| {}).await.unwrap();
    assert!(outcome.url.is_some());
}

#[tokio::test]
async fn downloads_resume_a_partial_file() {
    let server = TestServer::start(Faults::default()).await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "data.bin", 30_000);
    let client = client(quick_retries());
    let url = client
        .upload(&request(&path, server.tus(), 30_000), &|_| {})
        .await
        .unwrap()
        .url
        .unwrap();
    let output = scratch.path().join("copy.bin");
    std::fs::write(partial_path(&output), &bytes[..12_345]).unwrap();
    let outcome = client.download(&url, &output, &|_| {}).await.unwrap();
    assert_eq!(outcome.resumed_from, Some(12_345));
    assert_eq!(outcome.length, 30_000);
    assert_eq!(std::fs::read(&output).unwrap(), bytes);
    assert!(!partial_path(&output).exists());

    // A partial file longer than the upload is not a prefix of it: downloaded again.
    std::fs::write(partial_path(&output), vec![0; 40_000]).unwrap();
    client.download(&url, &output, &|_| {}).await.unwrap();
    assert_eq!(std::fs::read(&output).unwrap(), bytes);
    assert_eq!(client.suggested_file_name(&url).await.unwrap(), "data.bin");
}

// --- files sent in parts (tus concatenation)

const MIB: usize = 1 << 20;

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn in_parts(path: &Path, endpoint: Url, parts: u16, state: Option<&Path>) -> UploadRequest {
    let mut request = request(path, endpoint, 256 * 1024);
    request.parts = parts;
    request.state = state.map(StateStore::new);
    request
}

/// What the state directory remembers about `request`'s file.
fn remembered(request: &UploadRequest) -> Option<SavedUpload> {
    let source = Source::inspect(&request.path).unwrap();
    let fingerprint = Fingerprint::new(&source, request.endpoint.as_str(), "tus");
    request.state.as_ref()?.load(&fingerprint)
}

fn count(creations: &[String], kind: &str) -> usize {
    creations
        .iter()
        .filter(|concat| concat.starts_with(kind))
        .count()
}

#[tokio::test]
async fn a_file_in_four_parts_is_joined_by_the_server() {
    let server = TestServer::start(Faults::default()).await;
    // Failures on the way are each part's own to retry.
    server.fail_appends(&[503, 409]);
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "data.bin", 5 * MIB + 12_345);
    let client = client(quick_retries());
    let request = in_parts(&path, server.tus(), 4, None);
    let recorder = Recorder::default();
    let record = |event: &UploadEvent| recorder.record(event);
    let upload = client.upload(&request, &record);
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&upload);
    let outcome = upload.await.unwrap();

    assert_eq!(outcome.parts, 4);
    assert_eq!(outcome.retries, 2);
    let creations = server.creations();
    assert_eq!(creations.len(), 5, "{creations:?}");
    assert_eq!(count(&creations[..4], "partial"), 4, "{creations:?}");
    assert!(creations[4].starts_with("final;"), "{creations:?}");
    let events = recorder.0.lock().unwrap().clone();
    let part_urls = events.iter().find_map(|event| match event {
        UploadEvent::CreatedParts { urls } => Some(urls.clone()),
        _ => None,
    });
    let part_urls = part_urls.expect("the parts were announced");
    let listed: Vec<String> = part_urls.iter().map(Url::to_string).collect();
    assert_eq!(creations[4], format!("final;{}", listed.join(" ")));
    let url = outcome.url.clone().unwrap();
    assert!(
        events
            .iter()
            .any(|event| matches!(event, UploadEvent::Created { url: created } if *created == url))
    );
    // Progress is the file's: the sum over the parts, never going back, ending at the size.
    let totals: Vec<(u64, u64, u64)> = events
        .iter()
        .filter_map(|event| match event {
            UploadEvent::Progress(progress) => {
                Some((progress.sent, progress.confirmed, progress.total))
            }
            _ => None,
        })
        .collect();
    let size = bytes.len() as u64;
    assert!(
        totals.iter().all(|&(sent, confirmed, total)| {
            total == size && confirmed <= sent && sent <= size
        })
    );
    let confirmed = recorder.confirmed();
    assert!(confirmed.windows(2).all(|pair| pair[0] <= pair[1]));
    assert_eq!(confirmed.last(), Some(&size));

    let status = client.status(&url).await.unwrap();
    assert!(status.is_complete());
    assert_eq!(status.metadata.filename(), Some("data.bin"));
    let downloaded = download(&client, &url, scratch.path()).await;
    assert_eq!(sha256(&downloaded), sha256(&bytes));
}

#[tokio::test]
async fn small_files_are_sent_whole_even_when_parts_are_asked_for() {
    let server = TestServer::start(Faults::default()).await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "small.bin", MIB + 1);
    let client = client(quick_retries());
    let outcome = client
        .upload(&in_parts(&path, server.tus(), 4, None), &|_| {})
        .await
        .unwrap();
    assert_eq!(outcome.parts, 1);
    assert_eq!(server.creations(), [""]);
    let url = outcome.url.unwrap();
    assert_eq!(download(&client, &url, scratch.path()).await, bytes);
}

#[tokio::test]
async fn parts_are_refused_by_a_server_that_cannot_join_them() {
    let server = TestServer::start(Faults {
        hide_concatenation: true,
        ..Faults::default()
    })
    .await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, _) = source_file(scratch.path(), "data.bin", 4 * MIB);
    let error = client(quick_retries())
        .upload(&in_parts(&path, server.tus(), 4, None), &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Unsupported(_)), "{error}");
    assert!(error.to_string().contains("concatenation"), "{error}");
    assert!(server.creations().is_empty(), "nothing was created");

    let mut simple = in_parts(&path, Url::parse(&server.base).unwrap(), 4, None);
    simple.protocol = Protocol::Simple;
    let error = client(quick_retries())
        .upload(&simple, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Unsupported(_)), "{error}");
}

#[tokio::test]
async fn an_interrupted_split_upload_resumes_each_part_at_its_offset() {
    let server = TestServer::start(Faults::default()).await;
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let (path, bytes) = source_file(scratch.path(), "data.bin", 4 * MIB + 999);
    let mut request = in_parts(&path, server.tus(), 4, Some(&state));
    // Slow enough that the interruption comes mid-way.
    request.rate_limit = Some(8 * MIB as u64);
    let client = client(quick_retries());
    interrupt_after(&client, &request, MIB as u64).await;

    let saved = remembered(&request).expect("the parts are remembered");
    assert_eq!(saved.parts.len(), 4);
    assert_eq!(
        saved.url, None,
        "no final upload before the parts are complete"
    );
    let mut offsets = Vec::new();
    for part in &saved.parts {
        let status = client
            .status(&Url::parse(&part.url).unwrap())
            .await
            .unwrap();
        assert_eq!(status.length, Some(part.end - part.start));
        offsets.push(status.offset);
    }
    let stored: u64 = offsets.iter().sum();
    assert!(stored >= MIB as u64, "{offsets:?}");
    assert!(
        offsets.iter().all(|&offset| offset > 0),
        "every part was moving: {offsets:?}"
    );

    request.rate_limit = None;
    let recorder = Recorder::default();
    let outcome = client
        .upload(&request, &|event| recorder.record(event))
        .await
        .unwrap();
    let resumed_from = outcome.resumed_from.expect("resumed");
    assert!(resumed_from >= stored, "{resumed_from} < {stored}");
    let creations = server.creations();
    assert_eq!(
        count(&creations, "partial"),
        4,
        "no part made twice: {creations:?}"
    );
    assert_eq!(count(&creations, "final;"), 1, "{creations:?}");
    let events = recorder.0.lock().unwrap().clone();
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, UploadEvent::CreatedParts { .. })),
        "{events:?}"
    );
    let url = outcome.url.unwrap();
    assert_eq!(
        sha256(&download(&client, &url, scratch.path()).await),
        sha256(&bytes)
    );
    assert_eq!(remembered(&request), None, "a finished upload is forgotten");
}

#[tokio::test]
async fn a_rerun_after_the_final_upload_exists_only_checks_it() {
    let server = TestServer::start(Faults::default()).await;
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let (path, bytes) = source_file(scratch.path(), "data.bin", 3 * MIB);
    let request = in_parts(&path, server.tus(), 3, Some(&state));
    let client = client(quick_retries());
    // Stop as soon as the final upload is announced (it is remembered before that).
    let created = Notify::new();
    let watch = |event: &UploadEvent| {
        if matches!(event, UploadEvent::Created { .. }) {
            created.notify_one();
        }
    };
    tokio::select! {
        // The notification first: the upload is cut at its next await, before it finishes.
        biased;
        () = created.notified() => {}
        result = client.upload(&request, &watch) => panic!("not interrupted: {result:?}"),
    }
    let saved = remembered(&request).unwrap();
    let final_url = saved.url.expect("the final upload is remembered");

    let recorder = Recorder::default();
    let outcome = client
        .upload(&request, &|event| recorder.record(event))
        .await
        .unwrap();
    assert_eq!(
        outcome.url.as_ref().map(Url::as_str),
        Some(final_url.as_str())
    );
    assert_eq!(outcome.resumed_from, Some(bytes.len() as u64));
    assert_eq!(outcome.parts, 3);
    assert_eq!(server.creations().len(), 4, "nothing created again");
    let url = outcome.url.unwrap();
    assert_eq!(download(&client, &url, scratch.path()).await, bytes);
}

#[tokio::test]
async fn a_split_upload_with_a_part_gone_starts_over_cleanly() {
    let server = TestServer::start(Faults::default()).await;
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let (path, bytes) = source_file(scratch.path(), "data.bin", 4 * MIB);
    let mut request = in_parts(&path, server.tus(), 4, Some(&state));
    request.rate_limit = Some(8 * MIB as u64);
    let client = client(quick_retries());
    interrupt_after(&client, &request, 512 * 1024).await;
    let old: Vec<Url> = remembered(&request)
        .unwrap()
        .parts
        .iter()
        .map(|part| Url::parse(&part.url).unwrap())
        .collect();
    client.terminate(&old[2]).await.unwrap();

    request.rate_limit = None;
    let recorder = Recorder::default();
    let outcome = client
        .upload(&request, &|event| recorder.record(event))
        .await
        .unwrap();
    assert!(outcome.started_over);
    assert_eq!(outcome.resumed_from, None);
    let events = recorder.0.lock().unwrap().clone();
    assert!(
        events.iter().any(|event| matches!(
            event,
            UploadEvent::StartedOver { previous, .. } if *previous == old[2]
        )),
        "{events:?}"
    );
    assert_eq!(count(&server.creations(), "partial"), 8);
    // The parts left behind were deleted, not left to expire.
    for url in &old {
        let error = client.status(url).await.unwrap_err();
        assert!(matches!(error, ClientError::Gone { .. }), "{url}: {error}");
    }
    let url = outcome.url.unwrap();
    assert_eq!(
        sha256(&download(&client, &url, scratch.path()).await),
        sha256(&bytes)
    );
}
