//! The hook outbox on local disk.
//!
//! ```text
//! ROOT/outbox/SEQUENCE.json   one event awaiting delivery (SEQUENCE: 20 decimal digits)
//! ROOT/outbox/.*.tmp          an event being written
//! ```
//!
//! An event is written to a temporary file and synced, then linked under its sequence's name
//! and the directory synced, so once [`Outbox::put`] returns the event survives a crash or a
//! power cut, and no reader ever sees half an event. Linking (unlike renaming) fails when the
//! name exists, so two processes sharing a data dir never overwrite each other's events: the
//! loser takes the next sequence. The next sequence starts past the highest one on disk.
//!
//! A removal is not synced: a crash may bring a delivered event back, and it is delivered
//! again (at least once; the receiver drops it by its id).

use resumable_core::{HookEvent, Outbox, OutboxEntry, OutboxError, UploadId};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// How old a temporary file must be before opening the outbox removes it: any write takes far
/// less, so an older one was cut short by a crash (a younger one may be another process's).
const STALE_TEMPORARY: Duration = Duration::from_secs(60);

/// Hook events awaiting delivery, one file each, under `ROOT/outbox`.
#[derive(Clone)]
pub struct FileOutbox {
    directory: PathBuf,
    next: Arc<AtomicU64>,
}

impl FileOutbox {
    /// Opens (creating if needed) the outbox under `root` (the store's data directory).
    pub async fn open(root: &Path) -> io::Result<Self> {
        let directory = root.join("outbox");
        let opened = directory.clone();
        let highest = tokio::task::spawn_blocking(move || open_directory(&opened))
            .await
            .map_err(io::Error::other)??;
        Ok(FileOutbox {
            directory,
            next: Arc::new(AtomicU64::new(highest + 1)),
        })
    }

    /// Where the outbox keeps its events.
    pub fn directory(&self) -> &Path {
        &self.directory
    }
}

