//! The client's IETF draft protocol against the real resumable server (in-process, on
//! 127.0.0.1:0, memory store), behind a layer that records every request and can inject
//! failures or change the `Upload-Limit` the server announces.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use resumable_client::{
    Client, ClientConfig, ClientError, Protocol, RetryPolicy, StateStore, UploadEvent,
    UploadRequest, Url,
};
use resumable_core::{MemoryLocker, MemoryStore, ServiceConfig, SystemClock, UploadService};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// What the layer in front of the server does.
#[derive(Default)]
struct Layer {
    /// Every request that reached the layer: method, path, headers.
    seen: Mutex<Vec<(Method, String, HeaderMap)>>,
    /// Statuses answered, in order, instead of passing PATCHes on.
    appends: Mutex<VecDeque<StatusCode>>,
    /// A member added to every `Upload-Limit` the server sends.
    extra_limit: Option<&'static str>,
    /// Remove `Upload-Limit` from every answer, as a server that announces none would.
    hide_limits: bool,
}

async fn layer(State(layer): State<Arc<Layer>>, request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    layer
        .seen
        .lock()
        .unwrap()
        .push((method.clone(), path, request.headers().clone()));
    if method == Method::PATCH
        && let Some(status) = layer.appends.lock().unwrap().pop_front()
    {
        return (status, "injected").into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if layer.hide_limits {
        headers.remove("upload-limit");
    } else if let Some(extra) = layer.extra_limit
        && let Some(limit) = headers.get("upload-limit")
    {
        let value = format!("{}, {extra}", limit.to_str().unwrap());
        headers.insert("upload-limit", HeaderValue::from_str(&value).unwrap());
    }
    response
}

struct TestServer {
    base: String,
    layer: Arc<Layer>,
}

impl TestServer {
    async fn start(layer: Layer, config: ServiceConfig) -> Self {
        let service = Arc::new(UploadService::new(
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryLocker::new(Duration::from_secs(5))),
            Arc::new(SystemClock),
            config,
        ));
        let layer = Arc::new(layer);
        let app = resumable_server::app(service, resumable_server::ServerConfig::default()).layer(
            axum::middleware::from_fn_with_state(layer.clone(), self::layer),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestServer { base, layer }
    }

    async fn plain() -> Self {
        TestServer::start(Layer::default(), ServiceConfig::default()).await
    }

    fn endpoint(&self) -> Url {
        Url::parse(&format!("{}/files/", self.base)).unwrap()
    }

    /// The requests with `method`, in order.
    fn seen(&self, method: Method) -> Vec<HeaderMap> {
        let seen = self.layer.seen.lock().unwrap();
        seen.iter()
            .filter(|(seen, _, _)| *seen == method)
            .map(|(_, _, headers)| headers.clone())
            .collect()
    }

    fn methods(&self) -> Vec<Method> {
        let seen = self.layer.seen.lock().unwrap();
        seen.iter().map(|(method, _, _)| method.clone()).collect()
    }
}

fn client() -> Client {
    Client::new(ClientConfig {
        retry: RetryPolicy {
            first_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            give_up_after: Duration::from_secs(10),
        },
        progress_interval: Duration::from_millis(5),
        ..ClientConfig::default()
    })
    .unwrap()
}

fn source_file(dir: &Path, name: &str, length: usize) -> (PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..length)
        .map(|index| (index as u8).wrapping_mul(29) ^ (index >> 11) as u8)
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn ietf(path: &Path, endpoint: Url, chunk: u64) -> UploadRequest {
    let mut request = UploadRequest::new(path, endpoint);
    request.protocol = Protocol::Ietf;
    request.chunk_size = Some(chunk);
    request
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .to_str()
        .unwrap()
}

async fn download(client: &Client, url: &Url, dir: &Path) -> Vec<u8> {
    let path = dir.join("downloaded");
    let _ = std::fs::remove_file(&path);
    client.download(url, &path, &|_| {}).await.unwrap();
    std::fs::read(path).unwrap()
}

/// Uploads until the server confirmed at least `at_least` bytes, then drops the upload future,
/// as Ctrl-C does; the upload's URL.
async fn interrupt_after(client: &Client, request: &UploadRequest, at_least: u64) -> Url {
    let reached = Notify::new();
    let created = Mutex::new(None);
    let watch = |event: &UploadEvent| match event {
        UploadEvent::Created { url } => *created.lock().unwrap() = Some(url.clone()),
        UploadEvent::Progress(progress) if progress.confirmed >= at_least => reached.notify_one(),
        _ => {}
    };
    tokio::select! {
        result = client.upload(request, &watch) => panic!("finished before the interruption: {result:?}"),
        () = reached.notified() => {}
    }
    created
        .into_inner()
        .unwrap()
        .expect("the upload was created")
}

#[tokio::test]
async fn uploads_in_chunks_with_the_drafts_fields() {
    let server = TestServer::plain().await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "report 1.pdf", 100_000);
    let client = client();
    let outcome = client
        .upload(&ietf(&path, server.endpoint(), 16 * 1024), &|_| {})
        .await
        .unwrap();
    let url = outcome.url.unwrap();

    let methods = server.methods();
    assert_eq!(methods[..2], [Method::OPTIONS, Method::POST], "{methods:?}");
    for (method, _, headers) in server.layer.seen.lock().unwrap().iter() {
        assert_eq!(
            text(headers, "upload-draft-interop-version"),
            "8",
            "{method}"
        );
    }
    let creation = &server.seen(Method::POST)[0];
    assert_eq!(text(creation, "upload-complete"), "?0");
    assert_eq!(text(creation, "upload-length"), "100000");
    assert_eq!(text(creation, "content-type"), "application/octet-stream");
    assert_eq!(
        text(creation, "content-disposition"),
        "inline; filename=\"report 1.pdf\"; filename*=UTF-8''report%201.pdf"
    );
    let patches = server.seen(Method::PATCH);
    assert_eq!(patches.len(), 7, "100 000 bytes in 16 KiB chunks");
    for (index, patch) in patches.iter().enumerate() {
        let last = index == patches.len() - 1;
        assert_eq!(text(patch, "content-type"), "application/partial-upload");
        assert_eq!(
            text(patch, "upload-offset"),
            (index * 16 * 1024).to_string()
        );
        assert_eq!(
            text(patch, "upload-complete"),
            if last { "?1" } else { "?0" },
            "PATCH {index}"
        );
    }
    assert_eq!(download(&client, &url, scratch.path()).await, bytes);
    // The server took it as the draft's: the file name is the upload's tus metadata.
    let status = client.status(&url).await.unwrap();
    assert!(status.is_complete());
    assert_eq!(status.metadata.filename(), Some("report 1.pdf"));
    assert_eq!(
        status.metadata.get("filetype"),
        Some(&b"application/octet-stream"[..])
    );
}

