//! A byte range of a file as a streamed request body: read in bounded pieces as the connection
//! takes them, so memory does not depend on the file's size or the chunk size.

use crate::ClientError;
use futures_util::StreamExt;
use reqwest::Body;
use std::io::SeekFrom;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::Instant;
use tokio_util::io::ReaderStream;

/// Bytes read from the file per piece of body: large enough to keep the blocking-pool hops of
/// `tokio::fs` cheap, small enough that many parallel uploads stay light.
const PIECE: usize = 256 * 1024;

/// Counts the bytes a request body handed to the connection. Shared with the body stream, which
/// the HTTP stack polls from its own task.
#[derive(Debug, Clone, Default)]
pub(crate) struct SentCounter(Arc<AtomicU64>);

impl SentCounter {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Paces a body to `bytes_per_second`.
#[derive(Debug, Clone, Copy)]
struct Pace {
    bytes_per_second: u64,
    started: Instant,
}

impl Pace {
    /// When `sent` bytes are due.
    fn due(&self, sent: u64) -> Instant {
        let seconds = sent as f64 / self.bytes_per_second as f64;
        self.started + Duration::from_secs_f64(seconds)
    }
}

/// `range` of the file at `path` as a body. Each piece handed to the connection is added to
/// `sent`; with `rate_limit`, pieces are released no faster than that many bytes per second.
pub(crate) async fn file_range(
    path: &Path,
    range: Range<u64>,
    sent: SentCounter,
    rate_limit: Option<u64>,
) -> Result<Body, ClientError> {
    let file_error = |source| ClientError::File {
        path: path.to_owned(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(file_error)?;
    file.seek(SeekFrom::Start(range.start))
        .await
        .map_err(file_error)?;
    let reader = file.take(range.end - range.start);
    let pace = rate_limit
        .filter(|&rate| rate > 0)
        .map(|bytes_per_second| Pace {
            bytes_per_second,
            started: Instant::now(),
        });
    let mut paced: u64 = 0;
    let stream = ReaderStream::with_capacity(reader, PIECE).then(move |piece| {
        let sent = sent.clone();
        let due = piece.as_ref().ok().and_then(|bytes| {
            paced += bytes.len() as u64;
            pace.map(|pace| pace.due(paced))
        });
        async move {
            if let Some(due) = due {
                tokio::time::sleep_until(due).await;
            }
            if let Ok(bytes) = &piece {
                sent.add(bytes.len() as u64);
            }
            piece
        }
    });
    Ok(Body::wrap_stream(stream))
}
