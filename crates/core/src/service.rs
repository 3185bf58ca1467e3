//! The upload service: the rules every protocol front-end shares, over any [`Store`] and
//! [`Locker`].

use crate::body::{BodyLimits, BodyStops, GuardedBody};
use crate::lock::{LockError, LockGuard, Locker};
use crate::model::{Length, Offset, Owner, UploadId, UploadInfo, UploadStatus};
use crate::store::{
    BodyError, BodyStream, ByteStream, Capabilities, Store, StoreError, client_key_digest,
};
use futures_util::StreamExt;
use resumable_proto::Metadata;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// The current time; injectable so tests can move it.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Settings of an [`UploadService`].
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The largest upload accepted, in bytes; `None` for no limit.
    pub max_size: Option<u64>,
    /// How long a request body may go without a byte before it is cut (its bytes are kept).
    pub body_idle_timeout: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_size: None,
            body_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Why an operation on an upload failed. Each front-end maps these to its own wire errors.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// No such upload for this owner.
    #[error("upload not found")]
    NotFound,
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
    /// Another request or process holds the upload and did not let go in time.
    #[error("the upload is busy")]
    Busy,
    /// No storage space left.
    #[error("storage is full")]
    StorageFull,
    /// The store cannot do this.
    #[error("not supported by this server's storage")]
    Unsupported,
    /// Anything else; details are logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
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
            StoreError::Io(error) => UploadError::Internal(error.to_string()),
        }
    }
}

impl From<LockError> for UploadError {
    fn from(error: LockError) -> Self {
        match error {
            LockError::Timeout => UploadError::Busy,
            LockError::Backend(message) => UploadError::Internal(message),
        }
    }
}

/// A new upload as a front-end describes it.
#[derive(Debug, Clone)]
pub struct NewUpload {
    /// Who creates it.
    pub owner: Owner,
    /// Its declared size.
    pub length: Length,
    /// The client's metadata.
    pub metadata: Metadata,
}

/// An append as a front-end describes it.
pub struct Append {
    /// Where the body starts.
    pub offset: Offset,
    /// A length declared with this request (tus deferred length, simple `X-File-Size`).
    pub declared_length: Option<u64>,
    /// The body's size, when the request announced it.
    pub content_length: Option<u64>,
    /// The body.
    pub body: BodyStream,
}

