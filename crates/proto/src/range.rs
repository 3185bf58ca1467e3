//! Single byte ranges for downloads (RFC 9110 §14): `Range` parsing and `Content-Range`, both
//! ways.

use std::ops::Range;

/// What a `Range` header asks of a representation of a known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// Serve everything: no range, a malformed one, or several (which a server may ignore).
    Full,
    /// Serve this part (`206`).
    Partial(Range<u64>),
    /// Nothing of the representation matches (`416`).
    Unsatisfiable,
}

/// Interprets a `Range` value against a representation of `length` bytes.
pub fn parse(value: &[u8], length: u64) -> RangeRequest {
    let Some(spec) = value.strip_prefix(b"bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(&b',') {
        return RangeRequest::Full;
    }
    let Some(dash) = spec.iter().position(|&byte| byte == b'-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (spec[..dash].trim_ascii(), spec[dash + 1..].trim_ascii());
    let number = |text: &[u8]| crate::number::parse_u64(text).ok();
    match (first.is_empty(), last.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(suffix) if length > 0 => {
                RangeRequest::Partial(length.saturating_sub(suffix)..length)
            }
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        // `bytes=A-` and `bytes=A-B`.
        (false, _) => {
            let Some(start) = number(first) else {
                return RangeRequest::Full;
            };
            let end = if last.is_empty() {
                Some(u64::MAX)
            } else {
                number(last)
            };
            match end {
                None => RangeRequest::Full,
                Some(end) if end < start => RangeRequest::Full,
                Some(_) if start >= length => RangeRequest::Unsatisfiable,
                Some(end) => RangeRequest::Partial(start..end.saturating_add(1).min(length)),
            }
        }
        (true, true) => RangeRequest::Full,
    }
}

/// `Content-Range` of a partial response.
pub fn content_range(range: &Range<u64>, length: u64) -> String {
    format!(
        "bytes {}-{}/{length}",
        range.start,
        range.end.saturating_sub(1)
    )
}

/// `Content-Range` of a `416` response.
pub fn unsatisfied_range(length: u64) -> String {
    format!("bytes */{length}")
}

/// Parses the `Content-Range` of a partial response, `bytes FIRST-LAST/LENGTH`: the range served
/// and the whole length. `None` for anything else (including an unknown length `*`), or bounds
/// that do not fit the length.
pub fn parse_content_range(value: &[u8]) -> Option<(Range<u64>, u64)> {
    let spec = value.trim_ascii().strip_prefix(b"bytes ")?;
    let slash = spec.iter().position(|&byte| byte == b'/')?;
    let (bounds, length) = (&spec[..slash], &spec[slash + 1..]);
    let dash = bounds.iter().position(|&byte| byte == b'-')?;
    let number = |text: &[u8]| crate::number::parse_u64(text).ok();
    let first = number(&bounds[..dash])?;
    let last = number(&bounds[dash + 1..])?;
    let length = number(length)?;
    (first <= last && last < length).then_some((first..last + 1, length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_suffix_of_an_empty_upload_is_unsatisfiable() {
        assert_eq!(parse(b"bytes=-5", 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse(b"bytes=-5", 1), RangeRequest::Partial(0..1));
    }

    #[test]
    fn reads_the_three_forms() {
        assert_eq!(parse(b"bytes=0-99", 1000), RangeRequest::Partial(0..100));
        assert_eq!(parse(b"bytes=900-", 1000), RangeRequest::Partial(900..1000));
        assert_eq!(parse(b"bytes=-100", 1000), RangeRequest::Partial(900..1000));
        assert_eq!(parse(b"bytes=-5000", 1000), RangeRequest::Partial(0..1000));
        assert_eq!(
            parse(b"bytes=990-5000", 1000),
            RangeRequest::Partial(990..1000)
        );
    }

    #[test]
    fn out_of_bounds_is_unsatisfiable() {
        assert_eq!(parse(b"bytes=1000-", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(parse(b"bytes=-0", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(parse(b"bytes=0-", 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn odd_ranges_are_ignored() {
        for odd in [
            &b"items=0-1"[..],
            b"bytes=5-1",
            b"bytes=0-1,5-6",
            b"bytes=a-b",
            b"bytes=-",
            b"bytes=1",
        ] {
            assert_eq!(
                parse(odd, 1000),
                RangeRequest::Full,
                "{:?}",
                String::from_utf8_lossy(odd)
            );
        }
    }

    #[test]
    fn content_range_names_inclusive_bounds() {
        assert_eq!(content_range(&(0..100), 1000), "bytes 0-99/1000");
        assert_eq!(unsatisfied_range(1000), "bytes */1000");
    }

    #[test]
    fn parses_content_ranges() {
        assert_eq!(
            parse_content_range(b"bytes 0-99/1000"),
            Some((0..100, 1000))
        );
        assert_eq!(
            parse_content_range(b"bytes 999-999/1000"),
            Some((999..1000, 1000))
        );
        for bad in [
            &b"bytes */1000"[..],
            b"bytes 0-99/*",
            b"bytes 5-1/1000",
            b"bytes 0-1000/1000",
            b"items 0-1/2",
            b"bytes 0-1",
        ] {
            assert_eq!(
                parse_content_range(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        #[test]
        fn content_ranges_round_trip(start in 0u64..1000, size in 1u64..1000, extra in 0u64..1000) {
            let range = start..start + size;
            let length = range.end + extra;
            let value = content_range(&range, length);
            prop_assert_eq!(parse_content_range(value.as_bytes()), Some((range, length)));
        }

        #[test]
        fn partial_ranges_stay_inside(value: Vec<u8>, length in 0u64..10_000) {
            if let RangeRequest::Partial(range) = parse(&value, length) {
                prop_assert!(range.start < range.end && range.end <= length);
            }
        }

        #[test]
        fn explicit_ranges_round_trip(start in 0u64..1000, size in 1u64..1000) {
            let value = format!("bytes={}-{}", start, start + size - 1);
            let range = start..start + size;
            prop_assert_eq!(parse(value.as_bytes(), 5000), RangeRequest::Partial(range.clone()));
            prop_assert_eq!(content_range(&range, 5000), format!("bytes {}-{}/5000", start, start + size - 1));
        }
    }
}
