//! The benchmark client of `bench/run.sh`: one client for every tus server compared, so the
//! figures differ only by server.
//!
//! It speaks plain tus 1.0.0 (creation with `Upload-Length`, `PATCH`, `HEAD`) over one HTTP/1.1
//! keep-alive connection per upload, streams bodies from one reused random buffer (never
//! allocating per request), and measures wall time. Each subcommand of the `resumable-bench`
//! binary prints its result as one JSON line for the orchestrator (`bench/bench.py`).
//!
//! For the S3 scenarios it also sends the same bytes straight to the store (SigV4-signed
//! multipart uploads, parts in parallel): the limit our server in front of that store is
//! measured against.
//!
//! # Layout
//!
//! - [`body`]: request bodies cut from the shared buffer, including one that stalls mid-body.
//! - [`tus`]: an endpoint, a connection, and its `POST` / `PATCH` / `HEAD`.
//! - [`scenario`]: many uploads at once, connections held open mid-body, HEADs per second.
//! - [`s3`]: the direct baseline: objects sent straight to an S3 endpoint, parts in parallel.
//! - [`discard`]: a loopback listener that throws bodies away (the ceiling for any server).
//! - [`ByteSize`]: sizes on the command line (`1GiB`, `256KiB`).

pub mod body;
pub mod discard;
pub mod s3;
pub mod scenario;
pub mod tus;

use std::str::FromStr;

/// A byte count written as a number with an optional binary unit: `1048576`, `256KiB`, `1GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size like 1048576, 256KiB or 1GiB"))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => return Err(format!("unknown unit {other:?} (B, KiB, MiB, GiB)")),
        };
        number
            .checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!("1048576".parse(), Ok(ByteSize(1 << 20)));
        assert_eq!("256KiB".parse(), Ok(ByteSize(256 << 10)));
        assert_eq!("1GiB".parse(), Ok(ByteSize(1 << 30)));
        assert!("1GB".parse::<ByteSize>().is_err());
        assert!("GiB".parse::<ByteSize>().is_err());
    }
}
