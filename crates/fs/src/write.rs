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
//! What counts is the committed length (see `committed`): an append syncs and commits when
//! its body ends, every few seconds while a long body streams, and once a body has been quiet
//! for a second, so a crash of the server loses at most the last seconds of a body. Bytes past the committed length were never
//! acknowledged (an offset is reported only once committed), so the client sends them again;
//! the append that follows cuts them off before its first write.

use crate::committed;
use crate::direct::{ALIGN, DirectWriter, Prepared};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use resumable_core::{BodyError, BodyStream, Clock};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
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

/// How often a long body is synced and committed while it streams: what a crash of the server
/// can cost the client to send again, against an `fdatasync` more. (Every second, 200
/// concurrent 16 MiB uploads peaked at 170 MiB RSS instead of about 100: bodies gathered in
/// memory while their writes waited for syncs.)
const COMMIT_EVERY: Duration = Duration::from_secs(5);

/// How long a body may stay quiet with bytes written but not committed: a client whose
/// connection stalls (or that paces its sending) has what it sent committed soon after.
const COMMIT_WHEN_QUIET: Duration = Duration::from_secs(1);

/// What an append achieved.
pub(crate) struct Written {
    /// The committed length after the append (for bytes set aside: the file's length).
    pub(crate) durable_length: u64,
    /// The write or sync error that stopped the append, if any.
    pub(crate) error: Option<WriteError>,
    /// Why the body ended early, if it did.
    pub(crate) interruption: Option<BodyError>,
    /// The write time the last commit stamped on the data file, if it stamped one.
    pub(crate) modified_at: Option<SystemTime>,
}

/// What the last trip left durable: the committed length, and the write time it stamped.
struct Durable {
    length: u64,
    stamped: Option<SystemTime>,
}

/// Why an append's write failed: a typed condition the store acts on, or an I/O error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// The data file was not as long as the append expected: another process wrote to it.
    #[error("the data file is {found} bytes long, not {expected}: another process appended")]
    LengthChanged {
        /// The length the append expected.
        expected: u64,
        /// The length it found.
        found: u64,
    },
    /// The file system failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl WriteError {
    fn is_length_changed(&self) -> bool {
        matches!(self, WriteError::LengthChanged { .. })
    }
}

/// Where and how an append writes.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) path: PathBuf,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) direct: Arc<DirectWriter>,
    pub(crate) streams: Arc<Streams>,
    /// The upload's committed-length record; `None` for bytes set aside until verified (a
    /// staged chunk), which are neither synced nor committed: they count only once copied into
    /// the data file.
    pub(crate) committed: Option<PathBuf>,
}

/// How a write task treats the file around its write.
#[derive(Debug, Clone, Copy)]
struct Trip {
    /// The file's length before the write: this append's bytes so far.
    length: u64,
    /// The append's first write: the committed length must be `length` (else another
    /// process got there first), and bytes past it, never committed, are cut off.
    first: bool,
    /// Sync and commit after the write.
    commit: bool,
}

type WriteTask = JoinHandle<Result<u64, WriteError>>;

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
        let linger = append.wake_at();
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
    /// No write has started yet.
    first: bool,
    /// When the next write also syncs and commits.
    commit_by: Instant,
    /// When bytes written but not committed are committed if nothing else is written first.
    quiet_by: Instant,
    /// Whether the write in flight commits.
    committing: bool,
    /// The error stopped the append because another process wrote to the file.
    foreign: bool,
    /// Bytes were written since the last commit.
    uncommitted: bool,
    ended: bool,
    interruption: Option<BodyError>,
    error: Option<WriteError>,
}

