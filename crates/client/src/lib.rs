//! A resumable upload client: tus 1.0.0, the IETF draft "Resumable Uploads for HTTP" (interop
//! version 8) and the seed's simple protocol, for files of any size over connections that fail.
//!
//! An upload streams the file from disk (memory does not grow with the file or the chunk size),
//! in chunks of a chosen size. After any failure (refused or reset connection, stalled transfer,
//! `5xx`, `409`, `423`) it waits with exponential backoff and jitter, asks the server how many
//! bytes it stored (`HEAD`), and continues from there, until the upload is complete or nothing
//! moved for [`RetryPolicy::give_up_after`]. With a [`StateStore`], the upload URL is remembered
//! as soon as the upload exists, so a later process (after Ctrl-C, `kill -9`, a reboot or a server
//! restart) continues the same upload instead of starting over. With [`UploadRequest::parts`], a
//! file goes up as several partial uploads at once, which the server joins (tus concatenation);
//! each part resumes on its own.
//!
//! # Example
//!
//! ```
//! use resumable_client::{Client, ClientConfig, StateStore, UploadEvent, UploadRequest};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::sync::Arc;
//! # let service = Arc::new(resumable_core::UploadService::new(
//! #     Arc::new(resumable_core::MemoryStore::default()),
//! #     Arc::new(resumable_core::MemoryLocker::new(std::time::Duration::from_secs(5))),
//! #     Arc::new(resumable_core::SystemClock),
//! #     resumable_core::ServiceConfig::default(),
//! # ));
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let server = format!("http://{}", listener.local_addr()?);
//! # let config = resumable_server::ServerConfig::default();
//! # tokio::spawn(resumable_server::run(listener, service, config, std::future::pending()));
//! # let scratch = tempfile::tempdir()?;
//! # let path = scratch.path().join("video.mp4");
//! # std::fs::write(&path, vec![7u8; 100_000])?;
//! # let endpoint = format!("{server}/files/");
//! # let state_dir = scratch.path().join("state");
//! let client = Client::new(ClientConfig::default())?;
//!
//! let mut request = UploadRequest::new(&path, endpoint.parse()?);
//! request.chunk_size = Some(64 * 1024);
//! request.state = Some(StateStore::new(&state_dir)); // resume across runs
//!
//! let outcome = client
//!     .upload(&request, &|event| {
//!         if let UploadEvent::Progress(progress) = event {
//!             println!("{} of {} bytes stored", progress.confirmed, progress.total);
//!         }
//!     })
//!     .await?;
//! let url = outcome.url.expect("tus uploads have a URL");
//! println!("uploaded to {url}");
//!
//! let status = client.status(&url).await?;
//! assert!(status.is_complete());
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`upload`](Client::upload): the resume-from-anywhere loop (`upload` module), over one-request
//!   functions in `tus`, `ietf` and `simple` that never retry by themselves; `upload::split` runs
//!   that loop once per part of a file sent in parts, then creates the final upload;
//!   `upload::ietf` is the loop of the IETF draft (its `Upload-Limit` obeyed).
//! - [`download`](Client::download): downloads that resume a partial file with `Range`.
//! - [`StateStore`]: remembered uploads, keyed by a [`Fingerprint`] of the file and endpoint.
//! - [`RetryPolicy`]: backoff with jitter, and when to give up.
//! - [`ChecksumAlgorithm`]: per-chunk `Upload-Checksum` (opt-in; refused when the server does not
//!   advertise the checksum extension).
//! - `body`: a file range as a bounded, optionally rate-limited request body.
//! - [`ClientError`]: every failure, and (internally) which ones are retried.

mod body;
mod checksum;
mod download;
mod error;
mod http;
mod ietf;
mod retry;
mod simple;
mod state;
mod tus;
mod upload;

pub use download::{DownloadEvent, DownloadOutcome, partial_path};
pub use error::ClientError;
pub use resumable_proto::checksum::{ChecksumAlgorithm, UnknownAlgorithm};
pub use retry::RetryPolicy;
pub use simple::file_id as simple_file_id;
pub use state::{Fingerprint, SavedPart, SavedUpload, Source, StateStore, UploadLock};
pub use tus::{Capabilities, RemoteStatus};
pub use upload::{
    DEFAULT_CHUNK_SIZE, EventSink, MIN_PART_SIZE, Progress, Protocol, UploadEvent, UploadOutcome,
    UploadRequest,
};

pub use reqwest::Url;
pub use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
pub use resumable_proto::Metadata;

use std::time::Duration;

/// How a [`Client`] talks to servers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent with every request (e.g. `Authorization`).
    pub headers: HeaderMap,
    /// Backoff between attempts, and when to give up.
    pub retry: RetryPolicy,
    /// A request whose body (or answer) moves no byte for this long is abandoned and retried.
    pub stall_timeout: Duration,
    /// How long a connection may take to open.
    pub connect_timeout: Duration,
    /// How often [`UploadEvent::Progress`] reports bytes sent during a request.
    pub progress_interval: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            headers: HeaderMap::new(),
            retry: RetryPolicy::default(),
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            progress_interval: Duration::from_millis(100),
        }
    }
}

/// A client for resumable upload servers. Cheap to share: one connection pool for every upload.
#[derive(Debug, Clone)]
pub struct Client {
    http: http::Http,
    config: ClientConfig,
}

impl Client {
    /// A client with `config`.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let http = http::Http::new(config.headers.clone(), config.connect_timeout)?;
        Ok(Client { http, config })
    }

    /// What the tus server at `endpoint` supports (`OPTIONS`).
    pub async fn capabilities(&self, endpoint: &Url) -> Result<Capabilities, ClientError> {
        tus::capabilities(&self.http, endpoint).await
    }

    /// Where the tus upload at `url` stands (`HEAD`).
    pub async fn status(&self, url: &Url) -> Result<RemoteStatus, ClientError> {
        tus::status(&self.http, url).await
    }

    /// Deletes the tus upload at `url` (termination extension).
    pub async fn terminate(&self, url: &Url) -> Result<(), ClientError> {
        tus::terminate(&self.http, url).await
    }

    /// Cancels the IETF draft upload at `url` (`DELETE` with `Upload-Draft-Interop-Version`).
    pub async fn cancel(&self, url: &Url) -> Result<(), ClientError> {
        ietf::cancel(&self.http, url).await
    }
}
