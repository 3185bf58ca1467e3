//! tus 1.0.0 (<https://tus.io/protocols/resumable-upload>) header names and values.

use crate::number::{NumberError, parse_u64};
use thiserror::Error;

/// The only protocol version served.
pub const VERSION: &str = "1.0.0";
/// The content type every PATCH body must carry.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// `Tus-Resumable`: the protocol version of a request or response.
pub const TUS_RESUMABLE: &str = "tus-resumable";
/// `Tus-Version`: the versions a server supports.
pub const TUS_VERSION: &str = "tus-version";
/// `Tus-Extension`: the extensions a server supports.
pub const TUS_EXTENSION: &str = "tus-extension";
/// `Tus-Max-Size`: the largest upload a server accepts.
pub const TUS_MAX_SIZE: &str = "tus-max-size";
/// `Upload-Offset`: bytes stored so far / where a PATCH starts.
pub const UPLOAD_OFFSET: &str = "upload-offset";
/// `Upload-Length`: the size of the whole upload.
pub const UPLOAD_LENGTH: &str = "upload-length";
/// `Upload-Defer-Length: 1`: the length will be given later.
pub const UPLOAD_DEFER_LENGTH: &str = "upload-defer-length";
/// `Upload-Metadata`: the upload's key/value pairs.
pub const UPLOAD_METADATA: &str = "upload-metadata";
/// `Upload-Expires`: when an unfinished upload will be removed.
pub const UPLOAD_EXPIRES: &str = "upload-expires";
/// `Upload-Checksum`: the expected digest of a PATCH body.
pub const UPLOAD_CHECKSUM: &str = "upload-checksum";
/// `Upload-Concat`: partial or final upload (concatenation).
pub const UPLOAD_CONCAT: &str = "upload-concat";
/// `Tus-Checksum-Algorithm`: the checksum algorithms a server supports.
pub const TUS_CHECKSUM_ALGORITHM: &str = "tus-checksum-algorithm";
/// `X-HTTP-Method-Override`: the method a client behind a restrictive proxy means.
pub const METHOD_OVERRIDE: &str = "x-http-method-override";

/// Why a tus header value is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TusHeaderError {
    /// `Tus-Resumable` names a version this server does not speak.
    #[error("unsupported Tus-Resumable version {0:?}; this server speaks {VERSION}")]
    UnsupportedVersion(String),
    /// `Upload-Defer-Length` is present but not `1`.
    #[error("Upload-Defer-Length must be 1")]
    InvalidDeferLength,
    /// A number is malformed.
    #[error("{header}: {error}")]
    Number {
        /// The header holding the number.
        header: &'static str,
        /// What is wrong with it.
        error: NumberError,
    },
}

/// Checks a `Tus-Resumable` value.
pub fn check_version(value: &[u8]) -> Result<(), TusHeaderError> {
    if value == VERSION.as_bytes() {
        Ok(())
    } else {
        Err(TusHeaderError::UnsupportedVersion(
            String::from_utf8_lossy(value).into(),
        ))
    }
}

/// Parses a numeric header (`Upload-Offset`, `Upload-Length`), naming it in the error.
pub fn parse_number(header: &'static str, value: &[u8]) -> Result<u64, TusHeaderError> {
    parse_u64(value).map_err(|error| TusHeaderError::Number { header, error })
}

/// Checks `Upload-Defer-Length`, whose only valid value is `1`.
pub fn check_defer_length(value: &[u8]) -> Result<(), TusHeaderError> {
    if value == b"1" {
        Ok(())
    } else {
        Err(TusHeaderError::InvalidDeferLength)
    }
}

/// Whether a `Content-Type` value is `application/offset+octet-stream` (parameters ignored).
pub fn is_offset_octet_stream(content_type: &[u8]) -> bool {
    media_type_is(content_type, OFFSET_OCTET_STREAM)
}

/// Whether a `Content-Type` value names `media_type` (parameters ignored, any case).
pub fn media_type_is(content_type: &[u8], media_type: &str) -> bool {
    let essence = content_type
        .split(|&byte| byte == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    essence.eq_ignore_ascii_case(media_type.as_bytes())
}

/// Encodes the `Tus-Extension` value from the supported extensions.
pub fn encode_extensions(extensions: &[&str]) -> String {
    extensions.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_comma_separated() {
        assert_eq!(
            encode_extensions(&["creation", "termination"]),
            "creation,termination"
        );
        assert_eq!(encode_extensions(&["creation"]), "creation");
    }

    #[test]
    fn only_offset_octet_stream_bodies_are_chunks() {
        assert!(is_offset_octet_stream(b"application/offset+octet-stream"));
        assert!(is_offset_octet_stream(
            b"Application/Offset+Octet-Stream; x=1"
        ));
        assert!(!is_offset_octet_stream(b"application/octet-stream"));
        assert!(!is_offset_octet_stream(b""));
    }

    #[test]
    fn only_version_1_0_0_is_accepted() {
        assert!(check_version(b"1.0.0").is_ok());
        assert!(check_version(b"0.2.2").is_err());
        assert!(check_version(b"").is_err());
    }

    #[test]
    fn defer_length_must_be_one() {
        assert!(check_defer_length(b"1").is_ok());
        assert!(check_defer_length(b"0").is_err());
        assert!(check_defer_length(b"true").is_err());
    }

    #[test]
    fn content_type_ignores_case_and_parameters() {
        assert!(is_offset_octet_stream(b"application/offset+octet-stream"));
        assert!(is_offset_octet_stream(
            b"Application/Offset+Octet-Stream; charset=x"
        ));
        assert!(!is_offset_octet_stream(b"application/octet-stream"));
        assert!(!is_offset_octet_stream(b""));
    }

    #[test]
    fn numbers_name_their_header() {
        assert_eq!(
            parse_number(UPLOAD_OFFSET, b"-1"),
            Err(TusHeaderError::Number {
                header: UPLOAD_OFFSET,
                error: NumberError::NotDecimal
            })
        );
    }
}
