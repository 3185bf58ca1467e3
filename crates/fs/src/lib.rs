//! The local-disk store of resumable, its embedded default.
//!
//! # Layout on disk
//!
//! ```text
//! ROOT/uploads/ID.bin     the upload's bytes, append-only
//! ROOT/uploads/ID.len     its committed length: bytes of ID.bin known durable (`committed`)
//! ROOT/uploads/ID.info    the upload's info as JSON, replaced atomically (temp, fsync, rename)
//! ROOT/uploads/ID.staged  a checksummed chunk set aside until verified (`Store::stage`)
//! ROOT/keys/DIGEST        the id of a simple-protocol upload, DIGEST = sha256(owner, X-File-Id)
//! ROOT/outbox/SEQ.json    a hook event awaiting delivery ([`FileOutbox`])
//! ```
//!
//! A missing file is [`StoreError::NotFound`] only when it is an upload's own file and the
//! uploads directory is there; anything else missing or unreadable (the directories removed
//! under a running server, their permissions changed) is a [`BackendError`] of kind
//! [`BackendKind::Unavailable`](resumable_core::BackendKind::Unavailable), never an upload said
//! not to exist. The directories are not silently recreated: they may be a mount
//! that is not there yet.
//!
//! Names are built only from [`UploadId`]s (32 hex digits) and hex digests, never from client
//! input. The offset is the committed length (never more than the data file holds): bytes are
//! written in order, `fdatasync`ed, and only then recorded as committed, so after a crash or a
//! power cut every byte below the offset is what was sent; bytes past it (written but never
//! committed, or zeros a power cut left) are cut off by the next append. Each write holds an
//! exclusive `flock` on the data file and checks it first, so two server processes sharing a
//! data dir cannot interleave writes to one upload.
//!
//! Appends gather chunks into batches written by short blocking tasks (at most one in flight
//! per upload; the last batch and the sync share one task), so memory per upload is bounded
//! whatever its size and an idle upload holds no thread (`write`). Long aligned runs skip the
//! page cache (`direct`).

mod committed;
mod direct;
mod outbox;
mod write;

pub use outbox::FileOutbox;

use async_trait::async_trait;
use futures_util::StreamExt;
use resumable_core::store::client_key_digest;
use resumable_core::{
    Appended, BackendError, BodyStream, ByteStream, Capabilities, Clock, Offset, Owner, Staged,
    StorageLocation, Store, StoreError, UploadId, UploadInfo, UploadStatus,
};
use std::fs::{File, OpenOptions};
use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Settings of a [`FileStore`].
#[derive(Clone)]
pub struct FileStoreConfig {
    /// The directory holding everything.
    pub root: PathBuf,
    /// How long an append waits for another process's lock on the same upload.
    pub lock_timeout: Duration,
    /// The time written as a data file's modification time after each write, so that expiry
    /// runs on the same (injectable) clock as the service.
    pub clock: Arc<dyn Clock>,
    /// Whether long runs of an append skip the page cache (`O_DIRECT`; see the `direct`
    /// module). Where the file system refuses it, appends fall back by themselves.
    pub direct_io: bool,
}

/// Uploads stored on local disk.
#[derive(Clone)]
pub struct FileStore {
    uploads: PathBuf,
    keys: PathBuf,
    lock_timeout: Duration,
    clock: Arc<dyn Clock>,
    direct: Arc<direct::DirectWriter>,
    streams: Arc<write::Streams>,
}

/// Aligned buffers (2.5 MiB) for direct writes, shared by all uploads: enough to keep the disk
/// busy on two cores, few enough that memory stays flat under hundreds of uploads (the others
/// write through the page cache meanwhile).
const DIRECT_BUFFERS: usize = 8;

/// Size of the reads that serve downloads.
const READ_BUFFER: usize = 256 * 1024;

