//! Resume state across runs: which upload URL holds which local file.
//!
//! A file is identified by a [`Fingerprint`] of its canonical path, size, modification time,
//! the endpoint and the protocol: a file edited since (new size or mtime) is a new upload, the
//! same file sent to another server too. Each remembered upload is one small JSON file named by
//! its fingerprint, written atomically (temp file, fsync, rename), so a crash at any point
//! leaves either the old or the new state.

use crate::ClientError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Identifies one version of one local file sent to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint of `source` sent to `endpoint` with `protocol` (any stable name).
    pub fn new(source: &Source, endpoint: &str, protocol: &str) -> Self {
        let mut hasher = Sha256::new();
        // Length-prefixed fields: no two different inputs hash the same bytes.
        for field in [
            source.canonical_path.to_string_lossy().as_bytes(),
            &source.size.to_le_bytes(),
            &source.modified_nanos.to_le_bytes(),
            endpoint.as_bytes(),
            protocol.as_bytes(),
        ] {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field);
        }
        Fingerprint(hex::encode(hasher.finalize()))
    }

    /// The fingerprint as hex, as used in file names.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What is known of a local file before it is uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The path as given.
    pub path: PathBuf,
    /// The path with symlinks and `..` resolved.
    pub canonical_path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, in nanoseconds since the Unix epoch.
    pub modified_nanos: u128,
}

impl Source {
    /// Looks at the file at `path`.
    pub fn inspect(path: &Path) -> Result<Self, ClientError> {
        let file_error = |source| ClientError::File {
            path: path.to_owned(),
            source,
        };
        let canonical_path = std::fs::canonicalize(path).map_err(file_error)?;
        let metadata = std::fs::metadata(&canonical_path).map_err(file_error)?;
        if !metadata.is_file() {
            return Err(file_error(std::io::Error::other("not a regular file")));
        }
        let modified_nanos = metadata
            .modified()
            .ok()
            .and_then(|modified| modified.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_nanos());
        Ok(Source {
            path: path.to_owned(),
            canonical_path,
            size: metadata.len(),
            modified_nanos,
        })
    }

    /// The file name (last path component), for the `filename` metadata.
    pub fn file_name(&self) -> String {
        self.canonical_path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Fails with [`ClientError::SourceChanged`] when the file's size or mtime moved since it was
    /// inspected: the bytes already uploaded may no longer be the file's.
    pub fn check_unchanged(&self) -> Result<(), ClientError> {
        match Source::inspect(&self.canonical_path) {
            Ok(now) if now.size == self.size && now.modified_nanos == self.modified_nanos => Ok(()),
            Ok(_) => Err(ClientError::SourceChanged(self.path.clone())),
            Err(error) => Err(error),
        }
    }
}

/// A remembered upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedUpload {
    /// The upload URL. For a file sent in parts, the final upload's, once it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The endpoint it was created at.
    pub endpoint: String,
    /// The protocol it speaks (`tus`, `simple`, `ietf`; [`crate::Protocol::name`]). The
    /// fingerprint covers it already; a state written before it was recorded has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The local file (canonical path), for people reading the state directory.
    pub path: PathBuf,
    /// The file's size.
    pub size: u64,
    /// When the upload was created, in seconds since the Unix epoch.
    pub created: u64,
    /// The partial uploads of a file sent in parts (tus concatenation), in file order; empty
    /// for a file sent whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<SavedPart>,
}

impl SavedUpload {
    /// Whether the file is being sent in parts.
    pub fn is_split(&self) -> bool {
        !self.parts.is_empty()
    }
}

/// A remembered partial upload: which bytes of the file it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPart {
    /// The partial upload's URL.
    pub url: String,
    /// The first byte of the file it carries.
    pub start: u64,
    /// One past the last byte of the file it carries.
    pub end: u64,
}

/// Remembered uploads in a directory (by default `$XDG_STATE_HOME/resumable`, i.e.
/// `~/.local/state/resumable` on Linux).
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

/// Held while a file is being uploaded: a second process uploading the same file to the same
/// endpoint would fight the first one for the upload.
#[derive(Debug)]
pub struct UploadLock {
    _file: File,
}

