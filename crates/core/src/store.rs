//! The storage contract every backend implements.

use crate::model::{Offset, Owner, UploadId, UploadInfo, UploadStatus};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use std::io;
use std::ops::Range;
use std::time::Duration;

/// Why a request body ended before its natural end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The connection failed or the client stopped sending.
    #[error("request body interrupted: {0}")]
    Interrupted(String),
    /// No bytes arrived for longer than the idle timeout.
    #[error("request body stalled")]
    Stalled,
    /// Bytes kept arriving, but over a whole window fewer than the minimum rate allows.
    #[error("request body slower than the minimum of {min_bytes_per_second} bytes/s")]
    TooSlow {
        /// The minimum rate, in bytes per second.
        min_bytes_per_second: u64,
    },
    /// Another request asked for this upload's lock.
    #[error("another request took over this upload")]
    TakenOver,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The upload's lock was lost (its lease ran out, or the lock service is unreachable), so
    /// the request stopped writing; retry.
    #[error("lost the upload's lock; retry")]
    LockLost,
    /// The body goes past the upload's length (or the size limit); nothing past it is stored.
    #[error("request body goes past the upload's length")]
    TooLong,
}

/// A request body as the store sees it: chunks, ending cleanly or with a [`BodyError`].
pub type BodyStream = BoxStream<'static, Result<Bytes, BodyError>>;

/// Stored bytes read back.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// The result of an append: the new durable offset, and why the body stopped early, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Bytes durably stored after the append (synced before this value is returned).
    pub offset: Offset,
    /// `Some` when the body ended with an error; every byte received before it is stored.
    pub interruption: Option<BodyError>,
    /// The write time the store recorded for this append (what [`Store::status`] reports as
    /// `modified_at` from now on); `None` when it recorded none (nothing was written).
    pub modified_at: Option<std::time::SystemTime>,
}

/// What [`Store::stage`] set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// How many bytes are set aside.
    pub length: u64,
    /// `Some` when the body ended with an error; every byte received before it is set aside.
    pub interruption: Option<BodyError>,
}

/// What a backend supports beyond the core operations; protocol front-ends advertise extensions
/// from these flags, never from a fixed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// [`Store::terminate`] removes uploads.
    pub terminate: bool,
    /// [`Store::read`] serves stored bytes back.
    pub read: bool,
    /// [`Store::stage`] sets bytes aside until they are verified (what checksums need).
    pub stage: bool,
    /// [`Store::concatenate`] assembles final uploads.
    pub concatenate: bool,
    /// [`Store::list`] enumerates uploads (what the expiry sweeper needs).
    pub list: bool,
    /// [`Store::find_by_key`] finds uploads by their creator's client key: the index the simple
    /// protocol's `X-File-Id` needs (an object store may have no cheap place for it).
    pub client_keys: bool,
}

/// Where a store keeps an upload's bytes, as hooks report it (so a receiver can pick the
/// finished file up without downloading it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageLocation {
    /// The kind of store: `file`, later `s3`, ….
    #[serde(rename = "type")]
    pub kind: String,
    /// Where in it: a file store's path of the data file.
    pub path: String,
}

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No upload with that id (or it was terminated). Only about the upload itself: a store
    /// that cannot reach its storage cannot tell, and says so with a [`BackendError`] of kind
    /// [`BackendKind::Unavailable`].
    #[error("upload not found")]
    NotFound,
    /// The append started at the wrong offset; nothing was written.
    #[error("offset mismatch: {stored} bytes stored")]
    OffsetMismatch {
        /// Bytes actually stored.
        stored: Offset,
    },
    /// Another process holds the upload's lock.
    #[error("upload is locked by another process")]
    Locked,
    /// The backend has no room left; what was written before is kept and synced.
    #[error("storage is full")]
    Full,
    /// The backend lacks this operation (see [`Capabilities`]).
    #[error("operation not supported by this store")]
    Unsupported,
    /// The backend itself failed; nothing is said about the upload.
    #[error("{kind}: {0}", kind = .0.kind())]
    Backend(#[from] BackendError),
}