impl FileStore {
    /// Opens (creating if needed) a store under `config.root`.
    pub async fn open(config: FileStoreConfig) -> io::Result<Self> {
        let store = FileStore {
            uploads: config.root.join("uploads"),
            keys: config.root.join("keys"),
            lock_timeout: config.lock_timeout,
            clock: config.clock,
            direct: Arc::new(direct::DirectWriter::new(if config.direct_io {
                DIRECT_BUFFERS
            } else {
                0
            })),
            streams: Arc::default(),
        };
        let root = config.root;
        tokio::task::spawn_blocking(move || settle(&root))
            .await
            .map_err(io::Error::other)??;
        Ok(store)
    }

    fn data_path(&self, id: &UploadId) -> PathBuf {
        self.uploads.join(format!("{id}.bin"))
    }

    fn committed_path(&self, id: &UploadId) -> PathBuf {
        self.uploads.join(format!("{id}.len"))
    }

    fn staged_path(&self, id: &UploadId) -> PathBuf {
        self.uploads.join(format!("{id}.staged"))
    }

    fn info_path(&self, id: &UploadId) -> PathBuf {
        self.uploads.join(format!("{id}.info"))
    }

    fn key_path(&self, owner: &Owner, client_key: &str) -> PathBuf {
        self.keys.join(client_key_digest(owner, client_key))
    }

    /// Where and how an append to `path` writes, committing to `committed` (none: bytes set
    /// aside).
    fn target(&self, path: PathBuf, committed: Option<PathBuf>) -> write::Target {
        write::Target {
            path,
            clock: self.clock.clone(),
            direct: self.direct.clone(),
            streams: self.streams.clone(),
            committed,
        }
    }

    async fn read_info(&self, id: &UploadId) -> Result<UploadInfo, StoreError> {
        let (uploads, path) = (self.uploads.clone(), self.info_path(id));
        let bytes = blocking(move || std::fs::read(&path).of_upload(&uploads, &path)).await?;
        decode_info(&bytes)
    }

    /// Opens the data file for appending and takes its cross-process lock.
    async fn open_locked(&self, id: &UploadId) -> Result<File, StoreError> {
        let (uploads, path) = (self.uploads.clone(), self.data_path(id));
        let file = blocking(move || {
            let file = OpenOptions::new().append(true).open(&path);
            file.of_upload(&uploads, &path)
        })
        .await?;
        let deadline = tokio::time::Instant::now() + self.lock_timeout;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(std::fs::TryLockError::Error(error)) => return Err(StoreError::from_io(error)),
            }
        }
    }
}

/// Makes the store's directories exist, durably.
fn settle(root: &Path) -> io::Result<()> {
    for directory in [root.join("uploads"), root.join("keys")] {
        std::fs::create_dir_all(&directory)?;
    }
    sync_directory(root)?;
    if let Some(parent) = root
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        sync_directory(parent)?;
    }
    Ok(())
}

fn decode_info(bytes: &[u8]) -> Result<UploadInfo, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| BackendError::failed("an upload's info file", error).into())
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| BackendError::failed("a blocking task", error))?
}

/// What an I/O error on a path means to the store (see the crate docs).
trait IoAt<T> {
    /// On something the store needs (its directories, a file it creates): a fault of the store.
    fn at(self, path: &Path) -> Result<T, StoreError>;
    /// On one upload's own file: missing is the upload not existing, if `uploads` is there.
    fn of_upload(self, uploads: &Path, path: &Path) -> Result<T, StoreError>;
}

impl<T> IoAt<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|error| fault(path, error))
    }

    fn of_upload(self, uploads: &Path, path: &Path) -> Result<T, StoreError> {
        self.map_err(|error| upload_fault(uploads, path, error))
    }
}

/// A failure on `path`: missing or unreadable makes the storage unavailable (the cause names
/// the path, for the log); anything else as [`StoreError::from_io`].
fn fault(path: &Path, error: io::Error) -> StoreError {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
            BackendError::unavailable(path.display().to_string(), error).into()
        }
        _ => StoreError::from_io(error),
    }
}

