//! The blocking side of an append: one task owns the data file and turns chunks into large
//! vectored writes, then makes them durable.

use bytes::Bytes;
use resumable_core::Clock;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use tokio::sync::mpsc::Receiver;

/// Most chunks gathered into one write.
const BATCH_CHUNKS: usize = 64;
/// Most bytes gathered into one write.
const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// What the writer achieved.
pub(crate) struct Written {
    /// The data file's length after `fdatasync`: bytes that are durably stored.
    pub(crate) durable_length: u64,
    /// The write or sync error that stopped the writer, if any.
    pub(crate) error: Option<io::Error>,
}

/// Writes every chunk received, in order, until the channel closes or a write fails; then
/// syncs whatever reached the file.
pub(crate) fn write_chunks(
    mut file: File,
    mut receiver: Receiver<Bytes>,
    clock: &dyn Clock,
) -> Written {
    let mut batch: Vec<Bytes> = Vec::with_capacity(BATCH_CHUNKS);
    let mut error = None;
    while let Some(first) = receiver.blocking_recv() {
        let mut size = first.len();
        batch.push(first);
        while batch.len() < BATCH_CHUNKS && size < BATCH_BYTES {
            match receiver.try_recv() {
                Ok(chunk) => {
                    size += chunk.len();
                    batch.push(chunk);
                }
                Err(_) => break,
            }
        }
        if let Err(failure) = write_batch(&mut file, &batch) {
            error = Some(failure);
            break;
        }
        batch.clear();
    }
    // Close the channel so the request side stops sending at once after a failure.
    receiver.close();
    // Expiry counts from the last write, on the service's clock.
    if let Err(failure) = file.set_modified(clock.now()) {
        error.get_or_insert(failure);
    }
    if let Err(failure) = file.sync_data() {
        error.get_or_insert(failure);
    }
    let durable_length = match file.metadata() {
        Ok(metadata) => metadata.len(),
        Err(failure) => {
            error.get_or_insert(failure);
            0
        }
    };
    Written {
        durable_length,
        error,
    }
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
