//! Uploading one file so that nothing stops it for good: resume a remembered upload or create
//! one, send chunks, and after any failure wait, ask the server what it has, and continue from
//! there. A file sent in parts (`split`) runs one such loop per part; the IETF draft has its
//! own loop (`ietf`).

mod ietf;
mod split;

pub use split::MIN_PART_SIZE;

use crate::ChecksumAlgorithm;
use crate::body::{SentCounter, file_range};
use crate::checksum::upload_checksum;
use crate::error::Recovery;
use crate::retry::Backoff;
use crate::state::{Fingerprint, SavedPart, SavedUpload, Source, StateStore, UploadLock, unix_now};
use crate::{Client, ClientError, simple, tus};
use reqwest::Url;
use resumable_proto::Metadata;
use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The protocol an upload speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// tus 1.0.0: the endpoint is the creation URL (e.g. `http://host:8080/files/`).
    #[default]
    Tus,
    /// The seed's simple protocol: the endpoint is the base URL `status` and `upload` are
    /// relative to (e.g. `http://host:8080/`).
    Simple,
    /// The IETF draft "Resumable Uploads for HTTP" (interop version 8): the endpoint is where
    /// uploads are created (e.g. `http://host:8080/files/`).
    Ietf,
}

impl Protocol {
    /// `tus`, `simple` or `ietf`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tus => "tus",
            Protocol::Simple => "simple",
            Protocol::Ietf => "ietf",
        }
    }
}

/// What to upload, where, and how.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    /// The local file.
    pub path: PathBuf,
    /// Where uploads are created (see [`Protocol`]).
    pub endpoint: Url,
    /// The protocol.
    pub protocol: Protocol,
    /// The most bytes one request carries; `None` sends the rest of the file in one request.
    pub chunk_size: Option<u64>,
    /// Metadata of the new upload (tus). `filename` is added from the path unless present.
    pub metadata: Metadata,
    /// Send `Upload-Checksum` with each chunk (tus checksum extension; refused when the server
    /// does not advertise it, and with the IETF draft).
    pub checksum: Option<ChecksumAlgorithm>,
    /// Send no faster than this many bytes per second (the parts of a file share it).
    pub rate_limit: Option<u64>,
    /// Where uploads are remembered across runs; `None` always starts a new upload (tus).
    pub state: Option<StateStore>,
    /// Send the file as this many partial uploads at once, which the server joins into the final
    /// upload (tus concatenation; refused with [`ClientError::Unsupported`] when the server does
    /// not advertise it, and with the other protocols). Each part is at least [`MIN_PART_SIZE`], so a smaller file uses fewer
    /// parts and one under twice that size is sent whole. `1`, the default, sends every file
    /// whole. A remembered upload continues the way it started, whatever this says now.
    pub parts: u16,
}

impl UploadRequest {
    /// A tus upload of `path` to `endpoint` in 32 MiB chunks, without resume state.
    pub fn new(path: impl Into<PathBuf>, endpoint: Url) -> Self {
        UploadRequest {
            path: path.into(),
            endpoint,
            protocol: Protocol::Tus,
            chunk_size: Some(DEFAULT_CHUNK_SIZE),
            metadata: Metadata::default(),
            checksum: None,
            rate_limit: None,
            state: None,
            parts: 1,
        }
    }
}

/// The default chunk size: big enough that per-request costs (a round trip, the server's
/// fdatasync) vanish, small enough that confirmed progress moves often.
pub const DEFAULT_CHUNK_SIZE: u64 = 32 << 20;

/// Bytes of one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes handed to the connection (including what the server already had).
    pub sent: u64,
    /// Bytes the server confirmed it stored.
    pub confirmed: u64,
    /// The file's size.
    pub total: u64,
}

