//! A real server on 127.0.0.1:0 over a fresh disk store, and the clients tests need.

#![allow(dead_code, unreachable_pub)]

pub mod ietf;

use resumable_core::{ManualClock, MemoryLocker, ServiceConfig, UploadService};
use resumable_fs::{FileStore, FileStoreConfig};
use resumable_server::ServerConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

pub const MAX_SIZE: u64 = 1 << 20;

/// The settings tests use unless they say otherwise.
pub fn config() -> ServiceConfig {
    ServiceConfig {
        max_size: Some(MAX_SIZE),
        body_idle_timeout: Duration::from_secs(10),
        expire_after: Some(Duration::from_secs(24 * 60 * 60)),
        ..ServiceConfig::default()
    }
}

pub struct TestServer {
    pub address: SocketAddr,
    /// The store's root: a temporary directory, removed when the server is dropped.
    pub data_dir: PathBuf,
    /// Holds `data_dir`: every test would otherwise leave one behind under `target/tmp`.
    /// `None` once `shutdown` handed it over.
    data: Option<tempfile::TempDir>,
    pub client: reqwest::Client,
    /// The server's clock: real time plus whatever a test advances it by.
    pub clock: Arc<ManualClock>,
    /// The server's upload service, for what has no HTTP route (the expiry sweep).
    pub service: Arc<UploadService>,
    /// The server's upload locks: `try_lock` tells when a request has let go of an upload
    /// without taking it over, as every request of the server's own would.
    pub locker: Arc<MemoryLocker>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(config()).await
    }

    pub async fn start_with(config: ServiceConfig) -> Self {
        Self::start_full(config, ServerConfig::default()).await
    }

    pub async fn start_full(config: ServiceConfig, server_config: ServerConfig) -> Self {
        // Under the target dir, as before, rather than /tmp (often tmpfs): the store's direct
        // I/O is exercised on the disk the build runs on.
        let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("server");
        std::fs::create_dir_all(&parent).expect("server dir");
        let data = tempfile::Builder::new()
            .prefix("data-")
            .tempdir_in(parent)
            .expect("data dir");
        let data_dir = data.path().to_path_buf();
        let clock = Arc::new(ManualClock::default());
        let store = FileStore::open(FileStoreConfig {
            root: data_dir.clone(),
            lock_timeout: Duration::from_secs(5),
            clock: clock.clone(),
            direct_io: true,
        })
        .await
        .expect("open store");
        let locker = Arc::new(MemoryLocker::new(Duration::from_secs(5)));
        let service = UploadService::new(Arc::new(store), locker.clone(), clock.clone(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let service = Arc::new(service);
        let task = tokio::spawn(resumable_server::run(
            listener,
            service.clone(),
            server_config,
            async {
                let _ = stopped.await;
            },
        ));
        TestServer {
            address,
            data_dir,
            data: Some(data),
            client: reqwest::Client::new(),
            clock,
            service,
            locker,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Stops the server and waits until it has returned. The data dir stays until the
    /// returned guard drops, for a test to inspect what the server left.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
        self.data.take().expect("the data dir")
    }

    /// Sends a request head and the first part of its body, and leaves the connection open.
    pub async fn send_partial(&self, head: &str, body: &[u8]) -> TcpStream {
        let mut stream = TcpStream::connect(self.address).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream.write_all(body).await.expect("write body");
        stream.flush().await.expect("flush");
        stream
    }

    /// Sends a whole raw request and returns the raw response head (status line and headers).
    pub async fn raw(&self, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(self.address).await.expect("connect");
        stream.write_all(request).await.expect("write");
        read_response_head(&mut stream).await
    }

    /// Polls `probe` until it returns `Some`, for at most five seconds.
    pub async fn eventually<T, F, Fut>(&self, probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        eventually_within(Duration::from_secs(5), probe).await
    }
}

/// Polls `probe` until it returns `Some`, failing the test after `limit`: for what waits on a
/// timer of the server's own (a sweep), which a loaded machine runs late.
pub async fn eventually_within<T, F, Fut>(limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl TestServer {
    /// Bytes in the data dir's upload files, to prove rejections wrote nothing.
    pub fn stored_bytes(&self) -> u64 {
        self.bytes_in("bin")
    }

    /// Bytes in the data dir's files with this extension (`staged`: checksummed chunks set
    /// aside until verified).
    pub fn bytes_in(&self, extension: &str) -> u64 {
        let uploads = self.data_dir.join("uploads");
        std::fs::read_dir(uploads)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|entry| entry.path().extension().is_some_and(|ext| ext == extension))
                    .map(|entry| entry.metadata().map(|meta| meta.len()).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl TestServer {
    /// Waits until no request holds upload `id`, asking none to stop (a request of the
    /// server's, even a HEAD, would take the upload over).
    pub async fn released(&self, id: &str) {
        use resumable_core::Locker;
        self.eventually(|| async {
            let free = self.locker.try_lock(id).await.expect("try_lock");
            free.map(drop)
        })
        .await;
    }

    /// The ids of the uploads in the data dir (from their info files).
    pub fn upload_ids(&self) -> Vec<String> {
        std::fs::read_dir(self.data_dir.join("uploads"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "info"))
                    .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many uploads the data dir holds (info files), to prove a rejection created none.
    pub fn upload_count(&self) -> usize {
        std::fs::read_dir(self.data_dir.join("uploads"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "info"))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for TestServer {
    /// Removes the data dir while the server may still be at work in it (a test ends with
    /// requests in flight): a file created during one removal makes it fail, so try again;
    /// once the directory is gone, new files cannot be created in it.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if self.data.is_none() {
            return;
        }
        for _ in 0..50 {
            match std::fs::remove_dir_all(&self.data_dir) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => continue,
                _ => break,
            }
        }
    }
}

/// A body sent chunked (no `Content-Length`), in these pieces.
pub fn chunked(pieces: &[&'static [u8]]) -> reqwest::Body {
    let pieces: Vec<Result<&'static [u8], std::io::Error>> =
        pieces.iter().map(|p| Ok(*p)).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
}

/// Deterministic test bytes.
pub fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|index| (index as u8).wrapping_mul(97).wrapping_add(seed) ^ (index >> 8) as u8)
        .collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub const OCTETS: &str = "application/offset+octet-stream";

/// A tus request (with `Tus-Resumable: 1.0.0`) to `path`.
pub fn tus(server: &TestServer, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    server
        .client
        .request(method, server.url(path))
        .header("Tus-Resumable", "1.0.0")
}

/// The path (`/files/{id}`) of a creation response's `Location`.
pub fn path_of(response: &reqwest::Response) -> String {
    let location = response.headers()["location"]
        .to_str()
        .expect("ASCII location");
    location[location.find("/files/").expect("an upload URL")..].to_owned()
}

/// A plain `OPTIONS /files/`: what the server advertises.
pub async fn options(server: &TestServer) -> reqwest::Response {
    server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/files/"))
        .send()
        .await
        .expect("OPTIONS")
}

pub async fn head(server: &TestServer, path: &str) -> reqwest::Response {
    tus(server, reqwest::Method::HEAD, path)
        .send()
        .await
        .expect("HEAD")
}

/// `Upload-Offset` of a HEAD that must succeed.
pub async fn offset(server: &TestServer, path: &str) -> u64 {
    let response = head(server, path).await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.headers()["upload-offset"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("a number")
}

/// The bytes of a finished upload.
pub async fn download(server: &TestServer, path: &str) -> Vec<u8> {
    let response = server
        .client
        .get(server.url(path))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.bytes().await.expect("body").to_vec()
}

/// Reads a raw response head (status line and headers) from `stream`: what arrived before the
/// connection closed or five seconds passed, if the head did not end by then.
pub async fn read_response_head(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut response = Vec::new();
    let read_head = async {
        let mut buffer = [0u8; 4096];
        while !response.windows(4).any(|window| window == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => response.extend_from_slice(&buffer[..read]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read_head).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// The head of a raw tus PATCH at offset 0 announcing `content_length` body bytes, with any
/// `extra` header lines (each ending in `\r\n`); tests send part of the body after it.
pub fn patch_head(path: &str, content_length: usize, extra: &str) -> String {
    format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: {OCTETS}\r\n{extra}Content-Length: {content_length}\r\n\r\n"
    )
}
