//! Time, injectable so that expiry can be tested without waiting.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The current time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The real clock plus an offset that tests move forward.
#[derive(Default)]
pub struct ManualClock {
    /// A std mutex: held for an addition, never across an await.
    ahead: Mutex<Duration>,
}

impl ManualClock {
    /// Moves this clock `by` further ahead of the real one.
    pub fn advance(&self, by: Duration) {
        *self
            .ahead
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
            + *self
                .ahead
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
    }
}
