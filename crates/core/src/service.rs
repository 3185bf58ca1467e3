//! The upload service: the rules every protocol front-end shares, over any [`Store`] and
//! [`Locker`].

use crate::body::{BodyLimits, BodyStops, GuardedBody, MinRate};
use crate::clock::Clock;
use crate::hooks::{self, HookKind, Hooks, RefusalStatus};
use crate::lock::{LockError, LockGuard, Locker};
use crate::model::{
    Concat, ConcatPart, Length, Offset, Owner, Protocol, ReprDigest, UploadId, UploadInfo,
    UploadStatus,
};
use crate::observe::{NoObserver, Observer, UploadEvent};
use crate::quota::{Limits, UsageCounter};
use crate::rate::CreationRate;
use crate::store::{
    BackendError, BodyError, BodyStream, ByteStream, Capabilities, Listing, Store, StoreError,
    client_key_digest,
};
use futures_util::{StreamExt, TryStreamExt};
use resumable_proto::Metadata;
use resumable_proto::checksum::{Checksum, Digests};
use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long what a crash left behind (see [`Store::remove_leftovers`]) must have gone
/// untouched before [`UploadService::remove_leftovers`] removes it: far longer than any
/// creation or removal takes.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(60 * 60);

/// How many upload ids a sweep over every upload (expiry, owed finishes, quotas) asks the
/// store for at once: one page is all it holds, and one round trip to an object store per
/// this many uploads is cheap.
pub const LIST_PAGE_SIZE: usize = 1000;

/// Settings of an [`UploadService`].
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The largest upload accepted, in bytes; `None` for no limit.
    pub max_size: Option<u64>,
    /// How long a request body may go without a byte before it is cut (its bytes are kept).
    pub body_idle_timeout: Duration,
    /// How long after its last write an unfinished upload expires; `None` for never.
    pub expire_after: Option<Duration>,
    /// The bytes each owner's uploads may hold together; `None` for no quota. A principal's own
    /// limits ([`NewUpload::limits`], [`Append::limits`]) may narrow it.
    pub quota_bytes: Option<u64>,
    /// The unfinished uploads each owner may have at once; `None` for no quota.
    pub quota_uploads: Option<u64>,
    /// The slowest a request body may arrive before it is cut (its bytes are kept), measured
    /// over each window from the body's start; `None` for no minimum.
    pub min_body_rate: Option<MinRate>,
    /// The largest metadata a new upload may have, in bytes of its tus encoding (what tus's
    /// `Upload-Metadata` carries and `HEAD` returns); `None` for no limit beyond the parser's.
    pub max_metadata_size: Option<usize>,
    /// Uploads each creator ([`NewUpload::creator`]) may create per minute, in bursts of up to
    /// as many; `None` for no limit.
    pub max_creations_per_minute: Option<u32>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_size: None,
            body_idle_timeout: Duration::from_secs(60),
            expire_after: Some(Duration::from_secs(24 * 60 * 60)),
            quota_bytes: None,
            quota_uploads: None,
            min_body_rate: Some(MinRate {
                bytes_per_second: 1024,
                window: Duration::from_secs(30),
            }),
            max_metadata_size: Some(4 * 1024),
            max_creations_per_minute: Some(120),
        }
    }
}

/// Why an operation on an upload failed. Each front-end maps these to its own wire errors.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// No such upload for this owner.
    #[error("upload not found")]
    NotFound,
    /// The upload expired before it was finished.
    #[error("the upload expired before it was finished")]
    Expired,
    /// The request starts at the wrong offset; nothing was written.
    #[error("offset mismatch: {provided} given, {stored} stored")]
    OffsetMismatch {
        /// Bytes stored.
        stored: Offset,
        /// The offset the request gave.
        provided: Offset,
    },
    /// The declared length is over the size limit.
    #[error("upload length {length} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The declared length.
        length: u64,
        /// The limit.
        max: u64,
    },
    /// The owner's uploads would hold more than the storage quota allows. Nothing was written,
    /// or (`stored` given) an append was cut at the quota with the bytes before it stored.
    #[error("storage quota of {limit} bytes reached")]
    QuotaBytes {
        /// The quota.
        limit: u64,
        /// Bytes stored, when an append was cut at the quota.
        stored: Option<Offset>,
    },
    /// The owner has as many unfinished uploads as the quota allows.
    #[error("at most {limit} unfinished uploads at once: finish or delete one first")]
    QuotaUploads {
        /// The quota.
        limit: u64,
    },
    /// The new upload's metadata is larger than the server accepts; nothing was created.
    #[error(
        "the upload's metadata is {size} bytes (as tus Upload-Metadata); at most {max} are accepted"
    )]
    MetadataTooLarge {
        /// Its size, in bytes of its tus encoding.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The creator made as many uploads as it may in a minute; nothing was created.
    #[error("at most {per_minute} new uploads a minute: retry in {}s", retry_after.as_secs().max(1))]
    TooManyCreations {
        /// The limit.
        per_minute: u32,
        /// When the next creation is allowed.
        retry_after: Duration,
    },
    /// The body runs past the upload's length; the bytes up to it are stored.
    #[error("the body runs past the upload's length (or the size limit)")]
    BodyTooLong {
        /// Bytes stored.
        stored: Offset,
    },
    /// A length was given that contradicts the upload's declared length.
    #[error("the upload's length is already {declared}")]
    LengthConflict {
        /// The length already declared.
        declared: u64,
    },
    /// A length was given that is below the bytes already stored.
    #[error("the length {length} is below the {stored} bytes already stored")]
    LengthBelowOffset {
        /// The length given.
        length: u64,
        /// Bytes stored.
        stored: Offset,
    },
    /// The upload is not complete, so it cannot be read back.
    #[error("the upload is not complete")]
    Incomplete,
    /// The body ended early; every byte before the interruption is stored.
    #[error("{reason}")]
    Interrupted {
        /// Bytes stored.
        stored: Offset,
        /// Why the body ended.
        reason: BodyError,
    },
    /// The body's digest differs from the expected checksum; the chunk was discarded.
    #[error("checksum mismatch: the chunk was discarded")]
    ChecksumMismatch {
        /// Bytes stored (as before the request).
        stored: Offset,
    },
    /// A checksum trailer came that no `Trailer` header announced, so it was not checked; the
    /// chunk's bytes are stored.
    #[error(
        "the Upload-Checksum trailer was not announced (Trailer: Upload-Checksum), so it was not verified; {stored} bytes are stored"
    )]
    ChecksumNotAnnounced {
        /// Bytes stored, the chunk's included.
        stored: Offset,
    },
    /// The checksum promised as a trailer is missing or malformed; the chunk was discarded.
    #[error("checksum trailer: {0}")]
    InvalidChecksum(String),
    /// A final upload takes no appends (its bytes are its parts').
    #[error("a final upload takes no appends; append to its partial uploads")]
    FinalUpload,
    /// The parts of a final upload are not usable.
    #[error("{0}")]
    InvalidConcat(String),
    /// Another request or process holds the upload and did not let go in time.
    #[error("the upload is busy")]
    Busy,
    /// The lock service cannot be reached (or could not vouch for a lock), so nothing was done
    /// that needs the lock; the client may retry.
    #[error("lock service unavailable: {0}")]
    LockUnavailable(String),
    /// No storage space left.
    #[error("storage is full")]
    StorageFull,
    /// The store's backend failed (unreachable, out of resources, or otherwise); its kind and
    /// whether it is temporary decide the answer, its details are logged, never sent.
    #[error("{kind}: {0}", kind = .0.kind())]
    Storage(BackendError),
    /// The store cannot do this.
    #[error("not supported by this server's storage")]
    Unsupported,
    /// Anything else; details are logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// A hook refused the request (`pre-create`), or the upload (`pre-finish`: it is failed,
    /// and every later append or download is answered this); the message is for the client.
    #[error("{message}")]
    HookRefused {
        /// The 4xx to answer.
        status: RefusalStatus,
        /// The hook's message.
        message: String,
    },
    /// A hook that must answer first did not (down, too slow, a bad answer) and hook failures
    /// refuse: nothing happened (or, at a finish, the upload waits complete); retry later.
    #[error("a hook did not answer; retry later")]
    HookUnavailable(String),
}