/// A failure on `path`, one upload's own file: missing while the uploads directory is there
/// means the upload does not exist (never created, or removed meanwhile).
fn upload_fault(uploads: &Path, path: &Path, error: io::Error) -> StoreError {
    if error.kind() == io::ErrorKind::NotFound && uploads.is_dir() {
        return StoreError::NotFound;
    }
    fault(path, error)
}

/// Replaces `path` with `bytes` so that readers see the old or the new content, never a mix,
/// and the new content survives a crash once this returns.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let directory = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent"))?;
    let temporary = directory.join(format!(".{}.{}.tmp", file_name(path), UploadId::random()));
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    sync_directory(directory)
}

/// The last component of a path the store built (always UTF-8).
fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("file")
}

fn sync_directory(directory: &Path) -> io::Result<()> {
    File::open(directory)?.sync_all()
}

#[async_trait]
impl Store for FileStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            terminate: true,
            read: true,
            stage: true,
            concatenate: true,
            list: true,
            client_keys: true,
        }
    }

    async fn create(&self, info: &UploadInfo) -> Result<(), StoreError> {
        let data = self.data_path(&info.id);
        let info_path = self.info_path(&info.id);
        let key = info
            .client_key
            .as_ref()
            .map(|client_key| self.key_path(&info.owner, client_key));
        let encoded = serde_json::to_vec(info).map_err(io::Error::other)?;
        let id = info.id.to_string();
        let now = self.clock.now();
        let committed = self.committed_path(&info.id);
        blocking(move || {
            // Data first: an info file always has its data file beside it.
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&data)
                .at(&data)?;
            file.set_modified(now).at(&data)?;
            committed::create(&committed).at(&committed)?;
            write_atomically(&info_path, &encoded).at(&info_path)?;
            if let Some(key) = key {
                write_atomically(&key, id.as_bytes()).at(&key)?;
            }
            Ok(())
        })
        .await
    }

    async fn status(&self, id: &UploadId) -> Result<UploadStatus, StoreError> {
        let info_path = self.info_path(id);
        let data_path = self.data_path(id);
        let committed_path = self.committed_path(id);
        let uploads = self.uploads.clone();
        // One trip to the blocking pool for the three reads: the trip costs more than the
        // reads (two trips per status held HEADs to half the rate). The reads stay off the
        // async threads all the same: on a cold cache or a network file system they can take
        // long.
        let (info, metadata, offset) = blocking(move || {
            let info = std::fs::read(&info_path).of_upload(&uploads, &info_path)?;
            let metadata = std::fs::metadata(&data_path).of_upload(&uploads, &data_path)?;
            let offset = committed::stored(&committed_path, metadata.len()).at(&committed_path)?;
            Ok((info, metadata, offset))
        })
        .await?;
        Ok(UploadStatus {
            info: decode_info(&info)?,
            offset: Offset(offset),
            modified_at: metadata.modified().map_err(StoreError::from_io)?,
        })
    }

    async fn append(
        &self,
        id: &UploadId,
        offset: Offset,
        body: BodyStream,
    ) -> Result<Appended, StoreError> {
        // Each batch takes the data file's lock and checks its length (see `write`): nothing
        // stays open while the client is quiet.
        let target = self.target(self.data_path(id), Some(self.committed_path(id)));
        let written = write::stream_to_file(target, offset.0, body).await;
        let durable = Offset(written.durable_length);
        let Some(error) = written.error else {
            return Ok(Appended {
                offset: durable,
                interruption: written.interruption,
                modified_at: written.modified_at,
            });
        };
        match error {
            // Another process appended before our first write: the offset the client sent is
            // no longer the stored one.
            write::WriteError::LengthChanged { expected, .. } if expected == offset.0 => {
                Err(StoreError::OffsetMismatch { stored: durable })
            }
            write::WriteError::LengthChanged { .. } => {
                tracing::warn!(upload = %id, offset = %durable, "another process appended meanwhile");
                Err(StoreError::Locked)
            }
            write::WriteError::Io(error) => {
                tracing::warn!(upload = %id, offset = %durable, %error, "append stopped by a write error");
                Err(upload_fault(&self.uploads, &self.data_path(id), error))
            }
        }
    }

    async fn update(&self, info: &UploadInfo) -> Result<(), StoreError> {
        self.read_info(&info.id).await?;
        let path = self.info_path(&info.id);
        let encoded = serde_json::to_vec(info).map_err(io::Error::other)?;
        blocking(move || write_atomically(&path, &encoded).at(&path)).await
    }

    async fn finish(&self, id: &UploadId) -> Result<(), StoreError> {
        // The data file already is the finished upload.
        self.read_info(id).await.map(|_| ())
    }

    async fn terminate(&self, id: &UploadId) -> Result<(), StoreError> {
        let info = self.read_info(id).await?;
        let info_path = self.info_path(id);
        let data = self.data_path(id);
        let staged = self.staged_path(id);
        let record = self.committed_path(id);
        let key = info
            .client_key
            .as_ref()
            .map(|client_key| self.key_path(&info.owner, client_key));
        let directory = self.uploads.clone();
        let id = id.to_string();
        blocking(move || {
            // Info first: without it the upload no longer exists, whatever happens next.
            std::fs::remove_file(&info_path).of_upload(&directory, &info_path)?;
            sync_directory(&directory).at(&directory)?;
            remove_if_present(&data).at(&data)?;
            remove_if_present(&record).at(&record)?;
            remove_if_present(&staged).at(&staged)?;
            if let Some(key) = key
                && std::fs::read(&key).is_ok_and(|stored| stored == id.as_bytes())
            {
                remove_if_present(&key).at(&key)?;
            }
            Ok(())
        })
        .await
    }

    async fn read(&self, id: &UploadId, range: Range<u64>) -> Result<ByteStream, StoreError> {
        self.read_info(id).await?;
        let (uploads, path) = (self.uploads.clone(), self.data_path(id));
        let file = blocking(move || File::open(&path).of_upload(&uploads, &path)).await?;
        let mut file = tokio::fs::File::from_std(file);
        file.seek(SeekFrom::Start(range.start))
            .await
            .map_err(StoreError::from_io)?;
        let limited = file.take(range.end.saturating_sub(range.start));
        Ok(tokio_util::io::ReaderStream::with_capacity(limited, READ_BUFFER).boxed())
    }

    async fn find_by_key(
        &self,
        owner: &Owner,
        client_key: &str,
    ) -> Result<Option<UploadId>, StoreError> {
        let (keys, path) = (self.keys.clone(), self.key_path(owner, client_key));
        let stored = blocking(move || match std::fs::read_to_string(&path) {
            Ok(stored) => Ok(Some(stored)),
            // No key file in a keys directory that is there: no upload by that key.
            Err(error) if error.kind() == io::ErrorKind::NotFound && keys.is_dir() => Ok(None),
            Err(error) => Err(fault(&path, error)),
        });
        let Some(stored) = stored.await? else {
            return Ok(None);
        };
        let Ok(id) = stored.parse::<UploadId>() else {
            return Ok(None);
        };
        match self.read_info(&id).await {
            Ok(info) if &info.owner == owner => Ok(Some(id)),
            Ok(_) | Err(StoreError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn stage(
        &self,
        id: &UploadId,
        offset: Offset,
        body: BodyStream,
    ) -> Result<Staged, StoreError> {
        let stored = self.status(id).await?.offset;
        if stored != offset {
            return Err(StoreError::OffsetMismatch { stored });
        }
        let path = self.staged_path(id);
        let created = path.clone();
        blocking(move || File::create(&created).at(&created).map(drop)).await?;
        let target = self.target(path.clone(), None);
        let written = write::stream_to_file(target, 0, body).await;
        match written.error {
            None => {}
            Some(write::WriteError::Io(error)) => return Err(fault(&path, error)),
            // Only this request writes the set-aside file (it holds the upload's lock).
            Some(error @ write::WriteError::LengthChanged { .. }) => {
                let context = path.display().to_string();
                return Err(BackendError::failed(context, error).into());
            }
        }
        Ok(Staged {
            length: written.durable_length,
            interruption: written.interruption,
        })
    }

    async fn commit_staged(&self, id: &UploadId, offset: Offset) -> Result<Offset, StoreError> {
        let mut file = self.open_locked(id).await?;
        let staged = self.staged_path(id);
        let record = self.committed_path(id);
        let now = self.clock.now();
        let committed = blocking(move || {
            let mut commit = || {
                let found = file.metadata()?.len();
                let stored = committed::stored(&record, found)?;
                if stored != offset.0 {
                    return Ok(Err(stored));
                }
                // Bytes past the committed length were never acknowledged.
                if found > stored {
                    file.set_len(stored)?;
                }
                // Verified bytes only: a crash part-way leaves a prefix of them, which is the
                // client's. copy_file_range on Linux: no bytes pass through user space.
                std::io::copy(&mut File::open(&staged)?, &mut file)?;
                file.set_modified(now)?;
                let durable = file.metadata()?.len();
                file.sync_data()?;
                committed::store(&record, durable)?;
                remove_if_present(&staged)?;
                Ok(Ok(durable))
            };
            commit().at(&staged)
        })
        .await?;
        committed
            .map(Offset)
            .map_err(|stored| StoreError::OffsetMismatch {
                stored: Offset(stored),
            })
    }

    async fn discard_staged(&self, id: &UploadId) -> Result<(), StoreError> {
        let staged = self.staged_path(id);
        blocking(move || remove_if_present(&staged).at(&staged)).await
    }

    async fn concatenate(&self, target: &UploadId, parts: &[UploadId]) -> Result<(), StoreError> {
        for part in parts {
            self.read_info(part).await?;
        }
        let data = self.data_path(target);
        let record = self.committed_path(target);
        let directory = self.uploads.clone();
        let sources: Vec<(PathBuf, PathBuf)> = parts
            .iter()
            .map(|part| (self.data_path(part), self.committed_path(part)))
            .collect();
        let now = self.clock.now();
        blocking(move || {
            // Assembled aside and renamed over the data file once synced: the data file is
            // empty or whole, never part-way, and a second assembly (another process that also
            // saw the parts complete) replaces it with the same bytes instead of emptying an
            // upload that was already acknowledged complete.
            let name = format!(".{}.{}.tmp", file_name(&data), UploadId::random());
            let temporary = directory.join(name);
            let mut file = File::create(&temporary).at(&temporary)?;
            for (source, source_record) in &sources {
                let opened = File::open(source).of_upload(&directory, source)?;
                let found = opened.metadata().at(source)?.len();
                let stored = committed::stored(source_record, found).at(source)?;
                // std::io::copy uses copy_file_range on Linux: no bytes pass through user space.
                std::io::copy(&mut std::io::Read::take(opened, stored), &mut file)
                    .map_err(StoreError::from_io)?;
            }
            let settled = (|| {
                file.set_modified(now)?;
                file.sync_data()?;
                let length = file.metadata()?.len();
                std::fs::rename(&temporary, &data)?;
                sync_directory(&directory)?;
                committed::store(&record, length)
            })();
            settled.map_err(StoreError::from_io)
        })
        .await
    }

    async fn remove_leftovers(&self, min_age: Duration) -> Result<usize, StoreError> {
        let (uploads, keys) = (self.uploads.clone(), self.keys.clone());
        let cutoff = SystemTime::now()
            .checked_sub(min_age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        blocking(move || remove_leftovers_in(&uploads, &keys, cutoff)).await
    }

    fn location(&self, id: &UploadId) -> Option<StorageLocation> {
        // Absolute: a hook receiver does not share our working directory.
        let path = self.data_path(id);
        let path = std::path::absolute(&path).unwrap_or(path);
        Some(StorageLocation {
            kind: "file".into(),
            path: path.display().to_string(),
        })
    }

    async fn list(
        &self,
        start_after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<UploadId>, StoreError> {
        let directory = self.uploads.clone();
        let start_after = start_after.cloned();
        blocking(move || {
            // A directory has no order: each page reads it whole, keeping only what comes
            // after the last page, and sorts no more than the page it returns.
            let mut ids = Vec::new();
            for entry in std::fs::read_dir(&directory).at(&directory)? {
                let name = entry.at(&directory)?.file_name();
                let id = name
                    .to_str()
                    .and_then(|name| name.strip_suffix(".info"))
                    .and_then(|id| id.parse::<UploadId>().ok())
                    .filter(|id| start_after.as_ref().is_none_or(|after| id > after));
                ids.extend(id);
            }
            if ids.len() > limit {
                ids.select_nth_unstable(limit);
                ids.truncate(limit);
            }
            ids.sort_unstable();
            Ok(ids)
        })
        .await
    }
}

/// Removes the leftovers in the store's two directories (see [`Store::remove_leftovers`])
/// whose status last changed before `cutoff`; returns how many. A file whose fate cannot be
/// told (an I/O error while looking) is kept: removing a live upload's data is worse than
/// leaving a leftover for the next sweep.
fn remove_leftovers_in(
    uploads: &Path,
    keys: &Path,
    cutoff: SystemTime,
) -> Result<usize, StoreError> {
    let mut removed = 0;
    for directory in [uploads, keys] {
        for entry in std::fs::read_dir(directory).at(directory)? {
            let entry = entry.at(directory)?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let leftover = if directory == uploads {
                is_upload_leftover(uploads, &name)
            } else {
                is_key_leftover(uploads, &path, &name)
            };
            match leftover {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "cannot tell whether a file is a leftover; keeping it");
                    continue;
                }
            }
            // The status change time cannot be set back (unlike the modification time the
            // store stamps from its clock), so an old one means nobody is at work on the file.
            if changed_before(&entry.metadata().at(&path)?, cutoff) {
                tracing::info!(file = %path.display(), "removing a crash's leftover");
                remove_if_present(&path).at(&path)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Whether `name` in the uploads directory belongs to no upload: a data file or committed
/// length without its info (creation writes them first, removal deletes the info first, so
/// this is one of them cut short by a crash), a chunk set aside by an append a crash cut
/// short, or a temporary file.
fn is_upload_leftover(uploads: &Path, name: &str) -> io::Result<bool> {
    match name
        .strip_suffix(".bin")
        .or_else(|| name.strip_suffix(".len"))
    {
        Some(id) => Ok(!uploads.join(format!("{id}.info")).try_exists()?),
        None => Ok(name.ends_with(".staged") || is_temporary(name)),
    }
}

/// Whether the key file at `path` names no upload any more (its upload was terminated or
/// expired and a crash, or a newer upload of another key, left it), or is a temporary file.
/// A key re-used meanwhile is replaced by a new file, whose change time is new.
fn is_key_leftover(uploads: &Path, path: &Path, name: &str) -> io::Result<bool> {
    if is_temporary(name) {
        return Ok(true);
    }
    let stored = std::fs::read_to_string(path)?;
    match stored.parse::<UploadId>() {
        Ok(id) => Ok(!uploads.join(format!("{id}.info")).try_exists()?),
        Err(_) => Ok(true),
    }
}

/// Whether `name` is one of [`write_atomically`]'s temporary files.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

fn changed_before(metadata: &std::fs::Metadata, cutoff: SystemTime) -> bool {
    use std::os::unix::fs::MetadataExt;
    let changed = Duration::new(
        u64::try_from(metadata.ctime()).unwrap_or(0),
        u32::try_from(metadata.ctime_nsec()).unwrap_or(0),
    );
    SystemTime::UNIX_EPOCH + changed <= cutoff
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