fn open_directory(directory: &Path) -> io::Result<u64> {
    std::fs::create_dir_all(directory)?;
    if let Some(parent) = directory.parent() {
        sync_directory(parent)?;
    }
    let mut highest = 0;
    let cutoff = SystemTime::now()
        .checked_sub(STALE_TEMPORARY)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(sequence) = parse_name(name) {
            highest = highest.max(sequence);
        } else if name.starts_with('.')
            && name.ends_with(".tmp")
            && entry.metadata()?.modified()? < cutoff
        {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(highest)
}

fn file_name(sequence: u64) -> String {
    format!("{sequence:020}.json")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn sync_directory(directory: &Path) -> io::Result<()> {
    File::open(directory)?.sync_all()
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, OutboxError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| OutboxError::Io(io::Error::other(error)))?
}

#[async_trait::async_trait]
impl Outbox for FileOutbox {
    async fn put(&self, event: &HookEvent) -> Result<u64, OutboxError> {
        let encoded = serde_json::to_vec(event).map_err(io::Error::other)?;
        let (directory, next) = (self.directory.clone(), self.next.clone());
        blocking(move || {
            let temporary = directory.join(format!(".{}.tmp", UploadId::random()));
            let mut file = File::create(&temporary)?;
            file.write_all(&encoded)?;
            file.sync_all()?;
            let linked = loop {
                let sequence = next.fetch_add(1, Ordering::SeqCst);
                match std::fs::hard_link(&temporary, directory.join(file_name(sequence))) {
                    Ok(()) => break Ok(sequence),
                    // Another process sharing the directory took it.
                    Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(error) => break Err(error),
                }
            };
            remove_if_present(&temporary)?;
            let sequence = linked?;
            sync_directory(&directory)?;
            Ok(sequence)
        })
        .await
    }

    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        let directory = self.directory.clone();
        blocking(move || {
            let mut sequences = Vec::new();
            for entry in std::fs::read_dir(&directory)? {
                let name = entry?.file_name();
                sequences.extend(name.to_str().and_then(parse_name));
            }
            sequences.sort_unstable();
            let mut entries = Vec::with_capacity(limit.min(sequences.len()));
            for sequence in sequences {
                if entries.len() == limit {
                    break;
                }
                let path = directory.join(file_name(sequence));
                let bytes = match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    // Delivered and removed meanwhile (another process's worker).
                    Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(error.into()),
                };
                match serde_json::from_slice(&bytes) {
                    Ok(event) => entries.push(OutboxEntry { sequence, event }),
                    Err(error) => {
                        // Kept for a person to look at, out of the delivery order: one bad
                        // file must not hold back every later event.
                        let error = OutboxError::Corrupt {
                            sequence,
                            message: error.to_string(),
                        };
                        tracing::error!(%error, "setting an unreadable hook event aside");
                        std::fs::rename(&path, path.with_extension("corrupt"))?;
                    }
                }
            }
            Ok(entries)
        })
        .await
    }

    async fn remove(&self, sequence: u64) -> Result<(), OutboxError> {
        let path = self.directory.join(file_name(sequence));
        blocking(move || Ok(remove_if_present(&path)?)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resumable_core::HookKind;
    use resumable_core::outbox::conformance;

    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir().expect("scratch dir")
    }

    #[tokio::test]
    async fn file_outbox_keeps_order() {
        let root = scratch();
        let outbox = FileOutbox::open(root.path()).await.unwrap();
        conformance::puts_come_back_in_order(&outbox).await;
    }

    #[tokio::test]
    async fn file_outbox_keeps_the_order_of_many() {
        let root = scratch();
        let outbox = FileOutbox::open(root.path()).await.unwrap();
        conformance::many_come_back_in_order(&outbox).await;
    }

    #[tokio::test]
    async fn events_survive_reopening_and_new_ones_go_after_them() {
        let root = scratch();
        let upload = UploadId::random();
        let first = FileOutbox::open(root.path()).await.unwrap();
        let created = conformance::event(HookKind::PostCreate, &upload, 0);
        let finished = conformance::event(HookKind::PostFinish, &upload, 10);
        let a = first.put(&created).await.unwrap();
        let b = first.put(&finished).await.unwrap();
        first.remove(a).await.unwrap();
        drop(first);

        let reopened = FileOutbox::open(root.path()).await.unwrap();
        let pending = reopened.pending(10).await.unwrap();
        assert_eq!(
            pending,
            vec![OutboxEntry {
                sequence: b,
                event: finished.clone()
            }]
        );
        let c = reopened.put(&created).await.unwrap();
        assert!(
            c > b,
            "a sequence after a reopening ({c}) must follow those on disk ({b})"
        );
    }

    #[tokio::test]
    async fn two_outboxes_on_one_directory_never_overwrite_each_other() {
        let root = scratch();
        let upload = UploadId::random();
        let one = FileOutbox::open(root.path()).await.unwrap();
        let two = FileOutbox::open(root.path()).await.unwrap();
        let a = one
            .put(&conformance::event(HookKind::PostCreate, &upload, 0))
            .await
            .unwrap();
        let b = two
            .put(&conformance::event(HookKind::PostFinish, &upload, 10))
            .await
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(one.pending(10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_unreadable_entry_is_set_aside_not_delivered() {
        let root = scratch();
        let upload = UploadId::random();
        let outbox = FileOutbox::open(root.path()).await.unwrap();
        std::fs::write(outbox.directory().join(file_name(1)), b"{not json").unwrap();
        let good = conformance::event(HookKind::PostFinish, &upload, 10);
        outbox.put(&good).await.unwrap();
        let pending = outbox.pending(10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].event, good);
        assert!(
            outbox
                .directory()
                .join(format!("{:020}.corrupt", 1))
                .exists()
        );
    }

    #[test]
    fn only_sequence_names_are_entries() {
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert_eq!(parse_name("42.json"), None);
        assert_eq!(parse_name(".00000000000000000042.json.tmp"), None);
        assert_eq!(parse_name("0000000000000000004x.json"), None);
    }
}
