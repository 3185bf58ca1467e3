//! The outbox: `post-*` hook events persisted before the change they report is acknowledged,
//! and kept until a receiver has taken them (see [`crate::hooks`]).
//!
//! The service only appends ([`Outbox::put`]); the delivery worker reads the oldest entries
//! ([`Outbox::pending`]) and removes each once delivered ([`Outbox::remove`]). Entries are
//! ordered by a sequence the outbox assigns and persists, so delivery is FIFO: in order per
//! upload (and overall).

use crate::hooks::HookEvent;
use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

/// Errors of an outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The outbox's storage failed.
    #[error("outbox I/O: {0}")]
    Io(#[from] io::Error),
    /// An entry cannot be read back (set aside, not delivered).
    #[error("outbox entry {sequence} is unreadable: {message}")]
    Corrupt {
        /// The entry's sequence.
        sequence: u64,
        /// What is wrong with it.
        message: String,
    },
}

/// One persisted event and its place in the delivery order.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Its position: entries are delivered in increasing sequence.
    pub sequence: u64,
    /// The event.
    pub event: HookEvent,
}

/// Persistent storage of hook events awaiting delivery.
///
/// # Behavior
///
/// - `put` returns only once the event is durable (a crash right after loses nothing), and
///   gives it a sequence greater than any entry's still in the outbox or put before.
/// - `pending` returns up to `limit` entries, lowest sequence first, including entries put by
///   an earlier process on the same storage.
/// - `remove` drops one entry; removing an absent one is not an error.
///
/// One process drains an outbox. A backend shared by a fleet must make sure that one node
/// delivers each event (e.g. `pending` leasing the entries it returns); the file outbox is one
/// node's.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Persists an event; returns its sequence.
    async fn put(&self, event: &HookEvent) -> Result<u64, OutboxError>;

    /// The oldest entries, at most `limit`.
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError>;

    /// Drops a delivered entry.
    async fn remove(&self, sequence: u64) -> Result<(), OutboxError>;
}

/// An outbox in memory: for tests, and for embedders that accept losing events on a crash.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    next: u64,
    entries: BTreeMap<u64, HookEvent>,
}

impl MemoryOutbox {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[async_trait::async_trait]
impl Outbox for MemoryOutbox {
    async fn put(&self, event: &HookEvent) -> Result<u64, OutboxError> {
        let mut state = self.state();
        state.next += 1;
        let sequence = state.next;
        state.entries.insert(sequence, event.clone());
        Ok(sequence)
    }

    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        Ok(self
            .state()
            .entries
            .iter()
            .take(limit)
            .map(|(sequence, event)| OutboxEntry {
                sequence: *sequence,
                event: event.clone(),
            })
            .collect())
    }

    async fn remove(&self, sequence: u64) -> Result<(), OutboxError> {
        self.state().entries.remove(&sequence);
        Ok(())
    }
}

/// The checks every outbox must pass; `crates/fs` runs them on its file outbox.
pub mod conformance {
    use super::Outbox;
    use crate::hooks::{HookEvent, HookKind, HookUpload};
    use crate::model::{Protocol, UploadId};

    /// An event of `kind` for `upload`, with a distinct id.
    pub fn event(kind: HookKind, upload: &UploadId, offset: u64) -> HookEvent {
        HookEvent {
            id: format!("{upload}-{kind}-{offset}"),
            kind,
            time: 1_700_000_000,
            upload: HookUpload {
                id: upload.clone(),
                owner: "anonymous".into(),
                size: Some(10),
                offset,
                metadata: Default::default(),
                metadata_encoded: String::new(),
                protocol: Protocol::Tus,
                storage: None,
                concat: None,
            },
        }
    }

    /// Many entries come back in the order they were put (a directory lists them in no
    /// particular order), and `limit` takes the oldest.
    pub async fn many_come_back_in_order(outbox: &dyn Outbox) {
        let upload = UploadId::random();
        for offset in 0..200 {
            outbox
                .put(&event(HookKind::PostReceive, &upload, offset))
                .await
                .unwrap();
        }
        let offsets = |entries: Vec<super::OutboxEntry>| -> Vec<u64> {
            entries
                .iter()
                .map(|entry| entry.event.upload.offset)
                .collect()
        };
        assert_eq!(
            offsets(outbox.pending(500).await.unwrap()),
            (0..200).collect::<Vec<_>>()
        );
        assert_eq!(
            offsets(outbox.pending(5).await.unwrap()),
            (0..5).collect::<Vec<_>>()
        );
    }

    /// Put, pending in order, limit, remove, and removing twice.
    pub async fn puts_come_back_in_order(outbox: &dyn Outbox) {
        let upload = UploadId::random();
        let kinds = [
            HookKind::PostCreate,
            HookKind::PostReceive,
            HookKind::PostFinish,
        ];
        let mut sequences = Vec::new();
        for (offset, kind) in kinds.into_iter().enumerate() {
            sequences.push(
                outbox
                    .put(&event(kind, &upload, offset as u64))
                    .await
                    .unwrap(),
            );
        }
        assert!(sequences.windows(2).all(|pair| pair[0] < pair[1]));
        let pending = outbox.pending(10).await.unwrap();
        let got: Vec<HookKind> = pending.iter().map(|entry| entry.event.kind).collect();
        assert_eq!(got, kinds);
        assert_eq!(outbox.pending(2).await.unwrap().len(), 2);
        outbox.remove(sequences[0]).await.unwrap();
        outbox.remove(sequences[0]).await.unwrap();
        let pending = outbox.pending(10).await.unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].sequence, sequences[1]);
        assert_eq!(pending[0].event, event(HookKind::PostReceive, &upload, 1));
        // A new entry goes after everything, even after removals.
        let later = outbox
            .put(&event(HookKind::PostTerminate, &upload, 3))
            .await;
        assert!(later.unwrap() > sequences[2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_outbox_keeps_order() {
        conformance::puts_come_back_in_order(&MemoryOutbox::default()).await;
        conformance::many_come_back_in_order(&MemoryOutbox::default()).await;
    }
}
