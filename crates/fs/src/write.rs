//! Streaming a request body into a data file.
//!
//! Chunks gather in an in-memory batch; a batch is written by a short blocking task once it is
//! full or its first bytes have waited [`LINGER`] (while it is written the next one gathers, so
//! memory per upload is bounded by about two batches). Batches are large while few uploads
//! stream and shrink as more do ([`Streams::batch_limit`]). When the body ends, the last batch
//! is written and the file synced in the same trip to the blocking pool: a body of up to one
//! batch costs one trip.
//! An upload whose client has gone quiet holds neither a thread nor a file descriptor: each
//! write opens the data file, takes its `flock`, checks that its length is what this append
//! expects (so another process cannot have slipped bytes in between), writes and closes. (A
//! blocking thread per open upload let a few hundred idle clients exhaust tokio's blocking
//! pool; an open file per upload let ten thousand idle clients exhaust the descriptor limit.)
//!
//! Bytes that arrived but were not yet written when the process dies are lost; they were never
//! acknowledged (an offset is reported only after `fdatasync`), so the client sends them again.

use crate::direct::{ALIGN, DirectWriter, Prepared, Through};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use resumable_core::{BodyError, BodyStream, Clock};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The most bytes a batch gathers before its write starts, while few uploads stream. One
/// upload alone on a 2-core VM (6 alternating runs of a 1 GiB PATCH): 2 MiB batches ran 25-60%
/// faster than 512 KiB ones on 35% less CPU (fewer, larger direct writes; fewer trips to the
/// blocking pool); 4 MiB was no faster.
const MAX_BATCH: usize = 2 * 1024 * 1024;

/// The fewest, however many uploads stream.
const MIN_BATCH: usize = 512 * 1024;

/// Roughly the bytes all of a store's streaming uploads may gather at once: each one's batch
/// limit is this shared out, within [`MIN_BATCH`]..=[`MAX_BATCH`]. With 200 uploads at 2 MiB
/// each the server peaked at 362 MiB RSS; shared out, at about 100 MiB.
const GATHER_BUDGET: usize = 16 * 1024 * 1024;

/// How many appends of a store are streaming a body now.
#[derive(Debug, Default)]
pub(crate) struct Streams(AtomicUsize);

impl Streams {
    /// The bytes a batch gathers before its write starts, with this many appends streaming.
    fn batch_limit(&self) -> usize {
        let streaming = self.0.load(Ordering::Relaxed).max(1);
        (GATHER_BUDGET / streaming).clamp(MIN_BATCH, MAX_BATCH) / ALIGN * ALIGN
    }

    fn enter(self: &Arc<Self>) -> Streaming {
        self.0.fetch_add(1, Ordering::Relaxed);
        Streaming(self.clone())
    }
}

/// One append counted in [`Streams`] while it lives.
struct Streaming(Arc<Streams>);

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long bytes wait in memory for a batch to fill. A fast client fills a batch in about a
/// millisecond; a slow one has its bytes written a few times a second, so ten thousand slow
/// clients do not hold ten thousand batches in memory, and a crashed process loses little.
const LINGER: Duration = Duration::from_millis(100);

/// What an append achieved.
pub(crate) struct Written {
    /// The data file's length after `fdatasync`: bytes that are durably stored.
    pub(crate) durable_length: u64,
    /// The write or sync error that stopped the append, if any.
    pub(crate) error: Option<io::Error>,
    /// Why the body ended early, if it did.
    pub(crate) interruption: Option<BodyError>,
}

/// The data file was not as long as an append expected: another process wrote to it.
#[derive(Debug, thiserror::Error)]
#[error("the data file is {found} bytes long, not {expected}: another process appended")]
pub(crate) struct LengthChanged {
    /// The length the append expected.
    pub(crate) expected: u64,
    /// The length it found.
    pub(crate) found: u64,
}

/// Where and how an append writes.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) path: PathBuf,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) direct: Arc<DirectWriter>,
    pub(crate) streams: Arc<Streams>,
    /// The bytes are set aside until verified (a staged chunk): they go through the page cache
    /// and are not synced, since they count only once copied into the data file.
    pub(crate) set_aside: bool,
}

