//! Bytes on their way to S3 (a part being filled, a chunk set aside until verified): in memory
//! while the budget shared by every upload allows, in a temporary file beyond it.
//!
//! The budget is a semaphore of bytes: a spool takes permits as bytes arrive (or a whole part
//! ahead, see [`Budget::reserve`]) and holds them until it is dropped, so whatever the number
//! of uploads, their buffered bytes in memory never pass the budget. A spool that cannot get
//! more spills what it holds to a temporary file (released at once) and writes the rest there.
//!
//! Buffers of reserved spools go back to the budget when their bytes are dropped and serve the
//! next reservation of their size. A part buffer taken anew for every part costs a page fault
//! per page, and buffers freed on many threads leave the allocator's arenas holding memory no
//! upload uses (measured: 250–310 MiB resident for a 128 MiB budget). Idle buffers never
//! amount to more than the budget has free, so held and idle bytes together stay within it.

use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use resumable_core::StoreError;
use std::io;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error;

/// The memory every spool of a store draws from.
#[derive(Debug)]
pub(crate) struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
    /// Buffers of reserved spools, kept for the next reservation of their size.
    idle: Mutex<Idle>,
    /// Where spilled spools go.
    temp_dir: PathBuf,
    /// Spools that went to a file, ever.
    spills: std::sync::atomic::AtomicU64,
}

