//! The guard every request body passes through before it reaches a store.
//!
//! It ends the body early, with a [`BodyError`], when the upload's lock is asked for by another
//! request or is lost (no writer may go on without it), when the client stops sending for too long, when it sends slower than the minimum
//! rate over a whole window, or when the body runs past the bytes the upload may still take
//! (the part up to the limit is kept; nothing past it reaches the store). Every byte that came
//! before the end reaches the store.
//!
//! Time is tokio's clock, which tests pause and move (`start_paused`), so no test waits.

use crate::store::{BodyError, BodyStream};
use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

/// Limits of a guarded body.
pub(crate) struct BodyLimits {
    /// Bytes the upload may still take.
    pub(crate) remaining: u64,
    /// How long the body may go without a byte.
    pub(crate) idle_timeout: Duration,
    /// The slowest a body may arrive, if there is a minimum.
    pub(crate) min_rate: Option<MinRate>,
}

/// A minimum rate: at least `bytes_per_second` × `window` bytes in every `window` from the body's
/// start (the first window is its grace period: nothing is measured before it ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes per second; above zero.
    pub bytes_per_second: u64,
    /// How long each measurement runs; above zero.
    pub window: Duration,
}

impl MinRate {
    /// The bytes a body must have sent in `elapsed`.
    fn required(&self, elapsed: Duration) -> u64 {
        let bytes = u128::from(self.bytes_per_second) * elapsed.as_millis() / 1000;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

/// Where a body stands against its [`MinRate`].
struct RateWindow {
    rate: MinRate,
    /// Fires when the current window ends; checked lazily (only when the body waits on the
    /// client), so the measured span is from `start` to whenever it is checked.
    timer: Pin<Box<Sleep>>,
    start: Instant,
    /// Bytes that arrived since `start`.
    bytes: u64,
}

/// What ends a guarded body early, besides its own limits.
pub(crate) struct BodyStops {
    /// Another request asked for the upload's lock.
    pub(crate) takeover: WaitForCancellationFutureOwned,
    /// The upload's lock is no longer held.
    pub(crate) lost: WaitForCancellationFutureOwned,
    /// The server is shutting down.
    pub(crate) shutdown: WaitForCancellationFutureOwned,
}

pub(crate) struct GuardedBody {
    inner: BodyStream,
    takeover: Pin<Box<WaitForCancellationFutureOwned>>,
    lost: Pin<Box<WaitForCancellationFutureOwned>>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    remaining: u64,
    idle_timeout: Duration,
    /// Fires at the idle deadline; moved forward lazily from `last_chunk` when it fires, so the
    /// timer is not re-armed on every chunk.
    stall_timer: Pin<Box<Sleep>>,
    last_chunk: Instant,
    rate: Option<RateWindow>,
    /// The error to yield after a truncated chunk, then the end.
    pending: Option<BodyError>,
    done: bool,
}

impl GuardedBody {
    pub(crate) fn new(inner: BodyStream, stops: BodyStops, limits: BodyLimits) -> Self {
        let now = Instant::now();
        GuardedBody {
            inner,
            takeover: Box::pin(stops.takeover),
            lost: Box::pin(stops.lost),
            shutdown: Box::pin(stops.shutdown),
            remaining: limits.remaining,
            idle_timeout: limits.idle_timeout,
            stall_timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            last_chunk: now,
            rate: limits.min_rate.map(|rate| RateWindow {
                rate,
                timer: Box::pin(tokio::time::sleep_until(now + rate.window)),
                start: now,
                bytes: 0,
            }),
            pending: None,
            done: false,
        }
    }

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.done = true;
        Poll::Ready(Some(Err(error)))
    }

    fn accept(&mut self, chunk: Bytes) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.last_chunk = Instant::now();
        let length = chunk.len() as u64;
        if let Some(window) = &mut self.rate {
            window.bytes = window.bytes.saturating_add(length);
        }
        if length <= self.remaining {
            self.remaining -= length;
            return Poll::Ready(Some(Ok(chunk)));
        }
        // `remaining` < chunk length, so it fits in usize.
        let allowed = usize::try_from(self.remaining).unwrap_or(0);
        self.remaining = 0;
        self.pending = Some(BodyError::TooLong);
        if allowed == 0 {
            return self.fail(BodyError::TooLong);
        }
        Poll::Ready(Some(Ok(chunk.slice(..allowed))))
    }