impl Append {
    fn new(target: Target, start: u64) -> Self {
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
            first: true,
            commit_by: Instant::now() + COMMIT_EVERY,
            quiet_by: Instant::now() + COMMIT_WHEN_QUIET,
            committing: false,
            foreign: false,
            uncommitted: false,
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
            let (target, trip) = (self.target.clone(), self.trip(false));
            self.writing = Some(tokio::task::spawn_blocking(move || {
                append_prepared(&target, trip, ready)
            }));
        }
        if self.writing.is_none()
            && self.uncommitted
            && self.batch.is_empty()
            && self.prepared.is_none()
            && !self.ended
            && self.error.is_none()
            && self.quiet_by <= Instant::now()
        {
            // The client has gone quiet with bytes written but not committed: commit them, so
            // a crash of the server does not cost them.
            let (target, trip) = (self.target.clone(), self.trip(true));
            self.in_flight = 0;
            self.writing = Some(tokio::task::spawn_blocking(move || {
                commit_only(&target, trip)
            }));
            return;
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
            let (target, trip) = (self.target.clone(), self.trip(false));
            self.writing = Some(tokio::task::spawn_blocking(move || {
                append_batch(&target, trip, batch)
            }));
        } else if full && self.writing.is_some() && self.prepared.is_none() {
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

    /// When something must happen even if no byte arrives, with no write in flight: a
    /// partial batch written, or what was written committed.
    fn wake_at(&self) -> Option<Instant> {
        if self.writing.is_some() {
            return None;
        }
        let commit_by = self.uncommitted.then_some(self.quiet_by);
        match (self.write_by, commit_by) {
            (Some(write_by), Some(commit_by)) => Some(write_by.min(commit_by)),
            (write_by, commit_by) => write_by.or(commit_by),
        }
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

    /// The trip of the write about to start; it commits if `commit` or a commit is due.
    fn trip(&mut self, commit: bool) -> Trip {
        let trip = Trip {
            length: self.length,
            first: self.first,
            commit: self.target.committed.is_some() && (commit || Instant::now() >= self.commit_by),
        };
        self.first = false;
        self.committing = trip.commit;
        trip
    }

    fn write_finished(&mut self, done: Result<Result<u64, WriteError>, tokio::task::JoinError>) {
        self.writing = None;
        match done {
            Ok(Ok(new_length)) => {
                self.uncommitted = self.target.committed.is_some() && !self.committing;
                self.length = new_length;
                let now = Instant::now();
                self.quiet_by = now + COMMIT_WHEN_QUIET;
                if self.committing {
                    self.commit_by = now + COMMIT_EVERY;
                }
            }
            Ok(Err(failure)) => {
                self.foreign = failure.is_length_changed();
                self.error = Some(failure);
            }
            Err(failure) => self.error = Some(io::Error::other(failure).into()),
        }
    }

    /// The last batch (unless a write already failed) and the sync, in one trip.
    async fn finish(mut self) -> Written {
        if self.error.is_some() {
            self.batch.clear();
            self.prepared = None;
        }
        let trip = Trip {
            length: self.length,
            first: self.first,
            commit: true,
        };
        let (target, foreign) = (self.target, self.foreign);
        let (prepared, batch) = (self.prepared, self.batch);
        let last = tokio::task::spawn_blocking(move || {
            write_last(&target, trip, foreign, prepared, batch)
        })
        .await;
        let (write_error, synced) = match last {
            Ok(outcome) => outcome,
            Err(failure) => (None, Err(io::Error::other(failure))),
        };
        let (durable, sync_error) = match synced {
            Ok(durable) => (durable, None),
            Err(failure) => (
                Durable {
                    length: 0,
                    stamped: None,
                },
                Some(failure),
            ),
        };
        Written {
            durable_length: durable.length,
            error: self
                .error
                .or(write_error)
                .or(sync_error.map(WriteError::Io)),
            interruption: self.interruption,
            modified_at: durable.stamped,
        }
    }
}

/// Appends `batch` to the file, which must be `trip.length` bytes long; returns its new
/// length. The file is open (and locked) only for this write.
fn append_batch(target: &Target, trip: Trip, batch: Vec<Bytes>) -> Result<u64, WriteError> {
    let mut file = open_at(target, trip)?;
    let length = append_to(target, &mut file, trip.length, batch)?;
    commit_if(target, &file, trip, length)?;
    Ok(length)
}

/// Appends `batch` to `file`, opened by [`open_at`] and `length` bytes long.
fn append_to(target: &Target, file: &mut File, length: u64, batch: Vec<Bytes>) -> io::Result<u64> {
    let new_length = length + batch.iter().map(|chunk| chunk.len() as u64).sum::<u64>();
    target.direct.append(&target.path, file, length, batch)?;
    Ok(new_length)
}

/// Appends a batch prepared while the previous write was in flight; returns the new length.
fn append_prepared(target: &Target, trip: Trip, prepared: Prepared) -> Result<u64, WriteError> {
    let mut file = open_at(target, trip)?;
    let length = append_prepared_to(target, &mut file, trip.length, prepared)?;
    commit_if(target, &file, trip, length)?;
    Ok(length)
}

/// Appends `prepared` to `file`, opened by [`open_at`] and `length` bytes long.
fn append_prepared_to(
    target: &Target,
    file: &mut File,
    length: u64,
    prepared: Prepared,
) -> io::Result<u64> {
    // Prepared for the length the previous write was to reach, which it did if it succeeded;
    // written anywhere else, its direct part would land at the wrong offset.
    if prepared.start() != length {
        return Err(io::Error::other(format!(
            "a batch prepared for offset {} met a file of {length} bytes",
            prepared.start()
        )));
    }
    let new_length = length + prepared.len() as u64;
    target.direct.write(&target.path, file, prepared)?;
    Ok(new_length)
}

/// Opens the data file for appending, takes its lock and checks it (see [`check`]). The lock
/// goes with the file when it is closed.
fn open_at(target: &Target, trip: Trip) -> Result<File, WriteError> {
    let file = OpenOptions::new().append(true).open(&target.path)?;
    // Blocks only while another process writes one batch of its own.
    file.lock()?;
    check(target, &file, trip)?;
    Ok(file)
}

/// Checks the (locked) data file before a write: on the append's first, that the committed
/// length is where the append starts (cutting off bytes past it, which were never committed);
/// on the others, that the file is as long as this append's writes left it.
fn check(target: &Target, file: &File, trip: Trip) -> Result<(), WriteError> {
    let found = file.metadata()?.len();
    if !trip.first {
        return expect_length(trip.length, found);
    }
    let stored = match &target.committed {
        Some(record) => committed::stored(record, found)?,
        None => found,
    };
    expect_length(trip.length, stored)?;
    if found > trip.length {
        file.set_len(trip.length)?;
    }
    Ok(())
}

fn expect_length(expected: u64, found: u64) -> Result<(), WriteError> {
    if found != expected {
        return Err(WriteError::LengthChanged { expected, found });
    }
    Ok(())
}

/// Syncs what earlier writes of the append left in the file and commits it; returns the
/// length.
fn commit_only(target: &Target, trip: Trip) -> Result<u64, WriteError> {
    let file = open_at(target, trip)?;
    commit_if(target, &file, trip, trip.length)?;
    Ok(trip.length)
}

/// Syncs the file and commits `length` when the trip asks for it.
fn commit_if(target: &Target, file: &File, trip: Trip, length: u64) -> io::Result<()> {
    match &target.committed {
        Some(record) if trip.commit => {
            file.sync_data()?;
            committed::store(record, length)
        }
        _ => Ok(()),
    }
}

/// Writes the last batch (prepared, gathered, or both in that order), if any, then syncs what
/// this append wrote, stamps the write time and commits. Returns the write's error, if it
/// failed, and the committed length after it: after a failed write, what reached the file
/// (this append holds the lock, so those are its bytes); when another process wrote to the
/// file (`foreign`, or found now), nothing is committed and the length as it stands is told.
fn write_last(
    target: &Target,
    trip: Trip,
    foreign: bool,
    prepared: Option<Prepared>,
    batch: Vec<Bytes>,
) -> (Option<WriteError>, io::Result<Durable>) {
    let mut file = match OpenOptions::new().append(true).open(&target.path) {
        Ok(file) => file,
        Err(error) => return (None, Err(error)),
    };
    // One lock for both writes and the commit.
    if let Err(error) = file.lock() {
        return (None, Err(error));
    }
    let writes = prepared.is_some() || !batch.is_empty();
    // Whether the file was found as this append left it (or, on its first write, as committed).
    let mut checked = !trip.first;
    let written = (|| -> Result<u64, WriteError> {
        if !writes {
            return Ok(trip.length);
        }
        check(target, &file, trip)?;
        checked = true;
        let mut length = trip.length;
        if let Some(prepared) = prepared {
            length = append_prepared_to(target, &mut file, length, prepared)?;
        }
        if !batch.is_empty() {
            length = append_to(target, &mut file, length, batch)?;
        }
        Ok(length)
    })();
    let foreign = foreign || written.as_ref().is_err_and(WriteError::is_length_changed);
    let committed = (|| {
        let found = file.metadata()?.len();
        let unstamped = |length| Durable {
            length,
            stamped: None,
        };
        let Some(record) = &target.committed else {
            return Ok(unstamped(found));
        };
        // Nothing of this append reached the file: nothing to commit.
        if foreign || !checked {
            return committed::stored(record, found).map(unstamped);
        }
        let length = *written.as_ref().unwrap_or(&found);
        // Expiry counts from the last write, on the service's clock.
        let now = target.clock.now();
        file.set_modified(now)?;
        file.sync_data()?;
        committed::store(record, length)?;
        Ok(Durable {
            length,
            stamped: Some(now),
        })
    })();
    (written.err(), committed)
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
            committed: None,
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
