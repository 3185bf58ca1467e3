//! Streaming a request body into a data file.
//!
//! Chunks gather in a small in-memory batch while the previous batch is being written by a
//! blocking task: at most one write is in flight and one batch waits, so memory per upload is
//! bounded by two batches, and an upload whose client has gone quiet holds no thread at all
//! (a blocking thread per open upload would let a few hundred idle clients exhaust tokio's
//! blocking pool and stall every other file operation). At the end the file is synced once.

use bytes::Bytes;
use futures_util::StreamExt;
use resumable_core::{BodyError, BodyStream, Clock};
use std::fs::File;
use std::io::{self, IoSlice, Write};
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

type WriteTask = JoinHandle<(File, io::Result<()>)>;

/// Writes every chunk of `body`, in order, until it ends, fails, or a write fails; then syncs
/// what reached the file and stamps its modification time from `clock`.
pub(crate) async fn stream_to_file(
    file: File,
    mut body: BodyStream,
    clock: Arc<dyn Clock>,
) -> Written {
    let mut file = Some(file);
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_bytes = 0;
    let mut writing: Option<WriteTask> = None;
    let mut ended = false;
    let mut interruption = None;
    let mut error = None;
    loop {
        if writing.is_none() && !batch.is_empty() && error.is_none() {
            let owned = file.take().expect("the file is here while no write runs");
            writing = Some(write_in_background(owned, std::mem::take(&mut batch)));
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
                    Ok((returned, result)) => {
                        file = Some(returned);
                        error = result.err();
                    }
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
    let Some(file) = file else {
        // The write task died with the file: nothing can be synced, so nothing is reported.
        return Written {
            durable_length: 0,
            error: error.or_else(|| Some(io::Error::other("write task lost the file"))),
            interruption,
        };
    };
    let synced = tokio::task::spawn_blocking(move || finish(&file, clock.as_ref())).await;
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

fn write_in_background(mut file: File, batch: Vec<Bytes>) -> WriteTask {
    tokio::task::spawn_blocking(move || {
        let result = write_batch(&mut file, &batch);
        (file, result)
    })
}

/// Makes the written bytes durable and stamps the write time; returns the durable length.
fn finish(file: &File, clock: &dyn Clock) -> io::Result<u64> {
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
