//! `Upload-Expires`: an HTTP date (RFC 9110 IMF-fixdate).

use std::time::SystemTime;

/// Encodes a time as an HTTP date, e.g. `Wed, 25 Jun 2014 16:00:00 GMT`.
pub fn encode(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

/// Parses an HTTP date.
pub fn parse(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn round_trips_whole_seconds() {
        let time = UNIX_EPOCH + Duration::from_secs(1_403_712_000);
        assert_eq!(encode(time), "Wed, 25 Jun 2014 16:00:00 GMT");
        assert_eq!(parse(&encode(time)), Some(time));
    }
}
