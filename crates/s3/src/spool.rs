//! Bytes on their way to S3 (a part being filled, a chunk set aside until verified): in memory
//! while the budget shared by every upload allows, in a temporary file beyond it.
//!
//! The budget is a semaphore of bytes: a spool takes permits as bytes arrive and holds them
//! until it is dropped, so whatever the number of uploads, their buffered bytes in memory
//! never pass the budget. A spool that cannot get more spills what it holds to a temporary
//! file (released at once) and writes the rest there.

use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use resumable_core::StoreError;
use std::io;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error;

/// The memory every spool of a store draws from.
#[derive(Debug)]
pub(crate) struct Budget {
    bytes: Arc<Semaphore>,
    /// Where spilled spools go.
    temp_dir: PathBuf,
    /// Spools that went to a file, ever.
    spills: std::sync::atomic::AtomicU64,
}

impl Budget {
    pub(crate) fn new(bytes: usize, temp_dir: PathBuf) -> Arc<Self> {
        Arc::new(Budget {
            bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
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
    file: Option<Spilled>,
    len: u64,
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
    Memory {
        bytes: Bytes,
        /// Held until the bytes are sent.
        _permits: Option<OwnedSemaphorePermit>,
    },
    File {
        path: tempfile::TempPath,
        len: u64,
    },
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
            let wanted = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            match self.budget.bytes.clone().try_acquire_many_owned(wanted) {
                Ok(permit) if wanted as usize == bytes.len() => {
                    match &mut self.permits {
                        Some(held) => held.merge(permit),
                        None => self.permits = Some(permit),
                    }
                    if self.memory.capacity() == 0 {
                        self.memory.reserve(self.expected.max(bytes.len()));
                    }
                    self.memory.extend_from_slice(bytes);
                    self.len += bytes.len() as u64;
                    return Ok(());
                }
                _ => self.spill().await?,
            }
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
        self.memory = BytesMut::new();
        self.permits = None;
        self.file = Some(spilled);
        self.budget
            .spills
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    pub(crate) async fn seal(self) -> Result<Sealed, StoreError> {
        match self.file {
            None => Ok(Sealed::Memory {
                bytes: self.memory.freeze(),
                _permits: self.permits,
            }),
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

impl Sealed {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Sealed::Memory { bytes, .. } => bytes.len() as u64,
            Sealed::File { len, .. } => *len,
        }
    }

    /// A request body of these bytes.
    pub(crate) async fn body(&self) -> Result<ByteStream, StoreError> {
        match self {
            Sealed::Memory { bytes, .. } => Ok(ByteStream::from(bytes.clone())),
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
            Sealed::Memory { bytes, _permits } => Ok(futures_util::stream::once(async move {
                let _held = _permits;
                Ok(bytes)
            })
            .boxed()),
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
}
