//! Strict decimal integers.
//!
//! Offsets and lengths decide where bytes go, so only plain ASCII digits are accepted: no sign,
//! no whitespace, no exponent, no hex, no overflow. `1e3`, `0x10`, `-1`, `+1` and `` are errors.

use thiserror::Error;

/// Why a header value is not a strict decimal `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NumberError {
    /// The value is empty.
    #[error("empty number")]
    Empty,
    /// The value holds something other than ASCII digits.
    #[error("not a decimal number")]
    NotDecimal,
    /// The value does not fit in 64 bits.
    #[error("number too large")]
    Overflow,
}

/// Parses a strict decimal `u64` (ASCII digits only).
pub fn parse_u64(value: &[u8]) -> Result<u64, NumberError> {
    if value.is_empty() {
        return Err(NumberError::Empty);
    }
    value.iter().try_fold(0u64, |total, &byte| {
        if !byte.is_ascii_digit() {
            return Err(NumberError::NotDecimal);
        }
        total
            .checked_mul(10)
            .and_then(|total| total.checked_add(u64::from(byte - b'0')))
            .ok_or(NumberError::Overflow)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_everything_but_digits() {
        for bad in ["1e3", "0x10", "-1", "+1", " 1", "1 ", "1.0", "١"] {
            assert_eq!(
                parse_u64(bad.as_bytes()),
                Err(NumberError::NotDecimal),
                "{bad}"
            );
        }
        assert_eq!(parse_u64(b""), Err(NumberError::Empty));
    }

    #[test]
    fn rejects_overflow() {
        assert_eq!(parse_u64(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_u64(b"18446744073709551616"),
            Err(NumberError::Overflow)
        );
        assert_eq!(
            parse_u64(b"99999999999999999999999"),
            Err(NumberError::Overflow)
        );
    }

    proptest! {
        #[test]
        fn round_trips(n: u64) {
            prop_assert_eq!(parse_u64(n.to_string().as_bytes()), Ok(n));
        }

        #[test]
        fn never_panics(bytes: Vec<u8>) {
            let _ = parse_u64(&bytes);
        }
    }
}