/// A write in flight: the file's new length, and how the bytes went.
type WriteTask = JoinHandle<io::Result<(u64, Through)>>;

/// Writes every chunk of `body`, in order, at the end of the file (whose length is `start`),
/// until the body ends, fails, or a write fails; then syncs what reached the file and stamps
/// its modification time.
pub(crate) async fn stream_to_file(target: Target, start: u64, mut body: BodyStream) -> Written {
    let mut append = Append::new(target, start);
    loop {
        append.start_writes(&mut body);
        if append.is_done() {
            break;
        }
        let reading = append.is_reading();
        let linger = append.linger_deadline();
        tokio::select! {
            biased;
            done = async { append.writing.as_mut().expect("guarded by the condition").await },
                if append.writing.is_some() => append.write_finished(done),
            next = body.next(), if reading => append.receive(next),
            () = tokio::time::sleep_until(linger.unwrap_or_else(Instant::now)),
                if linger.is_some() => {}
        }
    }
    append.finish().await
}

/// The state of one append between its body and its data file.
struct Append {
    target: Target,
    streaming: Streaming,
    /// The file's length after the writes that have finished; the one in flight starts here.
    length: u64,
    /// Chunks gathering for the next write.
    batch: Vec<Bytes>,
    batch_bytes: usize,
    /// When the gathering batch must be written even if it is not full.
    write_by: Option<Instant>,
    /// A full batch already copied into an aligned buffer, waiting for the write in flight.
    prepared: Option<Prepared>,
    writing: Option<WriteTask>,
    /// Bytes of the write in flight.
    in_flight: u64,
    /// How this append's bytes have reached the file: once some went through the page cache,
    /// the rest follow (no direct write may land above them; see the `direct` module).
    through: Through,
    ended: bool,
    interruption: Option<BodyError>,
    error: Option<io::Error>,
}

impl Append {
    fn new(target: Target, start: u64) -> Self {
        let through = if target.set_aside {
            Through::PageCache
        } else {
            Through::Disk
        };
        Append {
            streaming: target.streams.enter(),
            target,
            length: start,
            batch: Vec::new(),
            batch_bytes: 0,
            write_by: None,
            prepared: None,
            writing: None,
            in_flight: 0,
            through,
            ended: false,
            interruption: None,
            error: None,
        }
    }

    /// Starts the next write if none is in flight and one is ready; otherwise, with a full
    /// batch, copies it into an aligned buffer now, while the disk is busy with the write in
    /// flight, rather than after it.
    fn start_writes(&mut self, body: &mut BodyStream) {
        if self.error.is_some() {
            self.prepared = None;
        }
        if self.writing.is_none() && self.prepared.is_some() && !self.ended {
            // Whether the body has ended already decides if the prepared batch is the last
            // one, which goes with the sync in one trip.
            if let Some(next) = body.next().now_or_never() {
                self.receive(next);
            }
        }
        if self.writing.is_none()
            && !self.ended
            && let Some(ready) = self.prepared.take()
        {
            self.in_flight = ready.len() as u64;
            let (target, length) = (self.target.clone(), self.length);
            self.writing = Some(tokio::task::spawn_blocking(move || {
                append_prepared(&target, length, ready)
            }));
        }
        let full = self.is_full();
        let due = full || self.write_by.is_some_and(|at| at <= Instant::now());
        if self.writing.is_none() && due && self.error.is_none() {
            let tail = if full {
                self.unaligned_tail(self.length)
            } else {
                0
            };
            let batch = self.take_batch(tail);
            self.in_flight = batch.iter().map(|chunk| chunk.len() as u64).sum();
            let (target, length, through) = (self.target.clone(), self.length, self.through);
            self.writing = Some(tokio::task::spawn_blocking(move || {
                append_batch(&target, length, batch, through)
            }));
        } else if full
            && self.writing.is_some()
            && self.prepared.is_none()
            && self.through == Through::Disk
        {
            let start = self.length + self.in_flight;
            let tail = self.unaligned_tail(start);
            self.prepared =
                self.target
                    .direct
                    .prepare(&self.batch, 0..self.batch_bytes - tail, start);
            if self.prepared.is_some() {
                self.take_batch(tail);
            }
        }
    }