    fn poll_stalled(&mut self, context: &mut Context<'_>) -> bool {
        while self.stall_timer.as_mut().poll(context).is_ready() {
            let deadline = self.last_chunk + self.idle_timeout;
            if deadline <= Instant::now() {
                return true;
            }
            self.stall_timer.as_mut().reset(deadline);
        }
        false
    }

    /// Whether a window has ended with fewer bytes than the minimum rate asks; a window that
    /// ended fast enough starts the next one.
    fn poll_too_slow(&mut self, context: &mut Context<'_>) -> Option<BodyError> {
        let window = self.rate.as_mut()?;
        while window.timer.as_mut().poll(context).is_ready() {
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(window.start);
            if window.bytes < window.rate.required(elapsed) {
                return Some(BodyError::TooSlow {
                    min_bytes_per_second: window.rate.bytes_per_second,
                });
            }
            window.start = now;
            window.bytes = 0;
            window.timer.as_mut().reset(now + window.rate.window);
        }
        None
    }
}

impl Stream for GuardedBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(error) = this.pending.take() {
            return this.fail(error);
        }
        // Checked first: once the lock is gone, not even a takeover's bytes may be taken.
        if this.lost.as_mut().poll(context).is_ready() {
            return this.fail(BodyError::LockLost);
        }
        if this.takeover.as_mut().poll(context).is_ready() {
            return this.fail(BodyError::TakenOver);
        }
        if this.shutdown.as_mut().poll(context).is_ready() {
            return this.fail(BodyError::ShuttingDown);
        }
        match this.inner.as_mut().poll_next(context) {
            Poll::Ready(Some(Ok(chunk))) => this.accept(chunk),
            Poll::Ready(Some(Err(error))) => this.fail(error),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending if this.poll_stalled(context) => this.fail(BodyError::Stalled),
            Poll::Pending => match this.poll_too_slow(context) {
                Some(error) => this.fail(error),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio_util::sync::CancellationToken;

    fn chunks(parts: &[&'static [u8]]) -> BodyStream {
        let items: Vec<Result<Bytes, BodyError>> = parts
            .iter()
            .map(|part| Ok(Bytes::from_static(part)))
            .collect();
        futures_util::stream::iter(items).boxed()
    }

    fn guard(inner: BodyStream, remaining: u64, takeover: &CancellationToken) -> GuardedBody {
        guard_with_shutdown(inner, remaining, takeover, &CancellationToken::new())
    }

    fn guard_with_shutdown(
        inner: BodyStream,
        remaining: u64,
        takeover: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> GuardedBody {
        let limits = BodyLimits {
            remaining,
            idle_timeout: Duration::from_secs(30),
            min_rate: None,
        };
        let stops = BodyStops {
            takeover: takeover.clone().cancelled_owned(),
            lost: CancellationToken::new().cancelled_owned(),
            shutdown: shutdown.clone().cancelled_owned(),
        };
        GuardedBody::new(inner, stops, limits)
    }

    #[tokio::test]
    async fn stops_on_shutdown() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let body = guard_with_shutdown(chunks(&[b"abc"]), 10, &CancellationToken::new(), &shutdown);
        assert_eq!(
            collect(body).await,
            (Vec::new(), Some(BodyError::ShuttingDown))
        );
    }

    async fn collect(body: GuardedBody) -> (Vec<u8>, Option<BodyError>) {
        let items: Vec<_> = body.collect().await;
        let mut bytes = Vec::new();
        let mut error = None;
        for item in items {
            match item {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(failure) => error = Some(failure),
            }
        }
        (bytes, error)
    }

    #[tokio::test]
    async fn passes_a_body_within_the_limit() {
        let token = CancellationToken::new();
        let body = guard(chunks(&[b"abc", b"def"]), 6, &token);
        assert_eq!(collect(body).await, (b"abcdef".to_vec(), None));
    }

    #[tokio::test]
    async fn cuts_a_body_at_the_limit() {
        let token = CancellationToken::new();
        let body = guard(chunks(&[b"abc", b"def", b"ghi"]), 4, &token);
        assert_eq!(
            collect(body).await,
            (b"abcd".to_vec(), Some(BodyError::TooLong))
        );
        let body = guard(chunks(&[b"abc", b"def"]), 3, &token);
        assert_eq!(
            collect(body).await,
            (b"abc".to_vec(), Some(BodyError::TooLong))
        );
    }

    #[tokio::test]
    async fn stops_on_takeover() {
        let token = CancellationToken::new();
        token.cancel();
        let body = guard(chunks(&[b"abc"]), 10, &token);
        assert_eq!(
            collect(body).await,
            (Vec::new(), Some(BodyError::TakenOver))
        );
    }

    #[tokio::test]
    async fn stops_when_the_lock_is_lost_and_passes_what_came_before() {
        let lost = CancellationToken::new();
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let inner = futures_util::stream::unfold(receiver, |mut receiver| async move {
            Some((receiver.recv().await?, receiver))
        });
        let limits = BodyLimits {
            remaining: 10,
            idle_timeout: Duration::from_secs(30),
            min_rate: None,
        };
        let stops = BodyStops {
            takeover: CancellationToken::new().cancelled_owned(),
            lost: lost.clone().cancelled_owned(),
            shutdown: CancellationToken::new().cancelled_owned(),
        };
        let mut body = GuardedBody::new(inner.boxed(), stops, limits);
        sender.send(Ok(Bytes::from_static(b"abc"))).unwrap();
        assert_eq!(body.next().await, Some(Ok(Bytes::from_static(b"abc"))));
        // The body is waiting on the client when the lock goes: it ends at once, and a chunk
        // sent after that never passes.
        let next = tokio::spawn(async move { (body.next().await, body.next().await) });
        lost.cancel();
        sender.send(Ok(Bytes::from_static(b"def"))).unwrap();
        let (error, end) = next.await.unwrap();
        assert_eq!(error, Some(Err(BodyError::LockLost)));
        assert_eq!(end, None);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_a_stalled_body() {
        let token = CancellationToken::new();
        let first = futures_util::stream::iter([Ok(Bytes::from_static(b"ab"))]);
        let inner = first.chain(futures_util::stream::pending()).boxed();
        let body = guard(inner, 10, &token);
        assert_eq!(
            collect(body).await,
            (b"ab".to_vec(), Some(BodyError::Stalled))
        );
    }

    /// A body of `chunks` bytes, one byte every `gap`, then its end.
    fn trickle(chunks: usize, gap: Duration) -> BodyStream {
        futures_util::stream::unfold(0, move |sent| async move {
            if sent == chunks {
                return None;
            }
            tokio::time::sleep(gap).await;
            Some((Ok(Bytes::from_static(b"x")), sent + 1))
        })
        .boxed()
    }

    fn guard_with_rate(inner: BodyStream, bytes_per_second: u64, window: Duration) -> GuardedBody {
        let limits = BodyLimits {
            remaining: u64::MAX,
            idle_timeout: Duration::from_secs(30),
            min_rate: Some(MinRate {
                bytes_per_second,
                window,
            }),
        };
        let stops = BodyStops {
            takeover: CancellationToken::new().cancelled_owned(),
            lost: CancellationToken::new().cancelled_owned(),
            shutdown: CancellationToken::new().cancelled_owned(),
        };
        GuardedBody::new(inner, stops, limits)
    }

    #[tokio::test(start_paused = true)]
    async fn cuts_a_trickle_below_the_minimum_rate_and_keeps_its_bytes() {
        // One byte a second never stalls (the idle timeout is 30 s), but 10 bytes/s over 5 s is
        // 50 bytes: after the first window, the body is cut with its 5 bytes passed on.
        let started = Instant::now();
        let body = guard_with_rate(
            trickle(1000, Duration::from_secs(1)),
            10,
            Duration::from_secs(5),
        );
        let (bytes, error) = collect(body).await;
        assert_eq!(
            error,
            Some(BodyError::TooSlow {
                min_bytes_per_second: 10
            })
        );
        assert_eq!(bytes, b"xxxxx");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_the_minimum_rate_runs_to_its_end() {
        // 10 bytes/s exactly, for 4 windows.
        let body = guard_with_rate(
            trickle(200, Duration::from_millis(100)),
            10,
            Duration::from_secs(5),
        );
        assert_eq!(collect(body).await, (vec![b'x'; 200], None));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_window_is_a_grace_period_and_each_window_counts_alone() {
        // Silent for 4.5 s, then fast: the first window (5 s) holds 60 bytes, enough.
        let late = futures_util::stream::once(tokio::time::sleep(Duration::from_millis(4500)))
            .map(|()| Ok(Bytes::from_static(b"")))
            .chain(trickle(60, Duration::from_millis(1)));
        // Then a second window of 1 byte a second: not carried by the first one's surplus.
        let body = late.chain(trickle(100, Duration::from_secs(1))).boxed();
        let started = Instant::now();
        let (bytes, error) = collect(guard_with_rate(body, 10, Duration::from_secs(5))).await;
        assert!(
            matches!(error, Some(BodyError::TooSlow { .. })),
            "{error:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(bytes.len(), 60 + 5);
    }
}