#[tokio::test]
async fn offset_mismatches_busy_uploads_and_5xx_are_retried_from_the_heads_offset() {
    let server = TestServer::plain().await;
    server.layer.appends.lock().unwrap().extend([
        StatusCode::CONFLICT,
        StatusCode::LOCKED,
        StatusCode::BAD_GATEWAY,
    ]);
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "data.bin", 50_000);
    let client = client();
    let outcome = client
        .upload(&ietf(&path, server.endpoint(), 20_000), &|_| {})
        .await
        .unwrap();
    assert_eq!(outcome.retries, 3);
    // Each failure is followed by an offset retrieval.
    let methods = server.methods();
    let after_failures: Vec<_> = methods.iter().skip(2).take(6).cloned().collect();
    assert_eq!(
        after_failures,
        [
            Method::PATCH,
            Method::HEAD,
            Method::PATCH,
            Method::HEAD,
            Method::PATCH,
            Method::HEAD
        ],
        "{methods:?}"
    );
    let url = outcome.url.unwrap();
    assert_eq!(download(&client, &url, scratch.path()).await, bytes);
}

#[tokio::test]
async fn refusals_fail_at_once_with_the_problems_detail() {
    // The limit is not announced, so only the creation finds the file too large.
    let config = ServiceConfig {
        max_size: Some(1000),
        ..ServiceConfig::default()
    };
    let hidden = Layer {
        hide_limits: true,
        ..Layer::default()
    };
    let server = TestServer::start(hidden, config).await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, _) = source_file(scratch.path(), "big.bin", 2000);
    let error = client()
        .upload(&ietf(&path, server.endpoint(), 1000), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Status { status, .. } if status.as_u16() == 413),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        !message.contains("{"),
        "the detail, not the JSON: {message}"
    );
    assert!(message.contains("1000"), "{message}");
    assert_eq!(server.seen(Method::POST).len(), 1, "not retried");
}

#[tokio::test]
async fn a_file_over_the_announced_max_size_is_refused_before_anything_is_created() {
    let config = ServiceConfig {
        max_size: Some(1000),
        ..ServiceConfig::default()
    };
    let server = TestServer::start(Layer::default(), config).await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, _) = source_file(scratch.path(), "big.bin", 1001);
    let error = client()
        .upload(&ietf(&path, server.endpoint(), 1000), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ClientError::TooLarge {
                size: 1001,
                max_size: 1000,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(server.methods(), [Method::OPTIONS]);
    // A file that fits goes.
    let (small, _) = source_file(scratch.path(), "small.bin", 1000);
    client()
        .upload(&ietf(&small, server.endpoint(), 1000), &|_| {})
        .await
        .unwrap();
}

#[tokio::test]
async fn max_append_size_caps_the_chunks() {
    let capped = Layer {
        extra_limit: Some("max-append-size=3000"),
        ..Layer::default()
    };
    let server = TestServer::start(capped, ServiceConfig::default()).await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "data.bin", 10_000);
    let client = client();
    let mut request = ietf(&path, server.endpoint(), 1);
    // No chunk size of our own: the server's cap alone cuts the file.
    request.chunk_size = None;
    let outcome = client.upload(&request, &|_| {}).await.unwrap();
    let lengths: Vec<String> = server
        .seen(Method::PATCH)
        .iter()
        .map(|patch| text(patch, "content-length").to_owned())
        .collect();
    assert_eq!(lengths, ["3000", "3000", "3000", "1000"]);
    assert_eq!(
        download(&client, outcome.url.as_ref().unwrap(), scratch.path()).await,
        bytes
    );
}

