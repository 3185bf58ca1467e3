//! Streaming a request body into a data file.
//!
//! Chunks gather in a small in-memory batch while the previous batch is being written by a
//! blocking task: at most one write is in flight and one batch waits, so memory per upload is
//! bounded by two batches. An upload whose client has gone quiet holds neither a thread nor a
//! file descriptor: each batch opens the data file, takes its `flock`, checks that its length is
//! what this append expects (so another process cannot have slipped bytes in between), writes
//! and closes. (A blocking thread per open upload let a few hundred idle clients exhaust tokio's
//! blocking pool; an open file per upload let ten thousand idle clients exhaust the descriptor
//! limit.) At the end the file is synced once.

use bytes::Bytes;
use futures_util::StreamExt;
use resumable_core::{BodyError, BodyStream, Clock};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Bytes gathered before reading pauses for the write in flight to finish.
const BATCH_BYTES: usize = 512 * 1024;

/// What an append achieved.
pub(crate) struct Written {
    /// The data file's length after `fdatasync`: bytes that are durably stored.
    pub(crate) durable_length: u64,
    /// The write or sync error that stopped the append, if any.
    pub(crate) error: Option<io::Error>,
    /// Why the body ended early, if it did.
    pub(crate) interruption: Option<BodyError>,
}

/// The data file changed length under an append: another process wrote to it.
#[derive(Debug, thiserror::Error)]
#[error("another process appended to this upload")]
pub(crate) struct ConcurrentAppend;

type WriteTask = JoinHandle<io::Result<u64>>;

/// Writes every chunk of `body`, in order, at the end of the file at `path` (whose length is
/// `start`), until the body ends, fails, or a write fails; then syncs what reached the file and
/// stamps its modification time from `clock`.
pub(crate) async fn stream_to_file(
    path: PathBuf,
    start: u64,
    mut body: BodyStream,
    clock: Arc<dyn Clock>,
) -> Written {
    let mut length = start;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_bytes = 0;
    let mut writing: Option<WriteTask> = None;
    let mut ended = false;
    let mut interruption = None;
    let mut error = None;
    loop {
        if writing.is_none() && !batch.is_empty() && error.is_none() {
            let batch = std::mem::take(&mut batch);
            writing = Some(write_in_background(path.clone(), length, batch));
            batch_bytes = 0;
        }
        if writing.is_none() && (ended || error.is_some()) {
            break;
        }
        let can_read = !ended && error.is_none() && batch_bytes < BATCH_BYTES;
        tokio::select! {
            biased;
            done = async { writing.as_mut().expect("guarded by the condition").await },
                if writing.is_some() =>
            {
                writing = None;
                match done {
                    Ok(Ok(new_length)) => length = new_length,
                    Ok(Err(failure)) => error = Some(failure),
                    Err(failure) => error = Some(io::Error::other(failure)),
                }
            }
            next = body.next(), if can_read => match next {
                Some(Ok(chunk)) => {
                    if !chunk.is_empty() {
                        batch_bytes += chunk.len();
                        batch.push(chunk);
                    }
                }
                Some(Err(reason)) => {
                    interruption = Some(reason);
                    ended = true;
                }
                None => ended = true,
            },
            else => break,
        }
    }
    let synced = tokio::task::spawn_blocking(move || finish(&path, clock.as_ref())).await;
    let (durable_length, sync_error) = match synced {
        Ok(Ok(length)) => (length, None),
        Ok(Err(failure)) => (0, Some(failure)),
        Err(failure) => (0, Some(io::Error::other(failure))),
    };
    Written {
        durable_length,
        error: error.or(sync_error),
        interruption,
    }
}

/// Appends `batch` to the file at `path`, which must be `length` bytes long; returns its new
/// length. The file is open (and locked) only for this write.
fn write_in_background(path: PathBuf, length: u64, batch: Vec<Bytes>) -> WriteTask {
    tokio::task::spawn_blocking(move || {
        let mut file = OpenOptions::new().append(true).open(&path)?;
        // Blocks only while another process writes one batch of its own.
        file.lock()?;
        if file.metadata()?.len() != length {
            return Err(io::Error::other(ConcurrentAppend));
        }
        write_batch(&mut file, &batch)?;
        Ok(length + batch.iter().map(|chunk| chunk.len() as u64).sum::<u64>())
    })
}

/// Makes the written bytes durable and stamps the write time; returns the durable length.
fn finish(path: &Path, clock: &dyn Clock) -> io::Result<u64> {
    // fdatasync flushes the file's pages whichever descriptor wrote them.
    let file = OpenOptions::new().append(true).open(path)?;
    // Expiry counts from the last write, on the service's clock.
    file.set_modified(clock.now())?;
    file.sync_data()?;
    Ok(file.metadata()?.len())
}

fn write_batch(file: &mut File, batch: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|chunk| IoSlice::new(chunk)).collect();
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        match file.write_vectored(remaining) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut remaining, written),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
