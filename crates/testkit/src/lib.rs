//! Real servers for resumable's tests: Redis (the fleet's locker), Garage (an S3-compatible
//! store), moto (a strict S3 that enforces the 5 MiB minimum part size) and nginx (a
//! round-robin load balancer in front of a fleet's nodes).
//!
//! Each `start()` launches the real binary on 127.0.0.1 and a free port, in a temporary
//! directory of its own, and returns once the server answers (polled, never slept on). The
//! process is killed, and its directory removed, when the handle is dropped. The API is
//! blocking: a test starts its servers before its runtime matters, and std processes need no
//! runtime to be killed from `Drop`.
//!
//! A server that is not installed is an [`Error::Missing`]; [`require`] turns that into a
//! printed skip, or a panic when the test's `RESUMABLE_REQUIRE_…` variable is set (as
//! `./test.sh` does after installing everything), so CI fails rather than skips.
//!
//! # Layout
//!
//! - [`Redis`]: `redis-server` without persistence; can be stopped and started again on the
//!   same port.
//! - [`Garage`]: a single Garage node with a key and a bucket made by its CLI.
//! - [`Moto`]: `moto_server` with a bucket.
//! - [`Nginx`]: nginx balancing request by request over upstreams given.
//! - [`fleet`]: all of them with `resumable serve` nodes; the `resumable-fleet` binary.
//! - [`sigv4`]: AWS Signature Version 4, so tests can talk to the stores directly.
//! - [`http`]: one blocking HTTP/1.1 exchange over a `TcpStream`, for readiness probes.
//! - [`pki`]: a root CA, an intermediate and server certificates for `localhost`, for TLS.

pub mod fleet;
mod garage;
pub mod http;
mod moto;
mod nginx;
pub mod pki;
mod process;
mod redis;
pub mod sigv4;

pub use garage::Garage;
pub use moto::Moto;
pub use nginx::Nginx;
pub use redis::Redis;

use std::io::Write;

/// Why a server could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server's binary is not installed; `install` says how to get it.
    #[error("{program} is missing: {install}")]
    Missing {
        /// What was looked for (a path or a command name).
        program: String,
        /// What to install, and how.
        install: &'static str,
    },
    /// The binary is there but the server did not come up; `detail` has its log.
    #[error("{server} did not start: {detail}")]
    Start {
        /// Which server.
        server: &'static str,
        /// What went wrong, with the end of the server's output.
        detail: String,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The result of starting a server.
pub type Result<T> = std::result::Result<T, Error>;

/// `Some(server)` if it started. If it is not installed: `None` (printing why, loudly) when
/// the environment variable `require_variable` is unset, a panic when it is set. Any other
/// failure panics: an installed server that does not start is a broken test, not a skip.
#[track_caller]
pub fn require<T>(result: Result<T>, require_variable: &str) -> Option<T> {
    match result {
        Ok(server) => Some(server),
        Err(missing @ Error::Missing { .. }) if std::env::var_os(require_variable).is_none() => {
            // Straight to the process's stderr: libtest captures `eprintln!` of a passing test,
            // and a skip that nobody sees reads as a pass.
            let _ = writeln!(
                std::io::stderr(),
                "\nWARNING: test SKIPPED, nothing was tested: {missing} ({require_variable}=1 \
                 makes this an error; ./test.sh installs it)\n"
            );
            None
        }
        Err(missing @ Error::Missing { .. }) => panic!("{missing} ({require_variable} is set)"),
        Err(error) => panic!("{error}"),
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