impl From<StoreError> for UploadError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => UploadError::NotFound,
            // Only appends see this, and they map it with the offset they gave.
            StoreError::OffsetMismatch { stored } => {
                UploadError::Internal(format!("unexpected offset mismatch at {stored}"))
            }
            StoreError::Locked => UploadError::Busy,
            StoreError::Full => UploadError::StorageFull,
            StoreError::Unsupported => UploadError::Unsupported,
            StoreError::Backend(error) => UploadError::Storage(error),
        }
    }
}

impl From<LockError> for UploadError {
    fn from(error: LockError) -> Self {
        match error {
            LockError::Timeout => UploadError::Busy,
            LockError::Backend(message) => UploadError::LockUnavailable(message),
            LockError::Lost => UploadError::LockUnavailable("the lock was lost".into()),
        }
    }
}

/// The role a new upload asks for in concatenation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewConcat {
    /// A partial upload.
    Partial,
    /// A final upload of these parts: (id, the URL the client used), in order.
    Final(Vec<ConcatPart>),
}

/// A new upload as a front-end describes it.
#[derive(Debug, Clone)]
pub struct NewUpload {
    /// Who creates it.
    pub owner: Owner,
    /// Its declared size (ignored for a final upload: the sum of its parts).
    pub length: Length,
    /// The client's metadata.
    pub metadata: Metadata,
    /// Its role in concatenation, if any.
    pub concat: Option<NewConcat>,
    /// The creator's own limits (say, from its token), on top of the server's.
    pub limits: Limits,
    /// The front-end creating it.
    pub protocol: Protocol,
    /// The digest the whole upload must have, checked once its last byte is stored.
    pub repr_digest: Option<ReprDigest>,
    /// Whom the creation counts against for [`ServiceConfig::max_creations_per_minute`] (the
    /// server uses the owner when requests authenticate, else the client's address); `None`
    /// counts against nobody.
    pub creator: Option<String>,
}

/// A checksum that only arrives after the body: reads the trailer once the body has ended.
/// `Ok(None)` when the trailer is absent.
pub type TrailerChecksum = Box<dyn FnOnce() -> Result<Option<Checksum>, String> + Send>;

/// The checksum a body must match (tus checksum extension).
pub enum ExpectedChecksum {
    /// Given before the body (`Upload-Checksum` header).
    Header(Checksum),
    /// Given after the body (`Upload-Checksum` trailer).
    Trailer(TrailerChecksum),
}

/// Whether a checksum came after a body that announced none (a trailer nobody expected, or a
/// malformed one): read once the body has ended.
pub type UnannouncedTrailer = Box<dyn FnOnce() -> bool + Send>;

/// An append as a front-end describes it.
pub struct Append {
    /// Where the body starts.
    pub offset: Offset,
    /// A length declared with this request (tus deferred length, simple `X-File-Size`).
    pub declared_length: Option<u64>,
    /// The body's size, when the request announced it.
    pub content_length: Option<u64>,
    /// The digest the body must have; the body is discarded if it differs or is cut short.
    pub checksum: Option<ExpectedChecksum>,
    /// For a body without `checksum`: tells whether a checksum came anyway. Nothing was
    /// digested or set aside, so the bytes count as they arrive, and the answer is
    /// [`UploadError::ChecksumNotAnnounced`]: they were not verified.
    pub unannounced_trailer: Option<UnannouncedTrailer>,
    /// The body is the rest of the upload: once it has arrived whole, an upload whose length is
    /// still unknown is complete at the stored count. The seed's client says "done" this way: it
    /// sends the whole rest of the file in one request, without a size.
    pub ends_upload: bool,
    /// The appender's own limits (say, from its token), on top of the server's.
    pub limits: Limits,
    /// The body.
    pub body: BodyStream,
}