/// What happens during an upload, in order, for progress displays and logs.
#[derive(Debug, Clone)]
pub enum UploadEvent {
    /// A new upload exists at `url`; it is remembered from now on.
    Created {
        /// The upload URL.
        url: Url,
    },
    /// An earlier upload of this file continues from the server's offset.
    Resumed {
        /// The upload URL (tus); `None` for the simple protocol, which knows only a file id, and
        /// for a file sent in parts whose final upload does not exist yet.
        url: Option<Url>,
        /// Bytes the server already had (over all parts of a file sent in parts).
        offset: u64,
    },
    /// The partial uploads of a file sent in parts exist, in file order; they are remembered
    /// from now on. Once all are complete, the final upload that joins them is announced with
    /// [`UploadEvent::Created`].
    CreatedParts {
        /// The partial uploads' URLs.
        urls: Vec<Url>,
    },
    /// A remembered upload no longer exists on the server; a new one starts.
    StartedOver {
        /// The remembered URL (of a file sent in parts: the part that is gone).
        previous: Url,
        /// What the server said.
        reason: String,
    },
    /// Bytes moved.
    Progress(Progress),
    /// An attempt failed; the next starts after `delay`.
    Retrying {
        /// Failed attempts since the last progress (1 for the first retry).
        attempt: u32,
        /// The wait before the next attempt.
        delay: Duration,
        /// What failed.
        error: String,
    },
    /// Every byte is stored.
    Completed {
        /// The upload URL, when the server told one.
        url: Option<Url>,
    },
}

/// Receives [`UploadEvent`]s. Called from the uploading task; keep it quick.
pub type EventSink<'a> = &'a (dyn Fn(&UploadEvent) + Send + Sync);

/// How an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOutcome {
    /// The upload URL (always for tus; for the simple protocol when the server sent `Location`).
    pub url: Option<Url>,
    /// The file's size.
    pub size: u64,
    /// The server's offset when an earlier upload was resumed.
    pub resumed_from: Option<u64>,
    /// A remembered upload was gone and a new one was made.
    pub started_over: bool,
    /// Attempts that failed and were retried (over all parts).
    pub retries: u32,
    /// How many partial uploads carried the file (tus concatenation); 1 when it was sent whole.
    pub parts: u16,
}

/// The state of one upload while it runs: of a whole file, or of one part of a file sent in
/// parts.
struct Session<'a> {
    client: &'a Client,
    request: &'a UploadRequest,
    source: Source,
    /// The bytes of the file this session sends; its offsets count from their start.
    range: Range<u64>,
    /// Bytes per second for this session's requests.
    rate_limit: Option<u64>,
    /// The most content one request may carry, when the server says (the IETF draft's
    /// `Upload-Limit: max-append-size`): caps the chunk size.
    max_append: Option<u64>,
    events: EventSink<'a>,
    backoff: Backoff,
    outcome: UploadOutcome,
}

/// Why a remembered upload is not continued: the URL it had, and what the server said.
struct StartOver {
    previous: Url,
    reason: ClientError,
}

/// A step that either yields its value or finds that the upload must start over.
type Attempt<T> = Result<T, StartOver>;

impl Client {
    /// Uploads one file, resuming where the server stands after any failure, until every byte is
    /// stored or an error is final (see [`ClientError`]; retrying stops after
    /// [`crate::RetryPolicy::give_up_after`] without progress).
    ///
    /// Dropping the future at any point (Ctrl-C) is safe: the upload URL is remembered as soon as
    /// the upload exists, the server keeps what arrived, and the next call with the same request
    /// continues from the server's offset.
    pub async fn upload(
        &self,
        request: &UploadRequest,
        events: EventSink<'_>,
    ) -> Result<UploadOutcome, ClientError> {
        let source = Source::inspect(&request.path)?;
        let whole = 0..source.size;
        let mut session = Session::new(self, request, source, whole, request.rate_limit, events);
        match request.protocol {
            Protocol::Tus => session.tus().await?,
            Protocol::Simple if request.parts > 1 => {
                return Err(ClientError::Unsupported(
                    "the simple protocol cannot send a file in parts (that takes tus \
                     concatenation)"
                        .into(),
                ));
            }
            Protocol::Simple => session.simple().await?,
            Protocol::Ietf if request.parts > 1 => {
                return Err(ClientError::Unsupported(
                    "the IETF draft protocol cannot send a file in parts (that takes tus \
                     concatenation)"
                        .into(),
                ));
            }
            Protocol::Ietf => session.ietf().await?,
        }
        Ok(session.outcome)
    }
}