    /// How many bytes at the end of the gathering batch, written from file offset `start`,
    /// would end in a partial block. A full batch leaves them for the next one, so that in a
    /// long body every write but the last covers whole blocks and goes straight to the disk
    /// (a partial block goes through the page cache, and the next write must fill the rest).
    fn unaligned_tail(&self, start: u64) -> usize {
        let end = start + self.batch_bytes as u64;
        let tail = (end % ALIGN as u64) as usize;
        if tail < self.batch_bytes { tail } else { 0 }
    }

    /// Takes the gathering batch but its last `keep` bytes, which start the next one. They are
    /// copied (at most a block): a slice would pin the whole buffer hyper read them into, up
    /// to 256 KiB per upload (200 concurrent 16 MiB uploads: 127 MiB peak RSS, copied 106).
    fn take_batch(&mut self, keep: usize) -> Vec<Bytes> {
        let mut batch = std::mem::take(&mut self.batch);
        let mut pieces = Vec::new();
        let mut missing = keep;
        while missing > 0 {
            let Some(mut last) = batch.pop() else { break };
            if last.len() > missing {
                pieces.push(last.split_off(last.len() - missing));
                batch.push(last);
                missing = 0;
            } else {
                missing -= last.len();
                pieces.push(last);
            }
        }
        let mut kept = Vec::with_capacity(keep);
        for piece in pieces.iter().rev() {
            kept.extend_from_slice(piece);
        }
        self.batch = if kept.is_empty() {
            Vec::new()
        } else {
            vec![Bytes::from(kept)]
        };
        self.batch_bytes = keep;
        self.write_by = (keep > 0).then(|| Instant::now() + LINGER);
        batch
    }

    fn is_full(&self) -> bool {
        self.batch_bytes >= self.streaming.0.batch_limit()
    }

    /// Whether the next chunk of the body is wanted now.
    fn is_reading(&self) -> bool {
        !self.ended && self.error.is_none() && !self.is_full() && self.prepared.is_none()
    }

    /// Whether only the last trip (the last batch and the sync) is left.
    fn is_done(&self) -> bool {
        self.writing.is_none() && !self.is_reading() && (self.prepared.is_none() || self.ended)
    }

    /// When a partial batch must be written, if it may be written now.
    fn linger_deadline(&self) -> Option<Instant> {
        self.write_by.filter(|_| self.writing.is_none())
    }

    fn receive(&mut self, next: Option<Result<Bytes, BodyError>>) {
        match next {
            Some(Ok(chunk)) => {
                if !chunk.is_empty() {
                    self.batch_bytes += chunk.len();
                    self.batch.push(chunk);
                    self.write_by.get_or_insert_with(|| Instant::now() + LINGER);
                }
            }
            Some(Err(reason)) => {
                self.interruption = Some(reason);
                self.ended = true;
            }
            None => self.ended = true,
        }
    }

    fn write_finished(&mut self, done: Result<io::Result<(u64, Through)>, tokio::task::JoinError>) {
        self.writing = None;
        match done {
            Ok(Ok((new_length, through))) => {
                self.length = new_length;
                self.through = through;
            }
            Ok(Err(failure)) => self.error = Some(failure),
            Err(failure) => self.error = Some(io::Error::other(failure)),
        }
    }