impl StateStore {
    /// The state directory `dir` (created when something is first saved).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateStore { dir: dir.into() }
    }

    /// The platform's state directory for resumable: `$XDG_STATE_HOME/resumable` or
    /// `~/.local/state/resumable` on Linux, the local data directory elsewhere.
    pub fn default_dir() -> Option<PathBuf> {
        dirs::state_dir()
            .or_else(dirs::data_local_dir)
            .map(|base| base.join("resumable"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn uploads(&self) -> PathBuf {
        self.dir.join("uploads")
    }

    fn path(&self, fingerprint: &Fingerprint, extension: &str) -> PathBuf {
        self.uploads()
            .join(format!("{}.{extension}", fingerprint.as_str()))
    }

    fn error(path: &Path) -> impl Fn(std::io::Error) -> ClientError + '_ {
        move |source| ClientError::State {
            path: path.to_owned(),
            source,
        }
    }

    /// The remembered upload of `fingerprint`. An unreadable or corrupt entry counts as none
    /// (it is overwritten by the next save).
    pub fn load(&self, fingerprint: &Fingerprint) -> Option<SavedUpload> {
        let path = self.path(fingerprint, "json");
        let text = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&text) {
            Ok(saved) => Some(saved),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring corrupt resume state");
                None
            }
        }
    }

    /// Remembers `upload` for `fingerprint`, atomically and durably.
    pub fn save(&self, fingerprint: &Fingerprint, upload: &SavedUpload) -> Result<(), ClientError> {
        let uploads = self.uploads();
        std::fs::create_dir_all(&uploads).map_err(Self::error(&uploads))?;
        let path = self.path(fingerprint, "json");
        let temporary = self.path(fingerprint, &format!("tmp{}", fastrand::u32(..)));
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temporary)?;
            file.write_all(&serde_json::to_vec_pretty(upload).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            File::open(&uploads)?.sync_all()
        };
        write().map_err(|error| {
            let _ = std::fs::remove_file(&temporary);
            Self::error(&path)(error)
        })
    }

    /// Forgets the upload of `fingerprint` (done, or gone from the server).
    pub fn forget(&self, fingerprint: &Fingerprint) -> Result<(), ClientError> {
        remove_if_present(&self.path(fingerprint, "json"))
    }

    /// Forgets the upload of `fingerprint` once it is done, with its lock file (the caller holds
    /// the lock, so no other process is using the file).
    pub fn finish(&self, fingerprint: &Fingerprint, lock: UploadLock) -> Result<(), ClientError> {
        self.forget(fingerprint)?;
        let removed = remove_if_present(&self.path(fingerprint, "lock"));
        drop(lock);
        removed
    }

    /// Takes the per-file lock of `fingerprint`; fails with [`ClientError::AlreadyRunning`]
    /// while another process holds it. Released when the returned guard drops (or the process
    /// dies).
    pub fn lock(
        &self,
        fingerprint: &Fingerprint,
        source: &Path,
    ) -> Result<UploadLock, ClientError> {
        let uploads = self.uploads();
        std::fs::create_dir_all(&uploads).map_err(Self::error(&uploads))?;
        let path = self.path(fingerprint, "lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Self::error(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(UploadLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(ClientError::AlreadyRunning(source.to_owned())),
            Err(TryLockError::Error(error)) => Err(Self::error(&path)(error)),
        }
    }
}