impl<'a> Session<'a> {
    fn new(
        client: &'a Client,
        request: &'a UploadRequest,
        source: Source,
        range: Range<u64>,
        rate_limit: Option<u64>,
        events: EventSink<'a>,
    ) -> Self {
        Session {
            client,
            request,
            outcome: UploadOutcome {
                url: None,
                size: source.size,
                resumed_from: None,
                started_over: false,
                retries: 0,
                parts: 1,
            },
            source,
            range,
            rate_limit,
            max_append: None,
            events,
            backoff: Backoff::new(client.config.retry),
        }
    }
}

impl Session<'_> {
    fn emit(&self, event: UploadEvent) {
        (self.events)(&event);
    }

    /// Bytes this session sends.
    fn length(&self) -> u64 {
        self.range.end - self.range.start
    }

    fn progress(&self, sent: u64, confirmed: u64) {
        self.emit(UploadEvent::Progress(Progress {
            sent,
            confirmed,
            total: self.length(),
        }));
    }

    /// The fingerprint and lock of this file, when uploads are remembered.
    fn remember(&self) -> Result<Option<(Fingerprint, UploadLock)>, ClientError> {
        let Some(state) = &self.request.state else {
            return Ok(None);
        };
        let fingerprint = Fingerprint::new(
            &self.source,
            self.request.endpoint.as_str(),
            self.request.protocol.name(),
        );
        let lock = state.lock(&fingerprint, &self.source.path)?;
        Ok(Some((fingerprint, lock)))
    }

    /// The remembered upload of `fingerprint`, unless it was made with another protocol.
    fn load(&self, fingerprint: Option<&Fingerprint>) -> Option<SavedUpload> {
        let state = self.request.state.as_ref()?;
        let protocol = self.request.protocol.name();
        state.load(fingerprint?).filter(|saved| {
            saved
                .protocol
                .as_deref()
                .is_none_or(|name| name == protocol)
        })
    }

    /// Waits before the next attempt after `error`, or gives up.
    async fn pause(&mut self, error: ClientError) -> Result<(), ClientError> {
        let Some(delay) = self.backoff.next_delay() else {
            return Err(ClientError::GaveUp {
                after: self.backoff.stuck_for(),
                last: Box::new(error),
            });
        };
        self.outcome.retries += 1;
        tracing::debug!(%error, ?delay, "retrying");
        self.emit(UploadEvent::Retrying {
            attempt: self.backoff.attempt(),
            delay,
            error: error.to_string(),
        });
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Runs `operation` until it succeeds, pausing after each retryable failure.
    async fn retrying<T, F>(&mut self, mut operation: impl FnMut() -> F) -> Result<T, ClientError>
    where
        F: Future<Output = Result<T, ClientError>>,
    {
        loop {
            match operation().await {
                Ok(value) => return Ok(value),
                Err(error) if error.recovery() == Recovery::Retry => self.pause(error).await?,
                Err(error) => return Err(error),
            }
        }
    }

    /// Runs a request that streams a body, reporting progress as the body goes out and failing
    /// with [`ClientError::Stalled`] when nothing moves for the stall timeout.
    async fn watch<T>(
        &self,
        method: &'static str,
        url: &Url,
        confirmed: u64,
        sent: &SentCounter,
        request: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let config = &self.client.config;
        let mut ticker = tokio::time::interval(config.progress_interval);
        let mut last_sent = 0;
        let mut last_move = Instant::now();
        tokio::pin!(request);
        loop {
            tokio::select! {
                result = &mut request => return result,
                _ = ticker.tick() => {
                    let now = sent.get();
                    if now != last_sent {
                        last_sent = now;
                        last_move = Instant::now();
                        self.progress(confirmed + now, confirmed);
                    } else if last_move.elapsed() > config.stall_timeout {
                        return Err(ClientError::Stalled {
                            method,
                            url: url.to_string(),
                            after: config.stall_timeout,
                        });
                    }
                }
            }
        }
    }

    /// The next chunk from `offset`, as offsets of this session: at most the chunk size and
    /// what the server takes in one request.
    fn chunk(&self, offset: u64) -> Range<u64> {
        let length = self.length();
        let most = match (self.request.chunk_size, self.max_append) {
            (Some(chunk), Some(server)) => Some(chunk.min(server)),
            (chunk, server) => chunk.or(server),
        };
        let end = match most {
            Some(chunk) => offset.saturating_add(chunk.max(1)).min(length),
            None => length,
        };
        offset..end
    }

    /// The bytes of the file at `offsets` of this session.
    fn in_file(&self, offsets: &Range<u64>) -> Range<u64> {
        self.range.start + offsets.start..self.range.start + offsets.end
    }

    /// Records a new server offset.
    fn confirmed(&mut self, previous: u64, offset: u64) {
        if offset > previous {
            self.backoff.progressed();
        }
        self.progress(offset, offset);
    }

    // --- tus

    async fn tus(&mut self) -> Result<(), ClientError> {
        if let Some(algorithm) = self.request.checksum {
            self.check_checksum_support(algorithm).await?;
        }
        let remembered = self.remember()?;
        let fingerprint = remembered.as_ref().map(|(fingerprint, _lock)| fingerprint);
        let mut saved = self.load(fingerprint);
        let url = loop {
            // A remembered upload goes on as it started; a new one follows the request.
            let attempt = match saved.take() {
                Some(saved) if saved.is_split() => self.split(fingerprint, Some(saved)).await?,
                None if self.planned_parts() > 1 => self.split(fingerprint, None).await?,
                saved => self.whole(fingerprint, saved).await?,
            };
            match attempt {
                Ok(url) => break url,
                Err(start_over) => self.start_over(fingerprint, start_over)?,
            }
        };
        self.finish(remembered)?;
        self.outcome.url = Some(url.clone());
        self.emit(UploadEvent::Completed { url: Some(url) });
        Ok(())
    }

    async fn check_checksum_support(
        &mut self,
        algorithm: ChecksumAlgorithm,
    ) -> Result<(), ClientError> {
        let http = &self.client.http;
        let endpoint = &self.request.endpoint;
        let capabilities = self.retrying(|| tus::capabilities(http, endpoint)).await?;
        capabilities.check_checksum(endpoint, algorithm)
    }

    /// The file as one upload: the remembered one from the server's offset, or a new one.
    async fn whole(
        &mut self,
        fingerprint: Option<&Fingerprint>,
        saved: Option<SavedUpload>,
    ) -> Result<Attempt<Url>, ClientError> {
        self.outcome.parts = 1;
        let remembered = saved
            .and_then(|saved| saved.url)
            .and_then(|url| Url::parse(&url).ok());
        let (url, offset) = match remembered {
            Some(url) => match self.offset_of(&url).await? {
                Ok(offset) => {
                    self.resumed(Some(url.clone()), offset);
                    (url, offset)
                }
                Err(start_over) => return Ok(Err(start_over)),
            },
            None => (self.create_tus(fingerprint).await?, 0),
        };
        match self.send_tus(&url, offset).await {
            Ok(()) => Ok(Ok(url)),
            Err(reason @ ClientError::Gone { .. }) if !self.outcome.started_over => {
                Ok(Err(StartOver {
                    previous: url,
                    reason,
                }))
            }
            Err(error) => Err(error),
        }
    }

    /// The server's offset of the remembered upload at `url`, which must carry this session's
    /// bytes.
    async fn offset_of(&mut self, url: &Url) -> Result<Attempt<u64>, ClientError> {
        let http = &self.client.http;
        match self.retrying(|| tus::status(http, url)).await {
            Ok(status) if status.length == Some(self.length()) => Ok(Ok(status.offset)),
            Ok(status) => Ok(Err(StartOver {
                previous: url.clone(),
                reason: ClientError::Protocol {
                    url: url.to_string(),
                    reason: format!("its length is {:?}, not {}", status.length, self.length()),
                },
            })),
            Err(reason @ ClientError::Gone { .. }) => Ok(Err(StartOver {
                previous: url.clone(),
                reason,
            })),
            Err(error) => Err(error),
        }
    }

    /// An earlier upload continues with `offset` bytes on the server.
    fn resumed(&mut self, url: Option<Url>, offset: u64) {
        self.outcome.resumed_from = Some(offset);
        self.emit(UploadEvent::Resumed { url, offset });
        self.progress(offset, offset);
    }

    fn start_over(
        &mut self,
        fingerprint: Option<&Fingerprint>,
        start_over: StartOver,
    ) -> Result<(), ClientError> {
        self.forget(fingerprint)?;
        self.outcome.started_over = true;
        self.outcome.resumed_from = None;
        self.emit(UploadEvent::StartedOver {
            previous: start_over.previous,
            reason: start_over.reason.to_string(),
        });
        Ok(())
    }

    /// Done: nothing to remember any more.
    fn finish(&self, remembered: Option<(Fingerprint, UploadLock)>) -> Result<(), ClientError> {
        match (remembered, &self.request.state) {
            (Some((fingerprint, lock)), Some(state)) => state.finish(&fingerprint, lock),
            _ => Ok(()),
        }
    }

    fn forget(&self, fingerprint: Option<&Fingerprint>) -> Result<(), ClientError> {
        match (fingerprint, &self.request.state) {
            (Some(fingerprint), Some(state)) => state.forget(fingerprint),
            _ => Ok(()),
        }
    }

    /// Remembers the upload at `url` (for a file sent in parts: the final upload, once it
    /// exists) and its `parts`.
    fn save(
        &self,
        fingerprint: Option<&Fingerprint>,
        url: Option<&Url>,
        parts: Vec<SavedPart>,
    ) -> Result<(), ClientError> {
        let (Some(fingerprint), Some(state)) = (fingerprint, &self.request.state) else {
            return Ok(());
        };
        let saved = SavedUpload {
            url: url.map(Url::to_string),
            endpoint: self.request.endpoint.to_string(),
            protocol: Some(self.request.protocol.name().into()),
            path: self.source.canonical_path.clone(),
            size: self.source.size,
            created: unix_now(),
            parts,
        };
        state.save(fingerprint, &saved)
    }

    /// The metadata of the upload that holds the whole file: the request's, plus `filename`.
    fn metadata(&self) -> Metadata {
        let mut metadata = self.request.metadata.clone();
        if metadata.get("filename").is_none() {
            // Cannot fail: the key is valid and absent (a valueless `filename` key is replaced).
            let _ = metadata.insert("filename", Some(self.source.file_name().into_bytes()));
        }
        metadata
    }

    /// Creates the upload and remembers it before any byte is sent.
    async fn create_tus(&mut self, fingerprint: Option<&Fingerprint>) -> Result<Url, ClientError> {
        let metadata = self.metadata();
        let http = &self.client.http;
        let endpoint = &self.request.endpoint;
        let size = self.source.size;
        let url = self
            .retrying(|| tus::create(http, endpoint, size, &metadata))
            .await?;
        self.save(fingerprint, Some(&url), Vec::new())?;
        self.backoff.progressed();
        self.emit(UploadEvent::Created { url: url.clone() });
        self.progress(0, 0);
        Ok(url)
    }

    /// PATCHes from `offset` to the end, recovering from every retryable failure.
    async fn send_tus(&mut self, url: &Url, mut offset: u64) -> Result<(), ClientError> {
        while offset < self.length() {
            self.source.check_unchanged()?;
            match self.patch(url, offset).await {
                Ok(stored) if stored == offset => {
                    self.pause(nothing_stored(url, offset)).await?;
                }
                Ok(stored) => {
                    self.confirmed(offset, stored);
                    offset = stored;
                }
                Err(error) if error.recovery() == Recovery::Retry => {
                    self.pause(error).await?;
                    let http = &self.client.http;
                    let status = self.retrying(|| tus::status(http, url)).await?;
                    self.confirmed(offset, status.offset);
                    offset = status.offset;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn patch(&self, url: &Url, offset: u64) -> Result<u64, ClientError> {
        let range = self.chunk(offset);
        let bytes = self.in_file(&range);
        let checksum = match self.request.checksum {
            Some(algorithm) => {
                Some(upload_checksum(algorithm, &self.source.canonical_path, bytes.clone()).await?)
            }
            None => None,
        };
        let sent = SentCounter::default();
        let body = file_range(
            &self.source.canonical_path,
            bytes,
            sent.clone(),
            self.rate_limit,
        )
        .await?;
        let patch = tus::Patch {
            offset,
            length: range.end - range.start,
            body,
            checksum,
        };
        let request = tus::append(&self.client.http, url, patch);
        self.watch("PATCH", url, offset, &sent, request).await
    }

    // --- simple protocol

    async fn simple(&mut self) -> Result<(), ClientError> {
        let remembered = self.remember()?;
        let modified_millis = self.source.modified_nanos / 1_000_000;
        let file_id = simple::file_id(&self.source.file_name(), self.source.size, modified_millis);
        let offset = self.simple_status(&file_id).await?;
        if offset > 0 {
            self.resumed(None, offset);
        }
        self.send_simple(&file_id, offset).await?;
        self.finish(remembered)?;
        self.emit(UploadEvent::Completed {
            url: self.outcome.url.clone(),
        });
        Ok(())
    }

    async fn simple_status(&mut self, file_id: &str) -> Result<u64, ClientError> {
        let http = &self.client.http;
        let endpoint = &self.request.endpoint;
        let offset = self
            .retrying(|| simple::status(http, endpoint, file_id))
            .await?;
        if offset > self.source.size {
            return Err(ClientError::Protocol {
                url: endpoint.to_string(),
                reason: format!(
                    "the server holds {offset} bytes for file id {file_id:?}, more than the \
                     file's {}",
                    self.source.size
                ),
            });
        }
        Ok(offset)
    }

    /// POSTs from `offset` to the end. At least one POST is made, even for an empty or already
    /// complete file: its answer carries the upload's `Location`.
    async fn send_simple(&mut self, file_id: &str, mut offset: u64) -> Result<(), ClientError> {
        let mut answered = false;
        while offset < self.source.size || !answered {
            self.source.check_unchanged()?;
            match self.post(file_id, offset).await {
                Ok(stored) if stored.count == offset && offset < self.source.size => {
                    answered = true;
                    self.outcome.url = stored.location.or(self.outcome.url.take());
                    self.pause(nothing_stored(&self.request.endpoint, offset))
                        .await?;
                }
                Ok(stored) => {
                    answered = true;
                    self.confirmed(offset, stored.count);
                    offset = stored.count;
                    self.outcome.url = stored.location.or(self.outcome.url.take());
                }
                Err(error) if error.recovery() == Recovery::Retry => {
                    self.pause(error).await?;
                    let stored = self.simple_status(file_id).await?;
                    self.confirmed(offset, stored);
                    offset = stored;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn post(&self, file_id: &str, offset: u64) -> Result<simple::Stored, ClientError> {
        let range = self.chunk(offset);
        let sent = SentCounter::default();
        let body = file_range(
            &self.source.canonical_path,
            self.in_file(&range),
            sent.clone(),
            self.rate_limit,
        )
        .await?;
        let chunk = simple::Chunk {
            start: offset,
            length: range.end - range.start,
            file_size: self.source.size,
            body,
        };
        let endpoint = &self.request.endpoint;
        let request = simple::append(&self.client.http, endpoint, file_id, chunk);
        self.watch("POST", endpoint, offset, &sent, request).await
    }
}

/// A request that succeeded without storing a byte of a non-empty chunk: retried after a pause,
/// so a server that keeps doing it cannot make the client spin.
fn nothing_stored(url: &Url, offset: u64) -> ClientError {
    ClientError::Protocol {
        url: url.to_string(),
        reason: format!("the server stored none of the chunk sent at offset {offset}"),
    }
}