/// What kind of failure a [`BackendError`] is: the kind decides the answer's status, so each
/// backend sorts its own errors (`errno`s, S3 error codes, …) into these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The storage cannot be reached (a file store's directory removed or made unreadable, an
    /// object store that does not answer): every upload is affected.
    Unavailable,
    /// Out of a resource (file descriptors, connections, a memory budget).
    Exhausted,
    /// Anything else: logged, never shown to clients.
    Failed,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            BackendKind::Unavailable => "storage unavailable",
            BackendKind::Exhausted => "out of resources",
            BackendKind::Failed => "storage failed",
        })
    }
}

/// A failure of the backend, in terms any backend can give: its [`BackendKind`], whether the
/// same call may succeed later, and what the store was doing (for the log).
#[derive(Debug)]
pub struct BackendError {
    kind: BackendKind,
    temporary: bool,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BackendError {
    fn new(
        kind: BackendKind,
        temporary: bool,
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        BackendError {
            kind,
            temporary,
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// The storage cannot be reached; temporary: it may come back.
    pub fn unavailable(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        BackendError::new(BackendKind::Unavailable, true, context, source)
    }

    /// Out of a resource; temporary: others may release theirs.
    pub fn exhausted(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        BackendError::new(BackendKind::Exhausted, true, context, source)
    }

    /// Any other failure; not temporary unless the backend knows better (see
    /// [`BackendError::temporary`]).
    pub fn failed(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        BackendError::new(BackendKind::Failed, false, context, source)
    }

    /// The same error, temporary or not as the backend knows (say, an object store's
    /// "internal error, retry" is a failure that retrying may cure).
    pub fn temporary(mut self, yes: bool) -> Self {
        self.temporary = yes;
        self
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// Whether the same call may succeed later: what decides if clients are told to retry.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// What the store was doing, or on what (a file store names the path).
    pub fn context(&self) -> &str {
        &self.context
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(source) => write!(formatter, "{}: {source}", self.context),
            None => formatter.write_str(&self.context),
        }
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl StoreError {
    /// Classifies an I/O error, recognising a full disk and exhaustion; anything else is a
    /// [`BackendKind::Failed`]. A missing file is not [`StoreError::NotFound`] here: only the
    /// store knows whether it was an upload's own record (the upload does not exist) or
    /// something it needs (a fault).
    pub fn from_io(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreError::Full,
            // EMFILE, ENFILE: too many open files, in this process or the system.
            _ if matches!(error.raw_os_error(), Some(24 | 23)) => {
                BackendError::exhausted("open files", error).into()
            }
            _ => BackendError::failed("file system", error).into(),
        }
    }
}

/// As [`StoreError::from_io`], so that `?` classifies.
impl From<io::Error> for StoreError {
    fn from(error: io::Error) -> Self {
        StoreError::from_io(error)
    }
}

/// Persistent storage of uploads.
///
/// # Behavior
///
/// The conformance kit ([`crate::conformance`]) checks every item below on every backend.
///
/// - `create` persists the info durably; the offset of a new upload is 0.
/// - `status` returns the persisted info and the count of bytes durably stored; unknown ids
///   (and terminated ones) are [`StoreError::NotFound`].
/// - `append` writes the body at `offset` only if exactly `offset` bytes are stored (else
///   [`StoreError::OffsetMismatch`] and nothing is written). It stores every chunk the body
///   yields, in order, until the body ends or fails; then it makes the bytes durable and returns
///   the new offset. A failing body is not an error of the append: it is reported in
///   [`Appended::interruption`] and the bytes before it are kept. The store never checks the
///   upload's length: the service limits the body before it reaches the store.
/// - `update` replaces the info (e.g. a deferred length becoming known), durably and atomically.
/// - `finish` is called once every byte is stored; it may assemble the upload (S3). Idempotent.
/// - `terminate` removes the upload and its bytes; afterwards `status` is `NotFound`.
/// - `read` returns the stored bytes in `range` (within the offset).
/// - `find_by_key` returns the upload created with `client_key` by `owner`, if it still exists,
///   in a store that declares [`Capabilities::client_keys`]; one that does not may answer
///   [`StoreError::Unsupported`], and the service never asks it (nor creates an upload with a
///   client key in it).
/// - `stage` stores the body aside, as `append` would (only if exactly `offset` bytes are
///   stored, else [`StoreError::OffsetMismatch`]), but the bytes do not count: `status` and
///   `read` do not see them, and a crash may lose them. A new `stage` replaces what an earlier
///   one set aside.
/// - `commit_staged` appends what `stage` set aside, only if exactly `offset` bytes are stored
///   (else [`StoreError::OffsetMismatch`] and nothing is written), durably, and returns the new
///   offset; the staged bytes are gone afterwards. After a crash, the upload holds at most the
///   staged bytes' prefix beyond `offset`, never other bytes.
/// - `discard_staged` drops what `stage` set aside; the upload is unchanged.
/// - `concatenate` makes the bytes of `target` the parts' bytes in order (replacing any it had),
///   durably; it may be called again after a crash and gives the same result.
/// - `list` pages through the uploads `status` can see: their ids in ascending order of
///   [`UploadId::as_str`], strictly after `start_after` (from the first when `None`; it need
///   not be an upload's id), at most `limit` of them. A page shorter than `limit` is the last.
///   Walking on from each page's last id visits every upload that exists throughout the walk
///   exactly once ([`Listing`] does it); one created or removed meanwhile may be missed.
/// - `status` reports when bytes were last written (`modified_at`).
/// - A failure of the backend itself (not a refusal about one upload) is
///   [`StoreError::Backend`]: its [`BackendKind`] says whether the storage is unreachable, out
///   of a resource, or failed otherwise, and [`BackendError::is_temporary`] whether the same
///   call may succeed later. A backend never answers [`StoreError::NotFound`] when it could not
///   look; a full backend is [`StoreError::Full`].
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Persists a new, empty upload.
    async fn create(&self, info: &UploadInfo) -> Result<(), StoreError>;

    /// The upload's info and durable offset.
    async fn status(&self, id: &UploadId) -> Result<UploadStatus, StoreError>;

    /// Appends a body at `offset`; see the trait's behaviour list.
    async fn append(
        &self,
        id: &UploadId,
        offset: Offset,
        body: BodyStream,
    ) -> Result<Appended, StoreError>;

    /// Replaces the upload's info.
    async fn update(&self, info: &UploadInfo) -> Result<(), StoreError>;

    /// Completes an upload whose bytes are all stored.
    async fn finish(&self, id: &UploadId) -> Result<(), StoreError>;

    /// Removes the upload and its bytes.
    async fn terminate(&self, id: &UploadId) -> Result<(), StoreError>;

    /// Reads stored bytes.
    async fn read(&self, id: &UploadId, range: Range<u64>) -> Result<ByteStream, StoreError>;

    /// The upload `owner` created under the simple protocol's `client_key`.
    async fn find_by_key(
        &self,
        owner: &Owner,
        client_key: &str,
    ) -> Result<Option<UploadId>, StoreError>;

    /// Sets a body aside, to be appended at `offset` once verified.
    async fn stage(
        &self,
        id: &UploadId,
        offset: Offset,
        body: BodyStream,
    ) -> Result<Staged, StoreError>;

    /// Appends at `offset` what [`Store::stage`] set aside.
    async fn commit_staged(&self, id: &UploadId, offset: Offset) -> Result<Offset, StoreError>;

    /// Drops what [`Store::stage`] set aside.
    async fn discard_staged(&self, id: &UploadId) -> Result<(), StoreError>;

    /// Writes the bytes of `parts`, in order, as the bytes of `target`.
    async fn concatenate(&self, target: &UploadId, parts: &[UploadId]) -> Result<(), StoreError>;

    /// A page of upload ids: at most `limit`, in order, after `start_after`.
    async fn list(
        &self,
        start_after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<UploadId>, StoreError>;

    /// Removes what a crash can leave behind that belongs to no upload (a file store's data
    /// file whose info was never written, or whose upload was being removed; half-written
    /// temporary files), once nothing has touched it for `min_age`. Returns how many things it
    /// removed. Backends without such leftovers keep the default.
    async fn remove_leftovers(&self, min_age: Duration) -> Result<usize, StoreError> {
        let _ = min_age;
        Ok(0)
    }

    /// Whether the backend answers, for readiness checks: cheap, and touching no upload. The
    /// default asks for the status of an upload that cannot exist, which a store that answers
    /// says is [`StoreError::NotFound`]; a fleet backend may ping its service instead.
    async fn probe(&self) -> Result<(), StoreError> {
        match self.status(&UploadId::random()).await {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Where the upload's bytes are kept, for hook payloads; `None` (the default) for a store
    /// with nothing useful to name.
    fn location(&self, id: &UploadId) -> Option<StorageLocation> {
        let _ = id;
        None
    }
}

/// A walk over a store's uploads, one [`Store::list`] page at a time, so that a sweep over
/// any number of uploads holds one page of ids, not all of them.
pub struct Listing<'a> {
    store: &'a dyn Store,
    page_size: usize,
    /// The last id of the last page; the next page starts after it.
    after: Option<UploadId>,
    ended: bool,
}

impl<'a> Listing<'a> {
    /// A walk from the first upload, in pages of `page_size` ids (at least one).
    pub fn new(store: &'a dyn Store, page_size: usize) -> Self {
        Listing {
            store,
            page_size: page_size.max(1),
            after: None,
            ended: false,
        }
    }

    /// The next page; `None` once the walk is over.
    pub async fn next_page(&mut self) -> Result<Option<Vec<UploadId>>, StoreError> {
        if self.ended {
            return Ok(None);
        }
        let page = self.store.list(self.after.as_ref(), self.page_size).await?;
        // A page out of order could walk forever (one not after the last), or skip uploads.
        let ascending = page.windows(2).all(|pair| pair[0] < pair[1]);
        let advances = match (&self.after, page.first()) {
            (Some(after), Some(first)) => first > after,
            _ => true,
        };
        if !ascending || !advances || page.len() > self.page_size {
            self.ended = true;
            let message = "a page of ids out of order, or too long";
            return Err(BackendError::failed("listing uploads", message).into());
        }
        self.ended = page.len() < self.page_size;
        match page.last() {
            Some(last) => self.after = Some(last.clone()),
            None => return Ok(None),
        }
        Ok(Some(page))
    }
}

/// A stable, path-safe name for an (owner, client key) pair: hex SHA-256 of both, length-prefixed
/// so that no two pairs share a name.
pub fn client_key_digest(owner: &Owner, client_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update((owner.as_str().len() as u64).to_be_bytes());
    hasher.update(owner.as_str());
    hasher.update(client_key);
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified() {
        let full = StoreError::from_io(io::Error::from(io::ErrorKind::StorageFull));
        assert!(matches!(full, StoreError::Full));
        let kind = |error: StoreError| match error {
            StoreError::Backend(error) => (error.kind(), error.is_temporary()),
            other => panic!("{other:?}"),
        };
        let emfile = StoreError::from_io(io::Error::from_raw_os_error(24));
        assert_eq!(kind(emfile), (BackendKind::Exhausted, true));
        let missing = StoreError::from_io(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(kind(missing), (BackendKind::Failed, false));
        let other = StoreError::from(io::Error::other("boom"));
        assert_eq!(kind(other), (BackendKind::Failed, false));
    }

    #[test]
    fn backend_errors_keep_their_context_and_source() {
        let error = BackendError::unavailable("/srv/uploads", io::Error::other("gone"));
        assert_eq!(error.to_string(), "/srv/uploads: gone");
        assert_eq!(error.context(), "/srv/uploads");
        let source = std::error::Error::source(&error).expect("a source");
        assert_eq!(source.to_string(), "gone");
        let failed = BackendError::failed("write", "disk said no");
        assert!(!failed.is_temporary());
        assert!(failed.temporary(true).is_temporary());
        let store = StoreError::from(BackendError::exhausted("connections", "pool empty"));
        assert_eq!(
            store.to_string(),
            "out of resources: connections: pool empty"
        );
    }
}
