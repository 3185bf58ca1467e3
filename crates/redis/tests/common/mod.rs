//! A redis-server of the test's own (`resumable_testkit::Redis`: a free port of 127.0.0.1, no
//! persistence, a temporary directory, killed when dropped).
//!
//! Without `redis-server` the tests are skipped, unless `RESUMABLE_REQUIRE_REDIS` is set (as
//! `./test.sh` does), in which case they fail.

#![allow(dead_code, unreachable_pub)]

use resumable_testkit::Redis;

/// A running redis-server, or `None` (after saying so) when it is not installed and not
/// required.
pub fn redis() -> Option<Redis> {
    resumable_testkit::require(Redis::start(), "RESUMABLE_REQUIRE_REDIS")
}