/// Create, append, inspect and remove uploads, enforcing ownership, locking, offsets and limits.
pub struct UploadService {
    store: Arc<dyn Store>,
    locker: Arc<dyn Locker>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    /// Cancelled at shutdown: bodies in flight stop, persist and answer.
    shutdown: CancellationToken,
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
            config,
            shutdown: CancellationToken::new(),
        }
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

    /// Creates an empty upload.
    pub async fn create(&self, new: NewUpload) -> Result<UploadStatus, UploadError> {
        self.create_keyed(new, None).await
    }

    async fn create_keyed(
        &self,
        new: NewUpload,
        client_key: Option<String>,
    ) -> Result<UploadStatus, UploadError> {
        if let Length::Known(length) = new.length {
            self.check_size(length)?;
        }
        let created_at = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let info = UploadInfo {
            id: UploadId::random(),
            owner: new.owner,
            length: new.length,
            metadata: new.metadata,
            client_key,
            created_at,
        };
        self.store.create(&info).await?;
        tracing::info!(upload = %info.id, length = ?info.length, "upload created");
        if info.length == Length::Known(0) {
            self.store.finish(&info.id).await?;
        }
        Ok(UploadStatus {
            info,
            offset: Offset(0),
        })
    }

    /// The upload's status, without interrupting a request in flight (for downloads).
    pub async fn inspect(&self, owner: &Owner, id: &UploadId) -> Result<UploadStatus, UploadError> {
        let status = self.store.status(id).await?;
        if &status.info.owner != owner {
            return Err(UploadError::NotFound);
        }
        Ok(status)
    }

    /// The upload's status once any request in flight has stopped and persisted what it had:
    /// the offset a client should resume from.
    pub async fn status(&self, owner: &Owner, id: &UploadId) -> Result<UploadStatus, UploadError> {
        let (_guard, status) = self.lock_owned(owner, id).await?;
        Ok(status)
    }

    /// The upload `owner` created with the simple protocol's `client_key`, if any.
    pub async fn find_by_key(
        &self,
        owner: &Owner,
        client_key: &str,
    ) -> Result<Option<UploadId>, UploadError> {
        Ok(self.store.find_by_key(owner, client_key).await?)
    }

    /// The upload of `client_key`, created (with `length`) if it does not exist yet.
    pub async fn open_by_key(
        &self,
        owner: &Owner,
        client_key: &str,
        length: Length,
    ) -> Result<UploadId, UploadError> {
        // Serialise creators of the same key so two first requests make one upload.
        let _guard = self
            .locker
            .lock(&format!("key:{}", client_key_digest(owner, client_key)))
            .await?;
        if let Some(id) = self.store.find_by_key(owner, client_key).await? {
            return Ok(id);
        }
        let new = NewUpload {
            owner: owner.clone(),
            length,
            metadata: Metadata::default(),
        };
        let status = self.create_keyed(new, Some(client_key.to_owned())).await?;
        Ok(status.info.id)
    }

    /// Appends a body; see [`Append`]. Returns the status with the new durable offset.
    pub async fn append(
        &self,
        owner: &Owner,
        id: &UploadId,
        append: Append,
    ) -> Result<UploadStatus, UploadError> {
        let (guard, mut status) = self.lock_owned(owner, id).await?;
        if append.offset != status.offset {
            return Err(UploadError::OffsetMismatch {
                stored: status.offset,
                provided: append.offset,
            });
        }
        if let Some(length) = append.declared_length {
            self.declare_length(&mut status, length).await?;
        }
        let remaining = self.remaining(&status);
        if append
            .content_length
            .is_some_and(|length| length > remaining)
        {
            return Err(UploadError::BodyTooLong {
                stored: status.offset,
            });
        }
        let was_complete = status.is_complete();
        let limits = BodyLimits {
            remaining,
            idle_timeout: self.config.body_idle_timeout,
        };
        let stops = BodyStops {
            takeover: guard.takeover_requested(),
            shutdown: self.shutdown.clone().cancelled_owned(),
        };
        let body = GuardedBody::new(append.body, stops, limits).boxed();
        let appended =
            self.store
                .append(id, status.offset, body)
                .await
                .map_err(|error| match error {
                    // Another process appended between our status and our append.
                    StoreError::OffsetMismatch { stored } => UploadError::OffsetMismatch {
                        stored,
                        provided: append.offset,
                    },
                    other => other.into(),
                })?;
        status.offset = appended.offset;
        if status.is_complete() && !was_complete {
            self.store.finish(id).await?;
            tracing::info!(upload = %id, length = status.offset.0, "upload complete");
        }
        if let Some(reason) = &appended.interruption {
            tracing::debug!(upload = %id, offset = status.offset.0, %reason, "append ended early");
        }
        drop(guard);
        match appended.interruption {
            None => Ok(status),
            Some(BodyError::TooLong) => Err(UploadError::BodyTooLong {
                stored: status.offset,
            }),
            Some(reason) => Err(UploadError::Interrupted {
                stored: status.offset,
                reason,
            }),
        }
    }

    /// Removes an upload and its bytes.
    pub async fn terminate(&self, owner: &Owner, id: &UploadId) -> Result<(), UploadError> {
        if !self.capabilities().terminate {
            return Err(UploadError::Unsupported);
        }
        let (_guard, _status) = self.lock_owned(owner, id).await?;
        self.store.terminate(id).await?;
        tracing::info!(upload = %id, "upload terminated");
        Ok(())
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
        let status = self.inspect(owner, id).await?;
        if !status.is_complete() {
            return Err(UploadError::Incomplete);
        }
        Ok(self.store.read(id, range).await?)
    }

    /// Takes the upload's lock (asking any request in flight to let go) after checking the owner,
    /// and returns the status as it stands once the lock is held.
    async fn lock_owned(
        &self,
        owner: &Owner,
        id: &UploadId,
    ) -> Result<(LockGuard, UploadStatus), UploadError> {
        // Check ownership first so a stranger cannot interrupt someone else's upload.
        self.inspect(owner, id).await?;
        let guard = self.locker.lock(id.as_str()).await?;
        let status = self.store.status(id).await?;
        Ok((guard, status))
    }

    async fn declare_length(
        &self,
        status: &mut UploadStatus,
        length: u64,
    ) -> Result<(), UploadError> {
        match status.info.length {
            Length::Known(declared) if declared == length => Ok(()),
            Length::Known(declared) => Err(UploadError::LengthConflict { declared }),
            Length::Deferred => {
                self.check_size(length)?;
                if length < status.offset.0 {
                    return Err(UploadError::LengthBelowOffset {
                        length,
                        stored: status.offset,
                    });
                }
                status.info.length = Length::Known(length);
                self.store.update(&status.info).await?;
                if status.is_complete() {
                    self.store.finish(&status.info.id).await?;
                }
                Ok(())
            }
        }
    }

    fn remaining(&self, status: &UploadStatus) -> u64 {
        let limit = status
            .info
            .length
            .known()
            .or(self.config.max_size)
            .unwrap_or(u64::MAX);
        limit.saturating_sub(status.offset.0)
    }

    fn check_size(&self, length: u64) -> Result<(), UploadError> {
        match self.config.max_size {
            Some(max) if length > max => Err(UploadError::TooLarge { length, max }),
            _ => Ok(()),
        }
    }
}