/// What one [`UploadService::remove_expired`] sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpirySweep {
    /// Expired uploads removed.
    pub removed: usize,
    /// Uploads it could not check or remove, and went past.
    pub failed: usize,
}

/// Create, append, inspect and remove uploads, enforcing ownership, locking, offsets, limits,
/// checksums and expiry.
pub struct UploadService {
    store: Arc<dyn Store>,
    locker: Arc<dyn Locker>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    /// Cancelled at shutdown: bodies in flight stop, persist and answer.
    shutdown: CancellationToken,
    /// The uploads the last expiry sweep could not check: each is logged once, not every sweep.
    sweep_failures: Mutex<HashSet<UploadId>>,
    /// Counts owners' usage for quotas.
    usage: UsageCounter,
    /// Told of (and asked about) each step of an upload, when configured (`with_hooks`).
    hooks: Option<Arc<Hooks>>,
    /// Creations per creator, when limited.
    creations: Option<CreationRate>,
    /// Told of each step of an upload (`with_observer`).
    observer: Arc<dyn Observer>,
}

impl UploadService {
    /// A service over `store` and `locker`.
    pub fn new(
        store: Arc<dyn Store>,
        locker: Arc<dyn Locker>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Self {
        UploadService {
            store,
            locker,
            clock,
            shutdown: CancellationToken::new(),
            sweep_failures: Mutex::default(),
            usage: UsageCounter::default(),
            hooks: None,
            creations: config
                .max_creations_per_minute
                .filter(|per_minute| *per_minute > 0)
                .map(CreationRate::new),
            config,
            observer: Arc::new(NoObserver),
        }
    }

    /// The same service telling `observer` of each upload's creation, completion and removal
    /// (see [`crate::observe`]).
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The same service with hooks (see [`crate::hooks`]); run [`Hooks::deliver`] beside it.
    pub fn with_hooks(mut self, hooks: Arc<Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Makes every append in flight stop reading, persist what it has and answer; new appends
    /// stop at once.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// What the store supports.
    pub fn capabilities(&self) -> Capabilities {
        self.store.capabilities()
    }

    /// The size limit, if any.
    pub fn max_size(&self) -> Option<u64> {
        self.config.max_size
    }

    /// The expiry period of unfinished uploads, if any.
    pub fn expire_after(&self) -> Option<Duration> {
        self.config.expire_after
    }

    /// When this upload expires: unfinished uploads (finals excepted, they take no writes)
    /// expire `expire_after` after their last write.
    pub fn expires_at(&self, status: &UploadStatus) -> Option<SystemTime> {
        if status.is_complete() || status.info.is_final() {
            return None;
        }
        Some(status.modified_at + self.config.expire_after?)
    }

    /// How long an unfinished upload has left before it expires, from now (zero once past).
    pub fn remaining_lifetime(&self, status: &UploadStatus) -> Option<Duration> {
        let expires = self.expires_at(status)?;
        Some(expires.duration_since(self.clock.now()).unwrap_or_default())
    }

    /// Creates an upload: empty, or for a final upload, the concatenation of its parts.
    pub async fn create(&self, new: NewUpload) -> Result<UploadStatus, UploadError> {
        match new.concat.clone() {
            Some(NewConcat::Final(parts)) => self.create_final(new, parts).await,
            Some(NewConcat::Partial) => self.create_upload(new, Some(Concat::Partial), None).await,
            None => self.create_upload(new, None, None).await,
        }
    }

    async fn create_upload(
        &self,
        new: NewUpload,
        concat: Option<Concat>,
        client_key: Option<String>,
    ) -> Result<UploadStatus, UploadError> {
        self.check_creation_rate(new.creator.as_deref())?;
        let limits = self.limits(new.limits);
        if let Length::Known(length) = new.length {
            self.check_size(length, &limits)?;
        }
        self.check_metadata(&new.metadata)?;
        // Held until the upload exists, so two creations cannot both fit in the last room.
        let quota_guard = self
            .check_room_for_new(&new.owner, new.length, &limits)
            .await?;
        let now = self.clock.now();
        let info = UploadInfo {
            id: UploadId::random(),
            owner: new.owner,
            length: new.length,
            metadata: new.metadata,
            client_key,
            created_at: now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
            concat,
            protocol: Some(new.protocol),
            completion: None,
            repr_digest: new.repr_digest,
        };
        let mut status = UploadStatus {
            info,
            offset: Offset(0),
            modified_at: now,
        };
        let post_create = match &self.hooks {
            Some(hooks) => hooks.before_create(&*self.store, &mut status).await?,
            None => None,
        };
        if let Err(error) = self.store.create(&status.info).await {
            if let Some(hooks) = &self.hooks {
                hooks.creation_failed(post_create).await;
            }
            return Err(error.into());
        }
        if let Some(guard) = quota_guard {
            release(guard).await;
        }
        tracing::info!(upload = %status.info.id, length = ?status.info.length, "upload created");
        let protocol = status.info.protocol();
        self.observer.upload(UploadEvent::Created, protocol);
        if status.info.length == Length::Known(0) {
            self.observer.upload(UploadEvent::Completed, protocol);
            hooks::finish(&*self.store, self.hooks.as_deref(), &mut status).await?;
        }
        Ok(status)
    }

    /// A final upload: its parts must be the owner's partial uploads of known length; it is
    /// assembled now if they are complete, else as soon as they are (concatenation-unfinished).
    async fn create_final(
        &self,
        new: NewUpload,
        parts: Vec<ConcatPart>,
    ) -> Result<UploadStatus, UploadError> {
        if !self.capabilities().concatenate {
            return Err(UploadError::Unsupported);
        }
        let mut length = 0u64;
        for part in &parts {
            let status = match self.inspect(&new.owner, &part.id).await {
                Ok(status) => status,
                Err(UploadError::NotFound | UploadError::Expired) => {
                    let message = format!("partial upload {} does not exist", part.url);
                    return Err(UploadError::InvalidConcat(message));
                }
                Err(error) => return Err(error),
            };
            if status.info.concat != Some(Concat::Partial) {
                let message = format!("{} is not a partial upload", part.url);
                return Err(UploadError::InvalidConcat(message));
            }
            let Length::Known(part_length) = status.info.length else {
                let message = format!("partial upload {} has no length yet", part.url);
                return Err(UploadError::InvalidConcat(message));
            };
            length = length.saturating_add(part_length);
        }
        let new = NewUpload {
            length: Length::Known(length),
            ..new
        };
        let status = self
            .create_upload(new, Some(Concat::Final { parts }), None)
            .await?;
        self.assemble_if_ready(status).await
    }

    /// Assembles a final upload whose parts are all complete; returns its current status.
    async fn assemble_if_ready(&self, status: UploadStatus) -> Result<UploadStatus, UploadError> {
        let Some(Concat::Final { parts }) = &status.info.concat else {
            return Ok(status);
        };
        if status.is_complete() {
            return Ok(status);
        }
        let mut ids = Vec::with_capacity(parts.len());
        for part in parts {
            let part_status = match self.store.status(&part.id).await {
                Ok(part_status) => part_status,
                Err(StoreError::NotFound) => {
                    let message = format!("partial upload {} was removed", part.url);
                    return Err(UploadError::InvalidConcat(message));
                }
                Err(error) => return Err(error.into()),
            };
            if !part_status.is_complete() {
                return Ok(status);
            }
            ids.push(part.id.clone());
        }
        let guard = self.locker.lock(status.info.id.as_str()).await?;
        under(guard, async {
            // Another request may have assembled it while we waited for the lock.
            let current = self.store.status(&status.info.id).await?;
            if current.is_complete() {
                return Ok(current);
            }
            self.store.concatenate(&status.info.id, &ids).await?;
            let mut assembled = self.store.status(&status.info.id).await?;
            let protocol = assembled.info.protocol();
            self.observer.upload(UploadEvent::Completed, protocol);
            hooks::finish(&*self.store, self.hooks.as_deref(), &mut assembled).await?;
            tracing::debug!(upload = %status.info.id, parts = ids.len(), "final upload assembled");
            Ok(assembled)
        })
        .await
    }

    /// The upload's status, without interrupting a request in flight (for downloads).
    pub async fn inspect(&self, owner: &Owner, id: &UploadId) -> Result<UploadStatus, UploadError> {
        let status = self.store.status(id).await?;
        if &status.info.owner != owner {
            return Err(UploadError::NotFound);
        }
        self.check_alive(&status)?;
        Ok(status)
    }

    /// The upload's status for reading it back, without interrupting a request in flight: a
    /// final upload whose parts are complete is assembled first, so the first request after its
    /// parts finished finds it complete whatever it is (a download as much as a `HEAD`).
    pub async fn inspect_assembled(
        &self,
        owner: &Owner,
        id: &UploadId,
    ) -> Result<UploadStatus, UploadError> {
        let status = self.inspect(owner, id).await?;
        self.assemble_if_ready(status).await
    }

    /// The upload's status once any request in flight has stopped and persisted what it had:
    /// the offset a client should resume from. A final upload whose parts are complete is
    /// assembled first.
    pub async fn status(&self, owner: &Owner, id: &UploadId) -> Result<UploadStatus, UploadError> {
        let (guard, mut status) = self.lock_owned(owner, id).await?;
        // Complete but still owing its finish hooks (their receiver could not answer, or a
        // crash came between): try again now. A refusal fails the upload; its offset stands.
        if hooks::owes_finish(self.hooks.as_deref(), &status) {
            match hooks::finish(&*self.store, self.hooks.as_deref(), &mut status).await {
                Ok(()) | Err(UploadError::HookRefused { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        release(guard).await;
        self.assemble_if_ready(status).await
    }

    /// The upload `owner` created with the simple protocol's `client_key`, if any.
    pub async fn find_by_key(
        &self,
        owner: &Owner,
        client_key: &str,
    ) -> Result<Option<UploadId>, UploadError> {
        self.check_client_keys()?;
        Ok(self.store.find_by_key(owner, client_key).await?)
    }

    /// Refuses what needs the simple protocol's key index if the store has none.
    fn check_client_keys(&self) -> Result<(), UploadError> {
        if self.capabilities().client_keys {
            Ok(())
        } else {
            Err(UploadError::Unsupported)
        }
    }

    /// The upload of `client_key`, created (with `length`) if it does not exist yet or expired;
    /// a creation counts against `creator` (see [`NewUpload::creator`]).
    pub async fn open_by_key(
        &self,
        owner: &Owner,
        client_key: &str,
        length: Length,
        limits: Limits,
        creator: Option<String>,
    ) -> Result<UploadId, UploadError> {
        self.check_client_keys()?;
        // Serialise creators of the same key so two first requests make one upload.
        let guard = self
            .locker
            .lock(&format!("key:{}", client_key_digest(owner, client_key)))
            .await?;
        under(guard, async {
            if let Some(id) = self.store.find_by_key(owner, client_key).await?
                && !self.remove_if_expired(&id).await?
            {
                return Ok(id);
            }
            let new = NewUpload {
                owner: owner.clone(),
                length,
                metadata: Metadata::default(),
                concat: None,
                limits,
                protocol: Protocol::Simple,
                repr_digest: None,
                creator,
            };
            let status = self
                .create_upload(new, None, Some(client_key.to_owned()))
                .await?;
            Ok(status.info.id)
        })
        .await
    }

    /// Appends a body; see [`Append`]. Returns the status with the new durable offset.
    ///
    /// Once the body starts, the append runs to its end (written, verified, synced or
    /// discarded) in a task of its own, even if the caller stops waiting: a request dropped
    /// mid-body (a reset HTTP/2 stream drops its handler) must not leave bytes counted that
    /// were never synced or never verified, nor release the lock before they are settled.
    pub async fn append(
        &self,
        owner: &Owner,
        id: &UploadId,
        append: Append,
    ) -> Result<UploadStatus, UploadError> {
        let (guard, mut status) = self.lock_owned(owner, id).await?;
        let terms = AppendTerms {
            offset: append.offset,
            declared_length: append.declared_length,
            content_length: append.content_length,
            limits: append.limits,
            checksummed: append.checksum.is_some(),
        };
        let (remaining, quota_cut) = match self.admit(owner, &mut status, terms).await {
            Ok(admitted) => admitted,
            Err(error) => {
                release(guard).await;
                return Err(error);
            }
        };
        let limits = BodyLimits {
            remaining,
            idle_timeout: self.config.body_idle_timeout,
            min_rate: self.config.min_body_rate,
        };
        let stops = BodyStops {
            takeover: guard.takeover_requested(),
            lost: guard.lost(),
            shutdown: self.shutdown.clone().cancelled_owned(),
        };
        let guarded = GuardedBody::new(append.body, stops, limits).boxed();
        let (body, digests) = digesting(guarded, append.checksum.as_ref());
        let writing = Writing {
            store: self.store.clone(),
            clock: self.clock.clone(),
            guard,
            status,
            body,
            checksum: append.checksum.zip(digests),
            unannounced_trailer: append.unannounced_trailer,
            ends_upload: append.ends_upload,
            quota_cut,
            hooks: self.hooks.clone(),
            observer: self.observer.clone(),
        };
        // In the request's span (its request id), though on a task of its own.
        tokio::spawn(writing.run().instrument(tracing::Span::current()))
            .await
            .map_err(|error| UploadError::Internal(format!("append task: {error}")))?
    }

    /// The checks an append passes under the lock before its body is read: the bytes the body
    /// may bring, and the quota it is cut at when that is what limits it.
    async fn admit(
        &self,
        owner: &Owner,
        status: &mut UploadStatus,
        append: AppendTerms,
    ) -> Result<(u64, Option<u64>), UploadError> {
        if status.info.failure().is_some() {
            return Err(hooks::failed_error(&status.info));
        }
        if status.info.is_final() {
            return Err(UploadError::FinalUpload);
        }
        if append.offset != status.offset {
            return Err(UploadError::OffsetMismatch {
                stored: status.offset,
                provided: append.offset,
            });
        }
        let limits = self.limits(append.limits);
        if let Some(length) = append.declared_length {
            self.declare_length(status, length, &limits).await?;
        }
        let mut remaining = self.remaining(status, &limits);
        if append
            .content_length
            .is_some_and(|length| length > remaining)
        {
            return Err(UploadError::BodyTooLong {
                stored: status.offset,
            });
        }
        // Unlike the length, a quota does not refuse a body up front: it stores what fits (so
        // the offset goes as far as the quota allows) and stops there.
        let room = self.room_for(owner, status, &limits).await?;
        let quota_cut = room.filter(|room| *room < remaining).map(|room| {
            remaining = room;
            limits.quota_bytes.unwrap_or_default()
        });
        if append.checksummed && !self.capabilities().stage {
            return Err(UploadError::Unsupported);
        }
        Ok((remaining, quota_cut))
    }

    /// Removes an upload and its bytes.
    pub async fn terminate(&self, owner: &Owner, id: &UploadId) -> Result<(), UploadError> {
        if !self.capabilities().terminate {
            return Err(UploadError::Unsupported);
        }
        let (guard, status) = self.lock_owned(owner, id).await?;
        under(guard, async {
            let event = match &self.hooks {
                Some(hooks) => {
                    let kind = HookKind::PostTerminate;
                    hooks.before_removal(&*self.store, &status, kind).await?
                }
                None => None,
            };
            if let Err(error) = self.store.terminate(id).await {
                if let Some(hooks) = &self.hooks {
                    hooks.removal_failed(event).await;
                }
                return Err(error.into());
            }
            tracing::info!(upload = %id, "upload terminated");
            self.observer
                .upload(UploadEvent::Terminated, status.info.protocol());
            Ok(())
        })
        .await
    }

    /// Reads bytes of a completed upload.
    pub async fn read(
        &self,
        owner: &Owner,
        id: &UploadId,
        range: Range<u64>,
    ) -> Result<ByteStream, UploadError> {
        if !self.capabilities().read {
            return Err(UploadError::Unsupported);
        }
        let status = self.inspect_assembled(owner, id).await?;
        if status.info.failure().is_some() {
            return Err(hooks::failed_error(&status.info));
        }
        // Complete but not accepted by pre-finish yet: not a finished upload.
        if !status.is_complete() || hooks::owes_finish(self.hooks.as_deref(), &status) {
            return Err(UploadError::Incomplete);
        }
        Ok(self.store.read(id, range).await?)
    }

    /// Runs the finish hooks of every complete upload that still owes them (a crash came
    /// between its last byte and them): for start-up. Returns how many it finished or
    /// failed; an upload whose hook cannot answer is left for the next status request.
    pub async fn settle_finishes(&self) -> Result<usize, UploadError> {
        if self.hooks.is_none() || !self.capabilities().list {
            return Ok(0);
        }
        let mut settled = 0;
        let mut pages = Listing::new(&*self.store, LIST_PAGE_SIZE);
        while let Some(ids) = pages.next_page().await? {
            for id in ids {
                settled += usize::from(self.settle_finish(&id).await?);
            }
        }
        Ok(settled)
    }

    /// Runs the finish hooks the upload still owes, if it does; whether it finished or failed.
    async fn settle_finish(&self, id: &UploadId) -> Result<bool, UploadError> {
        match self.store.status(id).await {
            Ok(status) if hooks::owes_finish(self.hooks.as_deref(), &status) => {}
            Ok(_) | Err(_) => return Ok(false),
        }
        let guard = self.locker.lock(id.as_str()).await?;
        let finished = under(guard, async {
            let Ok(mut status) = self.store.status(id).await else {
                return false;
            };
            if !hooks::owes_finish(self.hooks.as_deref(), &status) {
                return false;
            }
            match hooks::finish(&*self.store, self.hooks.as_deref(), &mut status).await {
                Ok(()) | Err(UploadError::HookRefused { .. }) => true,
                Err(error) => {
                    tracing::warn!(upload = %id, %error, "finish hooks still owed");
                    false
                }
            }
        })
        .await;
        Ok(finished)
    }

    /// Whether the store answers (for readiness checks; see [`Store::probe`]).
    pub async fn probe_store(&self) -> Result<(), StoreError> {
        self.store.probe().await
    }

    /// Removes what crashes left behind that belongs to no upload, once untouched for
    /// [`LEFTOVER_AGE`]; returns how many things it removed.
    pub async fn remove_leftovers(&self) -> Result<usize, UploadError> {
        Ok(self.store.remove_leftovers(LEFTOVER_AGE).await?)
    }

    /// Removes every expired unfinished upload. An upload that cannot be checked or removed
    /// (say its info is unreadable) is skipped, not the end of the sweep: it is logged the first
    /// sweep it fails in and counted in [`ExpirySweep::failed`] every sweep. Fails only when the
    /// store cannot list its uploads.
    pub async fn remove_expired(&self) -> Result<ExpirySweep, UploadError> {
        let mut sweep = ExpirySweep::default();
        if self.config.expire_after.is_none() || !self.capabilities().list {
            return Ok(sweep);
        }
        let failed_before = std::mem::take(&mut *lock_ignoring_poison(&self.sweep_failures));
        let mut failing = HashSet::new();
        let mut pages = Listing::new(&*self.store, LIST_PAGE_SIZE);
        let listed = loop {
            let ids = match pages.next_page().await {
                Ok(Some(ids)) => ids,
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            };
            for id in ids {
                match self.remove_if_expired(&id).await {
                    Ok(true) => sweep.removed += 1,
                    Ok(false) => {}
                    Err(error) => {
                        if !failed_before.contains(&id) {
                            tracing::warn!(upload = %id, %error, "expiry sweep skips an upload");
                        }
                        failing.insert(id);
                    }
                }
            }
        };
        if let Err(error) = listed {
            // The pages not walked may hold failures already logged: remember them still.
            failing.extend(failed_before);
            *lock_ignoring_poison(&self.sweep_failures) = failing;
            return Err(error.into());
        }
        sweep.failed = failing.len();
        *lock_ignoring_poison(&self.sweep_failures) = failing;
        if sweep.removed > 0 || sweep.failed > 0 {
            tracing::info!(
                removed = sweep.removed,
                failed = sweep.failed,
                "expiry sweep done"
            );
        }
        Ok(sweep)
    }

    fn is_expired(&self, status: &UploadStatus) -> bool {
        self.expires_at(status)
            .is_some_and(|expiry| expiry <= self.clock.now())
    }

    /// Removes the upload if it has expired; whether it did.
    async fn remove_if_expired(&self, id: &UploadId) -> Result<bool, UploadError> {
        let is_expired = |status: &UploadStatus| self.is_expired(status);
        match self.store.status(id).await {
            Ok(status) if is_expired(&status) => {}
            Ok(_) | Err(StoreError::NotFound) => return Ok(false),
            Err(error) => return Err(error.into()),
        }
        let guard = self.locker.lock(id.as_str()).await?;
        under(guard, async {
            // Look again under the lock: a write may have revived it meanwhile.
            let status = match self.store.status(id).await {
                Ok(status) if is_expired(&status) => status,
                Ok(_) | Err(StoreError::NotFound) => return Ok(false),
                Err(error) => return Err(error.into()),
            };
            let event = match &self.hooks {
                Some(hooks) => {
                    let kind = HookKind::PostExpire;
                    hooks.before_removal(&*self.store, &status, kind).await?
                }
                None => None,
            };
            match self.store.terminate(id).await {
                Ok(()) => {
                    self.observer
                        .upload(UploadEvent::Expired, status.info.protocol());
                    tracing::info!(upload = %id, "upload expired");
                    Ok(true)
                }
                Err(StoreError::NotFound) => Ok(true),
                Err(error) => {
                    if let Some(hooks) = &self.hooks {
                        hooks.removal_failed(event).await;
                    }
                    Err(error.into())
                }
            }
        })
        .await
    }

    /// Takes the upload's lock (asking any request in flight to let go) after checking the owner,
    /// and returns the status as it stands once the lock is held.
    async fn lock_owned(
        &self,
        owner: &Owner,
        id: &UploadId,
    ) -> Result<(LockGuard, UploadStatus), UploadError> {
        // Nobody to interrupt: one look under the lock checks everything.
        if let Some(guard) = self.locker.try_lock(id.as_str()).await? {
            return match self.inspect(owner, id).await {
                Ok(status) => Ok((guard, status)),
                Err(error) => Err(under(guard, async { error }).await),
            };
        }
        // Check ownership first so a stranger cannot interrupt someone else's upload.
        self.inspect(owner, id).await?;
        let guard = self.locker.lock(id.as_str()).await?;
        let status = self.store.status(id).await.map_err(UploadError::from);
        match status.and_then(|status| self.check_alive(&status).map(|()| status)) {
            Ok(status) => Ok((guard, status)),
            Err(error) => Err(under(guard, async { error }).await),
        }
    }

    fn check_alive(&self, status: &UploadStatus) -> Result<(), UploadError> {
        if self.is_expired(status) {
            return Err(UploadError::Expired);
        }
        Ok(())
    }

    async fn declare_length(
        &self,
        status: &mut UploadStatus,
        length: u64,
        limits: &Limits,
    ) -> Result<(), UploadError> {
        match status.info.length {
            Length::Known(declared) if declared == length => Ok(()),
            Length::Known(declared) => Err(UploadError::LengthConflict { declared }),
            Length::Deferred => {
                self.check_size(length, limits)?;
                if length < status.offset.0 {
                    return Err(UploadError::LengthBelowOffset {
                        length,
                        stored: status.offset,
                    });
                }
                let room = self.room_for(&status.info.owner, status, limits).await?;
                if let (Some(room), Some(limit)) = (room, limits.quota_bytes)
                    && length - status.offset.0 > room
                {
                    return Err(UploadError::QuotaBytes {
                        limit,
                        stored: None,
                    });
                }
                status.info.length = Length::Known(length);
                self.store.update(&status.info).await?;
                if status.is_complete() {
                    self.observer
                        .upload(UploadEvent::Completed, status.info.protocol());
                    hooks::finish(&*self.store, self.hooks.as_deref(), status).await?;
                }
                Ok(())
            }
        }
    }

    fn remaining(&self, status: &UploadStatus, limits: &Limits) -> u64 {
        let limit = status
            .info
            .length
            .known()
            .or(limits.max_size)
            .unwrap_or(u64::MAX);
        limit.saturating_sub(status.offset.0)
    }

    /// Takes one creation from `creator`'s allowance, if creations are limited.
    fn check_creation_rate(&self, creator: Option<&str>) -> Result<(), UploadError> {
        let (Some(rate), Some(creator)) = (&self.creations, creator) else {
            return Ok(());
        };
        rate.take(creator, &*self.clock)
            .map_err(|retry_after| UploadError::TooManyCreations {
                per_minute: self.config.max_creations_per_minute.unwrap_or_default(),
                retry_after,
            })
    }

    fn check_metadata(&self, metadata: &resumable_proto::Metadata) -> Result<(), UploadError> {
        let Some(max) = self.config.max_metadata_size else {
            return Ok(());
        };
        if metadata.is_empty() {
            return Ok(());
        }
        let size = metadata.encode_tus().len();
        if size > max {
            return Err(UploadError::MetadataTooLarge { size, max });
        }
        Ok(())
    }

    fn check_size(&self, length: u64, limits: &Limits) -> Result<(), UploadError> {
        match limits.max_size {
            Some(max) if length > max => Err(UploadError::TooLarge { length, max }),
            _ => Ok(()),
        }
    }

    /// The server's limits, narrowed by a principal's own.
    fn limits(&self, principal: Limits) -> Limits {
        let server = Limits {
            max_size: self.config.max_size,
            quota_bytes: self.config.quota_bytes,
            quota_uploads: self.config.quota_uploads,
        };
        server.narrowed(principal)
    }

    /// Checks that `owner`'s quotas leave room for one more upload of `length`; returns the
    /// owner's quota lock (held by the caller until the upload exists), if a quota applies.
    async fn check_room_for_new(
        &self,
        owner: &Owner,
        length: Length,
        limits: &Limits,
    ) -> Result<Option<LockGuard>, UploadError> {
        if !limits.has_quota() {
            return Ok(None);
        }
        let key = format!("quota:{}", client_key_digest(owner, ""));
        let guard = self.locker.lock(&key).await?;
        let usage = self.usage.usage(&*self.store, owner, None).await?;
        if let Some(limit) = limits.quota_uploads
            && usage.in_progress >= limit
        {
            return Err(UploadError::QuotaUploads { limit });
        }
        if let Some(limit) = limits.quota_bytes
            && usage.bytes.saturating_add(length.known().unwrap_or(0)) > limit
        {
            return Err(UploadError::QuotaBytes {
                limit,
                stored: None,
            });
        }
        Ok(Some(guard))
    }

    /// How many more bytes this upload may take under its owner's storage quota, if one
    /// applies: the quota less what the owner's other uploads reserve and this one holds.
    async fn room_for(
        &self,
        owner: &Owner,
        status: &UploadStatus,
        limits: &Limits,
    ) -> Result<Option<u64>, UploadError> {
        let Some(quota) = limits.quota_bytes else {
            return Ok(None);
        };
        let others = self
            .usage
            .usage(&*self.store, owner, Some(&status.info.id))
            .await?;
        Ok(Some(
            quota
                .saturating_sub(others.bytes)
                .saturating_sub(status.offset.0),
        ))
    }
}

/// What [`UploadService::admit`] checks of an [`Append`] (which, holding its body, is not
/// `Sync`, so a future cannot hold a reference to it across an await and stay `Send`).
#[derive(Clone, Copy)]
struct AppendTerms {
    offset: Offset,
    declared_length: Option<u64>,
    content_length: Option<u64>,
    limits: Limits,
    checksummed: bool,
}

/// An append from its first body byte to its end: owns everything it needs, so it can run in
/// a task of its own (see [`UploadService::append`]), and holds the upload's lock throughout.
struct Writing {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    guard: LockGuard,
    /// The upload as it stood before the body.
    status: UploadStatus,
    body: BodyStream,
    /// The checksum the body must match, and the digests fed while it streams.
    checksum: Option<(ExpectedChecksum, Arc<Mutex<Digests>>)>,
    unannounced_trailer: Option<UnannouncedTrailer>,
    ends_upload: bool,
    /// The storage quota, when the body is cut at it rather than at the upload's length.
    quota_cut: Option<u64>,
    hooks: Option<Arc<Hooks>>,
    observer: Arc<dyn Observer>,
}

impl Writing {
    async fn run(self) -> Result<UploadStatus, UploadError> {
        let Writing {
            store,
            clock,
            guard,
            mut status,
            body,
            checksum,
            unannounced_trailer,
            ends_upload,
            quota_cut,
            hooks,
            observer,
        } = self;
        let id = status.info.id.clone();
        let start = status.offset;
        let was_complete = status.is_complete();
        let mismatch = |error: StoreError| match error {
            // Another process appended between our status and our write.
            StoreError::OffsetMismatch { stored } => UploadError::OffsetMismatch {
                stored,
                provided: start,
            },
            other => other.into(),
        };
        let (offset, interruption, modified_at) = match checksum {
            None => {
                let appended = store.append(&id, start, body).await.map_err(mismatch)?;
                (appended.offset, appended.interruption, appended.modified_at)
            }
            // Checksummed bytes are set aside and count only once verified.
            Some((expected, digests)) => {
                let staged = store.stage(&id, start, body).await.map_err(mismatch)?;
                let verdict = verify(expected, digests, staged.interruption.as_ref());
                if let Err(error) = verdict {
                    store.discard_staged(&id).await?;
                    tracing::info!(upload = %id, %error, "chunk discarded");
                    return Err(match (error, quota_cut) {
                        (Rejected::Cut(BodyError::TooLong), Some(limit)) => {
                            UploadError::QuotaBytes {
                                limit,
                                stored: Some(start),
                            }
                        }
                        (error, _) => error.into_upload_error(start),
                    });
                }
                let offset = store.commit_staged(&id, start).await.map_err(mismatch)?;
                (offset, None, None)
            }
        };
        // A checksum that came unannounced cannot be checked any more (nothing was digested:
        // digesting and setting aside every PATCH just in case would cost each one): the bytes
        // count, and the answer says nothing checked them.
        let unverified = interruption.is_none() && unannounced_trailer.is_some_and(|came| came());
        status.offset = offset;
        // The time the store recorded, when it did: the answer's expiry is then exactly what
        // a later status reports, not a moment after it.
        status.modified_at = modified_at.unwrap_or_else(|| clock.now());
        if ends_upload && interruption.is_none() && status.info.length == Length::Deferred {
            status.info.length = Length::Known(status.offset.0);
            store.update(&status.info).await?;
        }
        if let Some(hooks) = &hooks {
            hooks.received(&*store, &status, offset > start).await;
        }
        let owes_finish = hooks::owes_finish(hooks.as_deref(), &status);
        if status.is_complete() && !was_complete {
            observer.upload(UploadEvent::Completed, status.info.protocol());
        }
        if status.is_complete() && (!was_complete || owes_finish) {
            hooks::finish(&*store, hooks.as_deref(), &mut status).await?;
        }
        release(guard).await;
        if unverified {
            return Err(UploadError::ChecksumNotAnnounced {
                stored: status.offset,
            });
        }
        match interruption {
            None => Ok(status),
            Some(BodyError::TooLong) => Err(match quota_cut {
                Some(limit) => UploadError::QuotaBytes {
                    limit,
                    stored: Some(status.offset),
                },
                None => UploadError::BodyTooLong {
                    stored: status.offset,
                },
            }),
            Some(reason) => Err(UploadError::Interrupted {
                stored: status.offset,
                reason,
            }),
        }
    }
}

/// Runs `work` holding `guard`, then releases it, whatever the outcome.
async fn under<T>(guard: LockGuard, work: impl Future<Output = T>) -> T {
    let outcome = work.await;
    release(guard).await;
    outcome
}

/// Frees `guard` where an operation ends. The operation is done (or failed) either way, so a
/// failure only matters to the logs: a lock lost meanwhile was lost after the work it covered
/// (a body stops when its lock is lost), and a backend that did not answer lets the lease run
/// out.
async fn release(guard: LockGuard) {
    if let Err(error) = guard.release().await {
        tracing::warn!(%error, "releasing a lock failed");
    }
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Feeds every chunk that reaches the store through the digests the checksum needs.
fn digesting(
    body: BodyStream,
    checksum: Option<&ExpectedChecksum>,
) -> (BodyStream, Option<Arc<Mutex<Digests>>>) {
    let digests = match checksum {
        None => return (body, None),
        Some(ExpectedChecksum::Header(checksum)) => Digests::one(checksum.algorithm),
        Some(ExpectedChecksum::Trailer(_)) => Digests::all(),
    };
    let digests = Arc::new(Mutex::new(digests));
    let feeding = digests.clone();
    let body = body
        .inspect_ok(move |chunk| {
            feeding
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .update(chunk);
        })
        .boxed();
    (body, Some(digests))
}

/// Why a checksummed chunk is discarded.
enum Rejected {
    /// The body did not arrive whole, so it cannot be verified.
    Cut(BodyError),
    /// The digest differs.
    Mismatch,
    /// The trailer is missing or malformed.
    BadTrailer(String),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Cut(reason) => write!(formatter, "incomplete chunk: {reason}"),
            Rejected::Mismatch => formatter.write_str("checksum mismatch"),
            Rejected::BadTrailer(message) => write!(formatter, "checksum trailer: {message}"),
        }
    }
}

impl Rejected {
    fn into_upload_error(self, stored: Offset) -> UploadError {
        match self {
            Rejected::Cut(BodyError::TooLong) => UploadError::BodyTooLong { stored },
            Rejected::Cut(reason) => UploadError::Interrupted { stored, reason },
            Rejected::Mismatch => UploadError::ChecksumMismatch { stored },
            Rejected::BadTrailer(message) => UploadError::InvalidChecksum(message),
        }
    }
}

fn verify(
    expected: ExpectedChecksum,
    digests: Arc<Mutex<Digests>>,
    interruption: Option<&BodyError>,
) -> Result<(), Rejected> {
    if let Some(reason) = interruption {
        return Err(Rejected::Cut(reason.clone()));
    }
    let checksum = match expected {
        ExpectedChecksum::Header(checksum) => checksum,
        ExpectedChecksum::Trailer(read) => read()
            .map_err(Rejected::BadTrailer)?
            .ok_or_else(|| Rejected::BadTrailer("announced but not sent".into()))?,
    };
    let digests = Arc::try_unwrap(digests)
        .map_err(|_| Rejected::BadTrailer("digest still in use".into()))?
        .into_inner()
        .unwrap_or_else(|poison| poison.into_inner());
    match digests.finish(checksum.algorithm) {
        Some(actual) if actual == checksum.digest => Ok(()),
        _ => Err(Rejected::Mismatch),
    }
}
