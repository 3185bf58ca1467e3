//! Uploading one file so that nothing stops it for good: resume a remembered upload or create
//! one, send chunks, and after any failure wait, ask the server what it has, and continue from
//! there.

use crate::ChecksumAlgorithm;
use crate::body::{SentCounter, file_range};
use crate::checksum::upload_checksum;
use crate::error::Recovery;
use crate::retry::Backoff;
use crate::state::{Fingerprint, SavedUpload, Source, StateStore, UploadLock, unix_now};
use crate::{Client, ClientError, simple, tus};
use reqwest::Url;
use resumable_proto::Metadata;
use std::future::Future;
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
}

impl Protocol {
    /// `tus` or `simple`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tus => "tus",
            Protocol::Simple => "simple",
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
    /// does not advertise it).
    pub checksum: Option<ChecksumAlgorithm>,
    /// Send no faster than this many bytes per second.
    pub rate_limit: Option<u64>,
    /// Where uploads are remembered across runs; `None` always starts a new upload (tus).
    pub state: Option<StateStore>,
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
        /// The upload URL (tus); `None` for the simple protocol, which knows only a file id.
        url: Option<Url>,
        /// Bytes the server already had.
        offset: u64,
    },
    /// A remembered upload no longer exists on the server; a new one starts.
    StartedOver {
        /// The remembered URL.
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
    /// Attempts that failed and were retried.
    pub retries: u32,
}

/// The state of one upload while it runs.
struct Session<'a> {
    client: &'a Client,
    request: &'a UploadRequest,
    source: Source,
    events: EventSink<'a>,
    backoff: Backoff,
    outcome: UploadOutcome,
}

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
        let mut session = Session {
            client: self,
            request,
            outcome: UploadOutcome {
                url: None,
                size: source.size,
                resumed_from: None,
                started_over: false,
                retries: 0,
            },
            source,
            events,
            backoff: Backoff::new(self.config.retry),
        };
        match request.protocol {
            Protocol::Tus => session.tus().await?,
            Protocol::Simple => session.simple().await?,
        }
        Ok(session.outcome)
    }
}

impl Session<'_> {
    fn emit(&self, event: UploadEvent) {
        (self.events)(&event);
    }

    fn progress(&self, sent: u64, confirmed: u64) {
        self.emit(UploadEvent::Progress(Progress {
            sent,
            confirmed,
            total: self.source.size,
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

    /// The next chunk from `offset`.
    fn chunk(&self, offset: u64) -> std::ops::Range<u64> {
        let size = self.source.size;
        let end = match self.request.chunk_size {
            Some(chunk) => offset.saturating_add(chunk.max(1)).min(size),
            None => size,
        };
        offset..end
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
        let (mut url, mut offset) = self.open_tus(fingerprint).await?;
        loop {
            match self.send_tus(&url, offset).await {
                Ok(()) => break,
                Err(error @ ClientError::Gone { .. }) if !self.outcome.started_over => {
                    self.start_over(fingerprint, &url, &error)?;
                    url = self.create_tus(fingerprint).await?;
                    offset = 0;
                }
                Err(error) => return Err(error),
            }
        }
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

    /// The remembered upload at the server's offset, or a new upload.
    async fn open_tus(
        &mut self,
        fingerprint: Option<&Fingerprint>,
    ) -> Result<(Url, u64), ClientError> {
        let saved = fingerprint
            .zip(self.request.state.as_ref())
            .and_then(|(fingerprint, state)| state.load(fingerprint));
        let Some(saved) = saved else {
            return Ok((self.create_tus(fingerprint).await?, 0));
        };
        let Ok(url) = Url::parse(&saved.url) else {
            return Ok((self.create_tus(fingerprint).await?, 0));
        };
        let http = &self.client.http;
        match self.retrying(|| tus::status(http, &url)).await {
            Ok(status) if status.length == Some(self.source.size) => {
                self.outcome.resumed_from = Some(status.offset);
                self.emit(UploadEvent::Resumed {
                    url: Some(url.clone()),
                    offset: status.offset,
                });
                self.progress(status.offset, status.offset);
                Ok((url, status.offset))
            }
            Ok(status) => {
                let reason = ClientError::Protocol {
                    url: url.to_string(),
                    reason: format!(
                        "its length is {:?}, not {}",
                        status.length, self.source.size
                    ),
                };
                self.start_over(fingerprint, &url, &reason)?;
                Ok((self.create_tus(fingerprint).await?, 0))
            }
            Err(error @ ClientError::Gone { .. }) => {
                self.start_over(fingerprint, &url, &error)?;
                Ok((self.create_tus(fingerprint).await?, 0))
            }
            Err(error) => Err(error),
        }
    }

    fn start_over(
        &mut self,
        fingerprint: Option<&Fingerprint>,
        previous: &Url,
        reason: &ClientError,
    ) -> Result<(), ClientError> {
        self.forget(fingerprint)?;
        self.outcome.started_over = true;
        self.outcome.resumed_from = None;
        self.emit(UploadEvent::StartedOver {
            previous: previous.clone(),
            reason: reason.to_string(),
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

    /// Creates the upload and remembers it before any byte is sent.
    async fn create_tus(&mut self, fingerprint: Option<&Fingerprint>) -> Result<Url, ClientError> {
        let mut metadata = self.request.metadata.clone();
        if metadata.get("filename").is_none() {
            // Cannot fail: the key is valid and absent (a valueless `filename` key is replaced).
            let _ = metadata.insert("filename", Some(self.source.file_name().into_bytes()));
        }
        let http = &self.client.http;
        let endpoint = &self.request.endpoint;
        let size = self.source.size;
        let url = self
            .retrying(|| tus::create(http, endpoint, size, &metadata))
            .await?;
        if let (Some(fingerprint), Some(state)) = (fingerprint, &self.request.state) {
            let saved = SavedUpload {
                url: url.to_string(),
                endpoint: endpoint.to_string(),
                path: self.source.canonical_path.clone(),
                size,
                created: unix_now(),
            };
            state.save(fingerprint, &saved)?;
        }
        self.backoff.progressed();
        self.emit(UploadEvent::Created { url: url.clone() });
        self.progress(0, 0);
        Ok(url)
    }

    /// PATCHes from `offset` to the end, recovering from every retryable failure.
    async fn send_tus(&mut self, url: &Url, mut offset: u64) -> Result<(), ClientError> {
        while offset < self.source.size {
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
        let checksum = match self.request.checksum {
            Some(algorithm) => {
                Some(upload_checksum(algorithm, &self.source.canonical_path, range.clone()).await?)
            }
            None => None,
        };
        let sent = SentCounter::default();
        let body = file_range(
            &self.source.canonical_path,
            range.clone(),
            sent.clone(),
            self.request.rate_limit,
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
            self.outcome.resumed_from = Some(offset);
            self.emit(UploadEvent::Resumed { url: None, offset });
            self.progress(offset, offset);
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
            range.clone(),
            sent.clone(),
            self.request.rate_limit,
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
