//! How often each client may create uploads: a token bucket per client, on the service's
//! [`Clock`] (so tests move time instead of waiting).
//!
//! A bucket holds up to a minute's allowance and refills continuously; a creation takes one
//! token. A full bucket is the same as no bucket, so buckets that have refilled are dropped:
//! the table only holds clients that created something within the last minute.

use crate::clock::Clock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Creations allowed per client per minute, and the buckets that track them.
pub(crate) struct CreationRate {
    per_minute: u32,
    buckets: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    buckets: HashMap<String, Bucket>,
    /// The table is swept of full buckets when it reaches this size (then set to twice what
    /// is left, at least [`SWEEP_FROM`]), so sweeps cost O(1) per creation on average.
    sweep_at: usize,
}

/// Tables smaller than this are never swept.
const SWEEP_FROM: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens as of `at` (fractional: refilling is continuous).
    tokens: f64,
    at: SystemTime,
}

impl CreationRate {
    /// `per_minute` creations per client per minute, in bursts of up to as many; above zero.
    pub(crate) fn new(per_minute: u32) -> Self {
        CreationRate {
            per_minute,
            buckets: Mutex::new(Table {
                buckets: HashMap::new(),
                sweep_at: SWEEP_FROM,
            }),
        }
    }

    fn capacity(&self) -> f64 {
        f64::from(self.per_minute)
    }

    /// Tokens regained per second.
    fn refill(&self) -> f64 {
        self.capacity() / 60.0
    }

    /// The bucket as of `now`: refilled for the time since it was last touched (a clock that
    /// went back refills nothing).
    fn refilled(&self, bucket: Bucket, now: SystemTime) -> f64 {
        let elapsed = now.duration_since(bucket.at).unwrap_or_default();
        (bucket.tokens + elapsed.as_secs_f64() * self.refill()).min(self.capacity())
    }

    /// Takes one creation from `client`'s allowance; when there is none left, how long until
    /// there is.
    pub(crate) fn take(&self, client: &str, clock: &dyn Clock) -> Result<(), Duration> {
        let now = clock.now();
        let mut table = self
            .buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let tokens = match table.buckets.get(client) {
            Some(bucket) => self.refilled(*bucket, now),
            None => self.capacity(),
        };
        if tokens < 1.0 {
            let wait = (1.0 - tokens) / self.refill();
            return Err(Duration::from_secs_f64(wait));
        }
        let bucket = Bucket {
            tokens: tokens - 1.0,
            at: now,
        };
        table.buckets.insert(client.to_owned(), bucket);
        if table.buckets.len() >= table.sweep_at {
            let capacity = self.capacity();
            table
                .buckets
                .retain(|_, bucket| self.refilled(*bucket, now) < capacity);
            table.sweep_at = (table.buckets.len() * 2).max(SWEEP_FROM);
        }
        Ok(())
    }

    /// Clients with a bucket (for tests of the sweep).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .buckets
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_client_gets_a_minute_of_creations_at_once_then_they_refill() {
        let clock = ManualClock::default();
        let rate = CreationRate::new(60);
        for _ in 0..60 {
            rate.take("a", &clock).unwrap();
        }
        let wait = rate.take("a", &clock).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        // Another client has its own allowance.
        rate.take("b", &clock).unwrap();
        clock.advance(Duration::from_secs(1));
        rate.take("a", &clock).unwrap();
        assert!(rate.take("a", &clock).is_err());
        clock.advance(Duration::from_secs(60));
        for _ in 0..60 {
            rate.take("a", &clock).unwrap();
        }
        assert!(rate.take("a", &clock).is_err());
    }

    #[test]
    fn clients_whose_allowance_refilled_are_forgotten() {
        let clock = ManualClock::default();
        let rate = CreationRate::new(120);
        for client in 0..SWEEP_FROM - 1 {
            rate.take(&client.to_string(), &clock).unwrap();
        }
        assert_eq!(rate.tracked(), SWEEP_FROM - 1);
        // Half a second refills one token of 120 per minute: every bucket is full again.
        clock.advance(Duration::from_millis(500));
        rate.take("busy", &clock).unwrap();
        rate.take("busy", &clock).unwrap();
        assert_eq!(rate.tracked(), 1);
        // Active clients are kept.
        for client in 0..2 * SWEEP_FROM {
            rate.take(&client.to_string(), &clock).unwrap();
        }
        assert_eq!(rate.tracked(), 2 * SWEEP_FROM + 1);
    }
}