fn remove_if_present(path: &Path) -> Result<(), ClientError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(ClientError::State {
            path: path.to_owned(),
            source: error,
        }),
        _ => Ok(()),
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path, bytes: &[u8]) -> Source {
        let path = dir.join("file.bin");
        std::fs::write(&path, bytes).unwrap();
        Source::inspect(&path).unwrap()
    }

    fn saved(url: &str) -> SavedUpload {
        SavedUpload {
            url: Some(url.into()),
            endpoint: "http://h/files/".into(),
            protocol: None,
            path: "/x/file.bin".into(),
            size: 3,
            created: 1,
            parts: Vec::new(),
        }
    }

    #[test]
    fn fingerprints_change_with_any_field() {
        let dir = tempfile::tempdir().unwrap();
        let source = source(dir.path(), b"abc");
        let base = Fingerprint::new(&source, "http://h/files/", "tus");
        assert_eq!(base, Fingerprint::new(&source, "http://h/files/", "tus"));
        assert_ne!(
            base,
            Fingerprint::new(&source, "http://other/files/", "tus")
        );
        assert_ne!(base, Fingerprint::new(&source, "http://h/files/", "simple"));
        // The IETF draft is served on the same URLs as tus: only the protocol tells them apart.
        assert_ne!(base, Fingerprint::new(&source, "http://h/files/", "ietf"));
        let bigger = Source {
            size: 4,
            ..source.clone()
        };
        assert_ne!(base, Fingerprint::new(&bigger, "http://h/files/", "tus"));
        let touched = Source {
            modified_nanos: source.modified_nanos + 1,
            ..source
        };
        assert_ne!(base, Fingerprint::new(&touched, "http://h/files/", "tus"));
    }

    #[test]
    fn saves_loads_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state"));
        let fingerprint = Fingerprint::new(&source(dir.path(), b"abc"), "e", "tus");
        assert_eq!(store.load(&fingerprint), None);
        store
            .save(&fingerprint, &saved("http://h/files/1"))
            .unwrap();
        store
            .save(&fingerprint, &saved("http://h/files/2"))
            .unwrap();
        assert_eq!(store.load(&fingerprint), Some(saved("http://h/files/2")));
        store.forget(&fingerprint).unwrap();
        assert_eq!(store.load(&fingerprint), None);
        store.forget(&fingerprint).unwrap();
    }

    #[test]
    fn finishing_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state"));
        let fingerprint = Fingerprint::new(&source(dir.path(), b"abc"), "e", "tus");
        let lock = store.lock(&fingerprint, Path::new("file.bin")).unwrap();
        store
            .save(&fingerprint, &saved("http://h/files/1"))
            .unwrap();
        store.finish(&fingerprint, lock).unwrap();
        assert_eq!(std::fs::read_dir(store.uploads()).unwrap().count(), 0);
    }

    #[test]
    fn split_uploads_keep_their_parts_and_whole_ones_read_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let fingerprint = Fingerprint::new(&source(dir.path(), b"abc"), "e", "tus");
        let split = SavedUpload {
            url: None,
            parts: vec![
                SavedPart {
                    url: "http://h/files/a".into(),
                    start: 0,
                    end: 2,
                },
                SavedPart {
                    url: "http://h/files/b".into(),
                    start: 2,
                    end: 3,
                },
            ],
            ..saved("unused")
        };
        store.save(&fingerprint, &split).unwrap();
        assert_eq!(store.load(&fingerprint), Some(split));

        // A whole upload remembered before parts existed.
        let older = br#"{"url":"http://h/files/1","endpoint":"http://h/files/","path":"/x/file.bin","size":3,"created":1}"#;
        std::fs::write(store.path(&fingerprint, "json"), older).unwrap();
        assert_eq!(store.load(&fingerprint), Some(saved("http://h/files/1")));
    }

    #[test]
    fn corrupt_state_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let fingerprint = Fingerprint::new(&source(dir.path(), b"abc"), "e", "tus");
        std::fs::create_dir_all(store.uploads()).unwrap();
        std::fs::write(store.path(&fingerprint, "json"), b"{not json").unwrap();
        assert_eq!(store.load(&fingerprint), None);
    }

    #[test]
    fn one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let fingerprint = Fingerprint::new(&source(dir.path(), b"abc"), "e", "tus");
        let held = store.lock(&fingerprint, Path::new("file.bin")).unwrap();
        assert!(matches!(
            store.lock(&fingerprint, Path::new("file.bin")),
            Err(ClientError::AlreadyRunning(_))
        ));
        drop(held);
        store.lock(&fingerprint, Path::new("file.bin")).unwrap();
    }

    #[test]
    fn detects_a_changed_source() {
        let dir = tempfile::tempdir().unwrap();
        let source = source(dir.path(), b"abc");
        source.check_unchanged().unwrap();
        std::fs::write(&source.path, b"abcd").unwrap();
        assert!(matches!(
            source.check_unchanged(),
            Err(ClientError::SourceChanged(_))
        ));
    }
}