    /// The last batch (unless a write already failed) and the sync, in one trip.
    async fn finish(mut self) -> Written {
        if self.error.is_some() {
            self.batch.clear();
            self.prepared = None;
        }
        let (target, length, through) = (self.target, self.length, self.through);
        let (prepared, batch) = (self.prepared, self.batch);
        let last = tokio::task::spawn_blocking(move || {
            write_last(&target, length, through, prepared, batch)
        })
        .await;
        let (write_error, synced) = match last {
            Ok(outcome) => outcome,
            Err(failure) => (None, Err(io::Error::other(failure))),
        };
        let (durable_length, sync_error) = match synced {
            Ok(length) => (length, None),
            Err(failure) => (0, Some(failure)),
        };
        Written {
            durable_length,
            error: self.error.or(write_error).or(sync_error),
            interruption: self.interruption,
        }
    }
}

/// Appends `batch` to the file, which must be `length` bytes long; returns its new length and
/// how the bytes went. The file is open (and locked) only for this write.
fn append_batch(
    target: &Target,
    length: u64,
    batch: Vec<Bytes>,
    through: Through,
) -> io::Result<(u64, Through)> {
    let mut file = open_at(target, length)?;
    append_to(target, &mut file, length, batch, through)
}

/// Appends `batch` to `file`, opened by [`open_at`] and `length` bytes long.
fn append_to(
    target: &Target,
    file: &mut File,
    length: u64,
    batch: Vec<Bytes>,
    through: Through,
) -> io::Result<(u64, Through)> {
    let new_length = length + batch.iter().map(|chunk| chunk.len() as u64).sum::<u64>();
    let through = target
        .direct
        .append(&target.path, file, length, batch, through)?;
    Ok((new_length, through))
}

/// Appends a batch prepared while the previous write was in flight; returns the new length
/// and how the bytes went.
fn append_prepared(target: &Target, length: u64, prepared: Prepared) -> io::Result<(u64, Through)> {
    let mut file = open_at(target, length)?;
    append_prepared_to(target, &mut file, length, prepared)
}

/// Appends `prepared` to `file`, opened by [`open_at`] and `length` bytes long.
fn append_prepared_to(
    target: &Target,
    file: &mut File,
    length: u64,
    prepared: Prepared,
) -> io::Result<(u64, Through)> {
    // Prepared for the length the previous write was to reach, which it did if it succeeded;
    // written anywhere else, its direct part would land at the wrong offset.
    if prepared.start() != length {
        return Err(io::Error::other(format!(
            "a batch prepared for offset {} met a file of {length} bytes",
            prepared.start()
        )));
    }
    let new_length = length + prepared.len() as u64;
    let through = target.direct.write(&target.path, file, prepared)?;
    Ok((new_length, through))
}

/// Opens the data file for appending, takes its lock and checks that it is `length` bytes
/// long. The lock goes with the file when it is closed.
fn open_at(target: &Target, length: u64) -> io::Result<File> {
    let file = OpenOptions::new().append(true).open(&target.path)?;
    lock_at(&file, length)?;
    Ok(file)
}

/// Takes the data file's lock and checks that it is `length` bytes long.
fn lock_at(file: &File, length: u64) -> io::Result<()> {
    // Blocks only while another process writes one batch of its own.
    file.lock()?;
    check_length(file, length)
}

/// Checks that the (locked) data file is `length` bytes long.
fn check_length(file: &File, length: u64) -> io::Result<()> {
    let found = file.metadata()?.len();
    if found != length {
        return Err(io::Error::other(LengthChanged {
            expected: length,
            found,
        }));
    }
    Ok(())
}