impl Budget {
    pub(crate) fn new(bytes: usize, temp_dir: PathBuf) -> Arc<Self> {
        let total = bytes.min(Semaphore::MAX_PERMITS);
        Arc::new(Budget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
            idle: Mutex::new(Idle::default()),
            temp_dir,
            spills: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many spools went to a file.
    pub(crate) fn spills(&self) -> u64 {
        self.spills.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of the budget not held by any spool.
    pub(crate) fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Waits until `bytes` of the budget are free and takes them (in turn with every other
    /// waiter). `None` when they can never be: more than the whole budget.
    pub(crate) async fn reserve(&self, bytes: usize) -> Option<Reservation> {
        let wanted = u32::try_from(bytes).ok()?;
        let permits = self.bytes.clone().acquire_many_owned(wanted).await.ok()?;
        Some(Reservation { permits, bytes })
    }

    /// The whole budget, in bytes.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Bytes in buffers kept for reuse.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.lock_idle().bytes
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        // Held for a vector operation only; a panic under it leaves the vector whole.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An empty buffer of `capacity` bytes: an idle one of that size, or a new one.
    fn buffer(&self, capacity: usize) -> BytesMut {
        let mut idle = self.lock_idle();
        let kept = idle
            .buffers
            .iter()
            .position(|buffer| buffer.capacity() == capacity);
        let buffer = match kept {
            Some(index) => {
                let buffer = idle.buffers.swap_remove(index);
                idle.bytes -= buffer.capacity();
                buffer
            }
            None => BytesMut::with_capacity(capacity),
        };
        idle.trim(self.available());
        buffer
    }

    /// Keeps a reserved spool's buffer for the next reservation (its permits are given back
    /// first). Not trimmed here: the permits may have gone straight to a reservation waiting
    /// for them, which takes this buffer next (and trims then).
    fn give_back(&self, mut buffer: BytesMut) {
        buffer.clear();
        let mut idle = self.lock_idle();
        idle.bytes += buffer.capacity();
        idle.buffers.push(buffer);
    }

    /// Frees idle buffers beyond what the budget has free (after bytes were taken from it).
    fn trim(&self) {
        let mut idle = self.lock_idle();
        if idle.bytes > 0 {
            idle.trim(self.available());
        }
    }
}

/// Idle buffers and their bytes.
#[derive(Debug, Default)]
struct Idle {
    buffers: Vec<BytesMut>,
    bytes: usize,
}

impl Idle {
    /// Frees buffers, largest first, until they hold at most `free` bytes.
    fn trim(&mut self, free: usize) {
        while self.bytes > free {
            let Some(largest) = self
                .buffers
                .iter()
                .enumerate()
                .max_by_key(|(_, buffer)| buffer.capacity())
                .map(|(index, _)| index)
            else {
                break;
            };
            self.bytes -= self.buffers.swap_remove(largest).capacity();
        }
    }
}

/// A growing buffer of bytes, in memory or in a temporary file.
pub(crate) struct Spool {
    budget: Arc<Budget>,
    /// The most bytes it is expected to hold: reserved at the first byte, so that a part
    /// filling in memory is never copied to a larger buffer (and the old one left to the
    /// allocator) on its way.
    expected: usize,
    memory: BytesMut,
    permits: Option<OwnedSemaphorePermit>,
    /// Bytes the held permits cover (taken ahead by [`Budget::reserve`], or as bytes came).
    reserved: usize,
    /// Whether `memory` came from the budget's buffers, and goes back there.
    pooled: bool,
    file: Option<Spilled>,
    len: u64,
}

/// Budget taken ahead for a spool, so that its bytes go to memory whatever other uploads take
/// meanwhile.
pub(crate) struct Reservation {
    permits: OwnedSemaphorePermit,
    bytes: usize,
}

/// A spool in a file. Written with blocking writes of [`SPILL_BATCH`] bytes on tokio's
/// blocking threads: `tokio::fs::File` would keep a buffer of up to 2 MiB per open file (with
/// 50 uploads spilling, 100 MiB of memory outside the budget) and copy every byte into it.
struct Spilled {
    /// Removed when dropped.
    path: tempfile::TempPath,
    /// `None` only while a batch is being written.
    file: Option<std::fs::File>,
    /// Bytes not written yet, at most [`SPILL_BATCH`].
    batch: Vec<u8>,
}

/// Bytes a spilled spool gathers before one write.
const SPILL_BATCH: usize = 256 * 1024;

impl Spilled {
    async fn push(&mut self, mut bytes: &[u8]) -> Result<(), StoreError> {
        while !bytes.is_empty() {
            let take = (SPILL_BATCH - self.batch.len()).min(bytes.len());
            self.batch.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.batch.len() == SPILL_BATCH {
                self.write_batch().await?;
            }
        }
        Ok(())
    }

    async fn write_batch(&mut self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut file = self.file.take().ok_or_else(|| {
            error::local(
                "writing a spool file",
                io::Error::other("an earlier write failed"),
            )
        })?;
        let mut batch = std::mem::take(&mut self.batch);
        let (file, batch) = tokio::task::spawn_blocking(move || {
            let written = file.write_all(&batch);
            batch.clear();
            written.map(|()| (file, batch))
        })
        .await
        .map_err(io::Error::other)
        .and_then(|written| written)
        .map_err(|error| error::local("writing a spool file", error))?;
        self.file = Some(file);
        self.batch = batch;
        Ok(())
    }
}

/// A spool's bytes, ready to be sent (and sent again, if a request is retried).
pub(crate) enum Sealed {
    Memory(Held),
    File { path: tempfile::TempPath, len: u64 },
}

impl Spool {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Self::expecting(budget, 0)
    }

    /// A spool that will hold at most about `expected` bytes (a part).
    pub(crate) fn expecting(budget: Arc<Budget>, expected: usize) -> Self {
        Spool {
            budget,
            expected,
            memory: BytesMut::new(),
            permits: None,
            reserved: 0,
            pooled: false,
            file: None,
            len: 0,
        }
    }

    /// A spool whose first `reservation.bytes` go to memory, taken from the budget ahead.
    pub(crate) fn reserved(budget: Arc<Budget>, reservation: Reservation) -> Self {
        let memory = budget.buffer(reservation.bytes);
        Spool {
            budget,
            expected: reservation.bytes,
            memory,
            permits: Some(reservation.permits),
            reserved: reservation.bytes,
            pooled: true,
            file: None,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[cfg(test)]
    pub(crate) fn spilled(&self) -> bool {
        self.file.is_some()
    }

    pub(crate) async fn push(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            // `len` is at most `reserved` while in memory.
            let uncovered = bytes
                .len()
                .saturating_sub(self.reserved - self.memory.len());
            if uncovered > 0 {
                let wanted = u32::try_from(uncovered).unwrap_or(u32::MAX);
                match self.budget.bytes.clone().try_acquire_many_owned(wanted) {
                    Ok(permit) if wanted as usize == uncovered => {
                        match &mut self.permits {
                            Some(held) => held.merge(permit),
                            None => self.permits = Some(permit),
                        }
                        self.reserved += uncovered;
                        self.budget.trim();
                    }
                    _ => self.spill().await?,
                }
            }
        }
        if self.file.is_none() {
            if self.memory.capacity() == 0 {
                self.memory.reserve(self.expected.max(bytes.len()));
            }
            self.memory.extend_from_slice(bytes);
            self.len += bytes.len() as u64;
            return Ok(());
        }
        let spilled = self.file.as_mut().expect("spilled above");
        spilled.push(bytes).await?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Moves what is in memory to a new temporary file and gives its budget back.
    async fn spill(&mut self) -> Result<(), StoreError> {
        let directory = self.budget.temp_dir.clone();
        let created = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(".resumable-s3-")
                .tempfile_in(directory)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|created| created)
        .map_err(|error| error::local("creating a spool file", error))?;
        let (file, path) = created.into_parts();
        let mut spilled = Spilled {
            path,
            file: Some(file),
            batch: Vec::with_capacity(SPILL_BATCH),
        };
        spilled.push(&self.memory).await?;
        let memory = std::mem::take(&mut self.memory);
        self.permits = None;
        self.reserved = 0;
        if std::mem::take(&mut self.pooled) {
            self.budget.give_back(memory);
        }
        self.file = Some(spilled);
        self.budget
            .spills
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The bytes, to be sent. A reserved spool keeps its whole reservation until they are
    /// dropped: its buffer is that big.
    pub(crate) async fn seal(self) -> Result<Sealed, StoreError> {
        match self.file {
            None => Ok(Sealed::Memory(Held {
                bytes: self.memory.freeze(),
                permits: self.permits,
                pool: self.pooled.then_some(self.budget),
            })),
            Some(mut spilled) => {
                spilled.write_batch().await?;
                Ok(Sealed::File {
                    path: spilled.path,
                    len: self.len,
                })
            }
        }
    }
}

/// Bytes in memory and the budget they hold, given back when dropped.
pub(crate) struct Held {
    bytes: Bytes,
    permits: Option<OwnedSemaphorePermit>,
    /// Where the buffer goes back to (a reserved spool's).
    pool: Option<Arc<Budget>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let permits = self.permits.take();
        let Some(budget) = self.pool.take() else {
            return;
        };
        // Unique once every request that sent the bytes is gone.
        if let Ok(buffer) = std::mem::take(&mut self.bytes).try_into_mut() {
            drop(permits);
            budget.give_back(buffer);
        }
    }
}

impl Sealed {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Sealed::Memory(held) => held.bytes.len() as u64,
            Sealed::File { len, .. } => *len,
        }
    }

    /// A request body of these bytes.
    pub(crate) async fn body(&self) -> Result<ByteStream, StoreError> {
        match self {
            Sealed::Memory(held) => Ok(ByteStream::from(held.bytes.clone())),
            Sealed::File { path, len } => ByteStream::read_from()
                .path(path)
                .buffer_size(SPILL_BATCH)
                .length(aws_sdk_s3::primitives::Length::Exact(*len))
                .build()
                .await
                .map_err(|error| {
                    error::backend(error::Kind::Failed, "reading a spool file", error)
                }),
        }
    }

    /// The bytes as a stream of chunks (for committing a staged chunk).
    pub(crate) async fn stream(
        self,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<Bytes, io::Error>>, StoreError>
    {
        match self {
            Sealed::Memory(held) => {
                let bytes = held.bytes.clone();
                // The budget (and the buffer) is held as long as the stream.
                Ok(futures_util::stream::iter([Ok(bytes)])
                    .map(move |chunk| {
                        let _ = &held;
                        chunk
                    })
                    .boxed())
            }
            Sealed::File { path, .. } => {
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|error| error::local("reading a spool file", error))?;
                let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
                // The path lives as long as the stream: the file is removed after.
                Ok(stream
                    .map(move |chunk| {
                        let _ = &path;
                        chunk
                    })
                    .boxed())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spools_spill_past_the_budget_and_give_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(10, dir.path().to_owned());
        let mut small = Spool::new(budget.clone());
        small.push(b"abcd").await.unwrap();
        assert!(!small.spilled());
        assert_eq!(budget.available(), 6);
        let mut big = Spool::new(budget.clone());
        big.push(b"0123").await.unwrap();
        big.push(b"456789").await.unwrap();
        assert!(big.spilled(), "past the budget");
        assert_eq!(budget.available(), 6, "the spilled spool holds no budget");
        let sealed = big.seal().await.unwrap();
        assert_eq!(sealed.len(), 10);
        let mut stream = sealed.stream().await.unwrap();
        let mut read = Vec::new();
        while let Some(chunk) = stream.next().await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(read, b"0123456789");
        drop(small);
        assert_eq!(budget.available(), 10);
    }

    /// Spilled bytes cross write batches in any chunking and read back in order.
    #[tokio::test]
    async fn spilled_bytes_cross_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(1000, dir.path().to_owned());
        let data: Vec<u8> = (0..SPILL_BATCH * 2 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut spool = Spool::expecting(budget.clone(), data.len());
        for piece in data.chunks(7_919) {
            spool.push(piece).await.unwrap();
        }
        assert!(spool.spilled());
        let sealed = spool.seal().await.unwrap();
        assert_eq!(sealed.len(), data.len() as u64);
        let mut read = Vec::new();
        let mut stream = sealed.stream().await.unwrap();
        while let Some(chunk) = stream.next().await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert!(read == data, "the spilled bytes differ");
        assert_eq!(budget.available(), 1000);
    }

    async fn filled_reserved(budget: &Arc<Budget>, bytes: usize) -> Sealed {
        let reservation = budget.reserve(bytes).await.expect("within the budget");
        let mut spool = Spool::reserved(budget.clone(), reservation);
        spool.push(&vec![7u8; bytes]).await.unwrap();
        assert!(!spool.spilled());
        spool.seal().await.unwrap()
    }

    fn address(sealed: &Sealed) -> *const u8 {
        match sealed {
            Sealed::Memory(held) => held.bytes.as_ptr(),
            Sealed::File { .. } => panic!("in memory"),
        }
    }

    /// A reserved spool's buffer serves the next reservation of its size; the budget is whole
    /// whenever no spool holds it.
    #[tokio::test]
    async fn reserved_buffers_serve_the_next_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(100, dir.path().to_owned());
        let first = filled_reserved(&budget, 60).await;
        assert_eq!(
            budget.available(),
            40,
            "the reservation is held while sealed"
        );
        let used = address(&first);
        drop(first);
        assert_eq!((budget.available(), budget.idle()), (100, 60));
        let second = filled_reserved(&budget, 60).await;
        assert_eq!(address(&second), used, "the same buffer");
        assert_eq!(budget.idle(), 0);
        drop(second);
        // A spool that spills gives its buffer back too.
        let reservation = budget.reserve(60).await.unwrap();
        let mut spool = Spool::reserved(budget.clone(), reservation);
        spool.push(&[1; 60]).await.unwrap();
        spool.push(&[2; 50]).await.unwrap();
        assert!(spool.spilled(), "past the budget");
        assert_eq!((budget.available(), budget.idle()), (100, 60));
        drop(spool);
        assert_eq!(budget.spills(), 1);
    }

    /// Idle buffers never hold more than the budget has free: bytes taken by other spools
    /// free them.
    #[tokio::test]
    async fn idle_buffers_make_room_for_other_spools() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(100, dir.path().to_owned());
        drop(filled_reserved(&budget, 60).await);
        assert_eq!(budget.idle(), 60);
        let mut other = Spool::new(budget.clone());
        other.push(&[3; 70]).await.unwrap();
        assert!(!other.spilled());
        assert_eq!(
            budget.idle(),
            0,
            "70 bytes held, 30 free: no room for the idle 60"
        );
        drop(other);
        // A reservation of another size makes room the same way.
        drop(filled_reserved(&budget, 60).await);
        drop(filled_reserved(&budget, 50).await);
        assert_eq!(budget.idle(), 50, "the 60 went for the 50's");
    }
}