#[tokio::test]
async fn a_remembered_upload_resumes_and_no_other_protocol_takes_it() {
    let server = TestServer::plain().await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "data.bin", 64 * 1024);
    let mut request = ietf(&path, server.endpoint(), 8 * 1024);
    request.state = Some(StateStore::new(scratch.path().join("state")));
    let client = client();
    let first = interrupt_after(&client, &request, 16 * 1024).await;

    // Same file, endpoint and state directory, but tus: a new upload, not the IETF one.
    let mut tus = request.clone();
    tus.protocol = Protocol::Tus;
    let other = client.upload(&tus, &|_| {}).await.unwrap();
    assert_eq!(other.resumed_from, None);
    assert_ne!(other.url.as_ref(), Some(&first));

    let created = Mutex::new(false);
    let outcome = client
        .upload(&request, &|event| {
            if matches!(event, UploadEvent::Created { .. }) {
                *created.lock().unwrap() = true;
            }
        })
        .await
        .unwrap();
    let resumed_from = outcome.resumed_from.expect("resumed");
    assert!(resumed_from >= 16 * 1024, "resumed from {resumed_from}");
    assert!(!*created.lock().unwrap(), "a second upload was created");
    assert_eq!(outcome.url.as_ref(), Some(&first));
    // It went on from the offset the HEAD gave: no PATCH was refused (409) on the way.
    assert_eq!(outcome.retries, 0, "{outcome:?}");
    let heads = server.seen(Method::HEAD);
    assert_eq!(
        text(heads.last().unwrap(), "upload-draft-interop-version"),
        "8"
    );
    let resumed_at = resumed_from.to_string();
    let at_resumed = |patch: &HeaderMap| {
        patch
            .get("upload-offset")
            .is_some_and(|offset| offset == resumed_at.as_str())
    };
    assert!(
        server.seen(Method::PATCH).iter().any(at_resumed),
        "no PATCH at the offset it resumed from"
    );
    assert_eq!(download(&client, &first, scratch.path()).await, bytes);
}

#[tokio::test]
async fn a_cancelled_upload_is_gone_and_a_rerun_starts_over() {
    let server = TestServer::plain().await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, bytes) = source_file(scratch.path(), "data.bin", 64 * 1024);
    let mut request = ietf(&path, server.endpoint(), 8 * 1024);
    request.state = Some(StateStore::new(scratch.path().join("state")));
    let client = client();
    let first = interrupt_after(&client, &request, 8 * 1024).await;
    client.cancel(&first).await.unwrap();
    let gone = client.cancel(&first).await.unwrap_err();
    assert!(matches!(gone, ClientError::Gone { .. }), "{gone}");

    let outcome = client.upload(&request, &|_| {}).await.unwrap();
    assert!(outcome.started_over);
    assert_ne!(outcome.url.as_ref(), Some(&first));
    assert_eq!(
        download(&client, outcome.url.as_ref().unwrap(), scratch.path()).await,
        bytes
    );
}

#[tokio::test]
async fn empty_files_are_complete_at_creation() {
    let server = TestServer::plain().await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, _) = source_file(scratch.path(), "empty", 0);
    let client = client();
    let outcome = client
        .upload(&ietf(&path, server.endpoint(), 10), &|_| {})
        .await
        .unwrap();
    assert!(
        client
            .status(outcome.url.as_ref().unwrap())
            .await
            .unwrap()
            .is_complete()
    );
    assert!(server.seen(Method::PATCH).is_empty());
}

#[tokio::test]
async fn parts_and_checksums_are_tus_only() {
    let server = TestServer::plain().await;
    let scratch = tempfile::tempdir().unwrap();
    let (path, _) = source_file(scratch.path(), "data.bin", 3 << 20);
    let mut parts = ietf(&path, server.endpoint(), 1 << 20);
    parts.parts = 3;
    let error = client().upload(&parts, &|_| {}).await.unwrap_err();
    assert!(matches!(error, ClientError::Unsupported(_)), "{error}");
    let mut checksum = ietf(&path, server.endpoint(), 1 << 20);
    checksum.checksum = Some(resumable_client::ChecksumAlgorithm::Sha256);
    let error = client().upload(&checksum, &|_| {}).await.unwrap_err();
    assert!(matches!(error, ClientError::Unsupported(_)), "{error}");
    assert!(server.methods().is_empty(), "{:?}", server.methods());
}