/// Writes the last batch (prepared, gathered, or both in that order), if any, then makes what
/// reached the file durable and stamps the write time. Returns the write's error, if it
/// failed, and the durable length: the file's, read under its lock before the sync, so it is
/// true even when this append wrote nothing or failed (another process's bytes included: the
/// sync flushes them too).
fn write_last(
    target: &Target,
    length: u64,
    through: Through,
    prepared: Option<Prepared>,
    batch: Vec<Bytes>,
) -> (Option<io::Error>, io::Result<u64>) {
    let mut file = match OpenOptions::new().append(true).open(&target.path) {
        Ok(file) => file,
        Err(error) => return (None, Err(error)),
    };
    // One lock for both writes and the sync.
    if let Err(error) = file.lock() {
        return (None, Err(error));
    }
    let written = (|| {
        if prepared.is_none() && batch.is_empty() {
            return Ok(());
        }
        check_length(&file, length)?;
        let (length, through) = match prepared {
            Some(prepared) => append_prepared_to(target, &mut file, length, prepared)?,
            None => (length, through),
        };
        if !batch.is_empty() {
            append_to(target, &mut file, length, batch, through)?;
        }
        Ok(())
    })();
    // fdatasync flushes the file's pages whichever descriptor wrote them.
    let synced = (|| {
        if target.set_aside {
            return file.metadata().map(|metadata| metadata.len());
        }
        // Expiry counts from the last write, on the service's clock.
        file.set_modified(target.clock.now())?;
        let durable = file.metadata()?.len();
        file.sync_data()?;
        Ok(durable)
    })();
    (written.err(), synced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use resumable_core::SystemClock;

    fn append_gathering(start: u64, sizes: &[usize]) -> (Append, Vec<u8>) {
        let target = Target {
            path: PathBuf::from("unused"),
            clock: Arc::new(SystemClock),
            direct: Arc::new(DirectWriter::new(0)),
            streams: Arc::default(),
            set_aside: false,
        };
        let mut append = Append::new(target, start);
        let mut all = Vec::new();
        for &size in sizes {
            let chunk: Vec<u8> = (all.len()..all.len() + size).map(|i| i as u8).collect();
            all.extend_from_slice(&chunk);
            append.receive(Some(Ok(Bytes::from(chunk))));
        }
        (append, all)
    }

    fn joined(chunks: &[Bytes]) -> Vec<u8> {
        chunks.concat()
    }

    #[tokio::test]
    async fn a_full_batch_leaves_its_partial_block_for_the_next() {
        // From offset 1000, 10,000 bytes end at 11,000: 2,808 bytes past the block at 8,192.
        let (mut append, all) = append_gathering(1000, &[3000, 5000, 2000]);
        let tail = append.unaligned_tail(1000);
        assert_eq!(tail, 11_000 - 2 * ALIGN);
        let batch = append.take_batch(tail);
        assert_eq!(joined(&batch), all[..10_000 - tail]);
        assert_eq!(joined(&append.batch), all[10_000 - tail..]);
        assert_eq!(append.batch_bytes, tail);
        assert!(
            append.write_by.is_some(),
            "the kept bytes are written in time"
        );
        assert_eq!((1000 + 10_000 - tail) % ALIGN, 0);
    }

    #[tokio::test]
    async fn a_batch_within_one_block_or_ending_on_a_boundary_keeps_nothing() {
        let (append, _) = append_gathering(100, &[200]);
        assert_eq!(append.unaligned_tail(100), 0);
        let (append, _) = append_gathering(96, &[4000, 4096]);
        assert_eq!(append.unaligned_tail(96), 0);
    }

    #[tokio::test]
    async fn taking_the_whole_batch_leaves_it_empty() {
        let (mut append, all) = append_gathering(0, &[10, 20]);
        assert_eq!(joined(&append.take_batch(0)), all);
        assert!(append.batch.is_empty());
        assert_eq!(append.batch_bytes, 0);
        assert!(append.write_by.is_none());
    }

    #[test]
    fn batches_shrink_as_more_uploads_stream() {
        let streams = Arc::new(Streams::default());
        assert_eq!(streams.batch_limit(), MAX_BATCH);
        let mut streaming: Vec<Streaming> = (0..8).map(|_| streams.enter()).collect();
        assert_eq!(streams.batch_limit(), MAX_BATCH);
        streaming.extend((0..8).map(|_| streams.enter()));
        assert_eq!(streams.batch_limit(), 1024 * 1024);
        streaming.extend((0..200).map(|_| streams.enter()));
        assert_eq!(streams.batch_limit(), MIN_BATCH);
        streaming.truncate(1);
        assert_eq!(streams.batch_limit(), MAX_BATCH);
        drop(streaming);
        assert_eq!(streams.0.load(Ordering::Relaxed), 0);
    }
}
