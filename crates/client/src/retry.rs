//! Exponential backoff with jitter, and when to give up.

use std::time::{Duration, Instant};

/// How the client waits between attempts, and for how long it keeps trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait before the first retry; each further retry doubles it.
    pub first_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
    /// Stop retrying once this long has passed without the server storing a byte more (or, before
    /// the upload exists, without a successful request). Counting from the last progress rather
    /// than from the start means a multi-GiB upload over a flaky link never times out while it
    /// still moves.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
            give_up_after: Duration::from_secs(5 * 60),
        }
    }
}

/// The retry state of one operation sequence (one upload or download).
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    /// Failed attempts since the last progress.
    attempt: u32,
    last_progress: Instant,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Backoff {
            policy,
            attempt: 0,
            last_progress: Instant::now(),
        }
    }

    /// Something moved forward: the next failure starts again from the first delay.
    pub(crate) fn progressed(&mut self) {
        self.attempt = 0;
        self.last_progress = Instant::now();
    }

    /// Failed attempts since the last progress.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How long nothing moved.
    pub(crate) fn stuck_for(&self) -> Duration {
        self.last_progress.elapsed()
    }

    /// The wait before the next attempt, or `None` once the policy says to give up.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        let delay = jittered(nominal_delay(&self.policy, self.attempt));
        if self.stuck_for() + delay > self.policy.give_up_after {
            return None;
        }
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }
}

/// `first_delay * 2^attempt`, capped at `max_delay`.
fn nominal_delay(policy: &RetryPolicy, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX);
    policy
        .first_delay
        .checked_mul(factor)
        .unwrap_or(policy.max_delay)
        .min(policy.max_delay)
}

/// A delay between half and all of `nominal`, so many clients cut off at once (a server restart)
/// do not all come back in the same instant.
fn jittered(nominal: Duration) -> Duration {
    let half = nominal / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            give_up_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let nominal: Vec<u128> = (0..8)
            .map(|attempt| nominal_delay(&policy(), attempt).as_millis())
            .collect();
        assert_eq!(nominal, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(nominal_delay(&policy(), u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_between_half_and_all() {
        for _ in 0..1000 {
            let delay = jittered(Duration::from_millis(800));
            assert!(delay >= Duration::from_millis(400) && delay <= Duration::from_millis(800));
        }
    }

    #[test]
    fn progress_resets_the_attempts() {
        let mut backoff = Backoff::new(policy());
        backoff.next_delay().unwrap();
        backoff.next_delay().unwrap();
        assert_eq!(backoff.attempt(), 2);
        backoff.progressed();
        assert_eq!(backoff.attempt(), 0);
    }

    #[test]
    fn gives_up_when_the_next_wait_would_pass_the_limit() {
        let mut backoff = Backoff::new(RetryPolicy {
            give_up_after: Duration::from_millis(150),
            ..policy()
        });
        // The first delay is 50..=100 ms, within the limit; the second (100..=200 ms) would pass it
        // at least half of the time, and the third (200..=400 ms) always does.
        assert!(backoff.next_delay().is_some());
        let later: Vec<_> = (0..3).map(|_| backoff.next_delay()).collect();
        assert!(later.contains(&None));
    }
}
