//! The seed's simple protocol: `GET /status` and `POST /upload` with `X-File-Id`,
//! `X-Start-Byte` and `X-File-Size`.

use crate::number::{NumberError, parse_u64};
use thiserror::Error;

/// `X-File-Id`: the client's name for an upload, scoped to its principal.
pub const FILE_ID: &str = "x-file-id";
/// `X-Start-Byte`: where the body of a `POST /upload` starts.
pub const START_BYTE: &str = "x-start-byte";
/// `X-File-Size`: the size of the whole file, when the client knows it.
pub const FILE_SIZE: &str = "x-file-size";

/// The longest file id accepted, in bytes.
pub const MAX_FILE_ID_LEN: usize = 1024;

/// Why a file id is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FileIdError {
    /// The id is empty or only whitespace.
    #[error("X-File-Id is empty")]
    Empty,
    /// The id is longer than [`MAX_FILE_ID_LEN`] bytes.
    #[error("X-File-Id is longer than {MAX_FILE_ID_LEN} bytes")]
    TooLong,
    /// The id holds a control character.
    #[error("X-File-Id holds a control character")]
    ControlCharacter,
}

/// Parses an `X-File-Id` value into an opaque string.
///
/// The id is never interpreted (it is hashed before it reaches storage). Header bytes that are
/// not UTF-8 are read as Latin-1, which is what a browser sends for such names, so every byte
/// sequence maps to one stable string.
pub fn parse_file_id(value: &[u8]) -> Result<String, FileIdError> {
    if value.len() > MAX_FILE_ID_LEN {
        return Err(FileIdError::TooLong);
    }
    if value
        .iter()
        .any(|&byte| byte < 0x20 && byte != b'\t' || byte == 0x7f)
    {
        return Err(FileIdError::ControlCharacter);
    }
    if value.trim_ascii().is_empty() {
        return Err(FileIdError::Empty);
    }
    Ok(match std::str::from_utf8(value) {
        Ok(text) => text.to_owned(),
        Err(_) => value.iter().map(|&byte| char::from(byte)).collect(),
    })
}

/// Parses `X-Start-Byte` or `X-File-Size`: strict decimal.
pub fn parse_byte_count(value: &[u8]) -> Result<u64, NumberError> {
    parse_u64(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn file_ids_up_to_the_limit_are_kept_and_longer_ones_refused() {
        let longest = "a".repeat(MAX_FILE_ID_LEN);
        assert_eq!(parse_file_id(longest.as_bytes()), Ok(longest.clone()));
        let longer = format!("{longest}a");
        assert_eq!(parse_file_id(longer.as_bytes()), Err(FileIdError::TooLong));
    }

    #[test]
    fn byte_counts_are_the_decimal_number() {
        assert_eq!(parse_byte_count(b"0"), Ok(0));
        assert_eq!(parse_byte_count(b"1048576"), Ok(1_048_576));
        assert!(parse_byte_count(b"12a").is_err());
        assert!(parse_byte_count(b"").is_err());
    }

    #[test]
    fn file_ids_are_opaque_text() {
        assert_eq!(
            parse_file_id(b"my file.txt-12-1700000000").unwrap(),
            "my file.txt-12-1700000000"
        );
        assert_eq!(
            parse_file_id(b"../../etc/passwd").unwrap(),
            "../../etc/passwd"
        );
        assert_eq!(parse_file_id("фото.jpg".as_bytes()).unwrap(), "фото.jpg");
        assert_eq!(parse_file_id(b"caf\xe9").unwrap(), "café");
    }

    #[test]
    fn file_ids_reject_empty_long_and_control() {
        assert_eq!(parse_file_id(b""), Err(FileIdError::Empty));
        assert_eq!(parse_file_id(b"   "), Err(FileIdError::Empty));
        assert_eq!(parse_file_id(b"a\0b"), Err(FileIdError::ControlCharacter));
        assert_eq!(
            parse_file_id(&[b'a'; MAX_FILE_ID_LEN + 1]),
            Err(FileIdError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn distinct_utf8_ids_stay_distinct(a in "[^\\x00-\\x1f\\x7f]{1,40}", b in "[^\\x00-\\x1f\\x7f]{1,40}") {
            prop_assume!(!a.trim().is_empty() && !b.trim().is_empty());
            let parsed_a = parse_file_id(a.as_bytes()).unwrap();
            let parsed_b = parse_file_id(b.as_bytes()).unwrap();
            prop_assert_eq!(parsed_a == parsed_b, a == b);
        }

        #[test]
        fn never_panics(bytes: Vec<u8>) {
            let _ = parse_file_id(&bytes);
        }
    }
}
