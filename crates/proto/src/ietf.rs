//! The IETF draft "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload): the
//! interop versions served and what differs between them, its fields as RFC 9651 Structured
//! Fields, `Upload-Limit`, RFC 9530 digests, and its problem types.
//!
//! Every version difference lives in [`InteropVersion::traits`], one table, so the server's
//! handlers ask "does this version require X" instead of comparing numbers.

use crate::checksum::{Checksum, ChecksumAlgorithm};
use serde::Serialize;
use sfv::{BareItem, DictSerializer, Dictionary, Integer, Item, KeyRef, ListEntry, Parser};
use thiserror::Error;

/// The request field that makes a request IETF, and names its interop version.
pub const INTEROP_VERSION: &str = "upload-draft-interop-version";
/// Whether the upload is complete (interop 4 and later).
pub const UPLOAD_COMPLETE: &str = "upload-complete";
/// The inverse of [`UPLOAD_COMPLETE`], used by interop 3 (iOS 17).
pub const UPLOAD_INCOMPLETE: &str = "upload-incomplete";
/// The offset, in requests and responses.
pub const UPLOAD_OFFSET: &str = "upload-offset";
/// The whole representation's length (interop 6 and later).
pub const UPLOAD_LENGTH: &str = "upload-length";
/// The server's limits (interop 6 and later).
pub const UPLOAD_LIMIT: &str = "upload-limit";
/// The digest of one request's content (RFC 9530).
pub const CONTENT_DIGEST: &str = "content-digest";
/// The digest of the whole representation (RFC 9530).
pub const REPR_DIGEST: &str = "repr-digest";
/// The media type of an append's content (required from interop 6).
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";
/// The media type of problem details (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Whether a `Content-Type` value is `application/partial-upload`.
pub fn is_partial_upload(content_type: &[u8]) -> bool {
    crate::tus::media_type_is(content_type, PARTIAL_UPLOAD)
}

/// An interop version this server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InteropVersion {
    /// Draft -01: `Upload-Incomplete` (iOS 17).
    V3,
    /// Draft -02: `Upload-Complete` replaces it.
    V4,
    /// Draft -03 (tus-js-client `ietf-draft-03`, iOS 18).
    V5,
    /// Drafts -04 and -05 (tus-js-client `ietf-draft-05`, iOS 18): `application/partial-upload`,
    /// `Upload-Length`, `Upload-Limit` (with `expires`), problem types.
    V6,
    /// Drafts -06 to -08: the `expires` limit is named `max-age`.
    V7,
    /// Drafts -09 and later, the current one: every field a Structured Field whose invalid
    /// values are ignored, `Upload-Limit` always sent, `GET` retrieves the offset.
    V8,
}

/// Every version served, oldest first.
pub const SERVED: [InteropVersion; 6] = [
    InteropVersion::V3,
    InteropVersion::V4,
    InteropVersion::V5,
    InteropVersion::V6,
    InteropVersion::V7,
    InteropVersion::V8,
];

/// How a version says whether a request completes the upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletenessField {
    /// `Upload-Incomplete: ?1` means more is to come.
    Incomplete,
    /// `Upload-Complete: ?1` means this request ends the upload.
    Complete,
}

impl CompletenessField {
    /// The field's name.
    pub fn name(self) -> &'static str {
        match self {
            CompletenessField::Incomplete => UPLOAD_INCOMPLETE,
            CompletenessField::Complete => UPLOAD_COMPLETE,
        }
    }

    /// The field's value for "the upload is complete" = `complete`.
    pub fn encode(self, complete: bool) -> &'static str {
        let value = match self {
            CompletenessField::Incomplete => !complete,
            CompletenessField::Complete => complete,
        };
        encode_boolean(value)
    }

    /// Whether a parsed value of this field says the upload is complete.
    pub fn complete(self, value: bool) -> bool {
        match self {
            CompletenessField::Incomplete => !value,
            CompletenessField::Complete => value,
        }
    }
}

/// What differs between interop versions, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traits {
    /// The field that carries completeness.
    pub completeness: CompletenessField,
    /// An append must be `Content-Type: application/partial-upload`.
    pub partial_upload_required: bool,
    /// The version knows `Upload-Length` and `Upload-Limit`.
    pub length_and_limits: bool,
    /// The name of the remaining-lifetime limit: `expires` in interop 6, `max-age` later.
    pub lifetime_limit: &'static str,
    /// A field whose value does not parse is ignored, as if absent (interop 8); earlier
    /// versions refuse the request.
    pub ignores_invalid_fields: bool,
    /// `GET` on an upload retrieves its offset, like `HEAD` (interop 8).
    pub get_retrieves_offset: bool,
}

impl InteropVersion {
    /// The version a request's `Upload-Draft-Interop-Version` names: `None` for one not served
    /// (or a value that is not an Integer).
    pub fn parse(value: &[u8]) -> Option<Self> {
        let number = parse_integer(value).ok()?;
        SERVED
            .into_iter()
            .find(|version| u64::from(version.number()) == number)
    }

    /// The version's number on the wire.
    pub fn number(self) -> u8 {
        match self {
            InteropVersion::V3 => 3,
            InteropVersion::V4 => 4,
            InteropVersion::V5 => 5,
            InteropVersion::V6 => 6,
            InteropVersion::V7 => 7,
            InteropVersion::V8 => 8,
        }
    }

    /// What this version requires.
    pub fn traits(self) -> Traits {
        let (completeness, length_and_limits, lifetime_limit) = match self {
            InteropVersion::V3 => (CompletenessField::Incomplete, false, "max-age"),
            InteropVersion::V4 | InteropVersion::V5 => {
                (CompletenessField::Complete, false, "max-age")
            }
            InteropVersion::V6 => (CompletenessField::Complete, true, "expires"),
            InteropVersion::V7 | InteropVersion::V8 => {
                (CompletenessField::Complete, true, "max-age")
            }
        };
        Traits {
            completeness,
            partial_upload_required: self >= InteropVersion::V6,
            length_and_limits,
            lifetime_limit,
            ignores_invalid_fields: self >= InteropVersion::V8,
            get_retrieves_offset: self >= InteropVersion::V8,
        }
    }
}

/// The served versions as people read them: `3, 4, 5, 6, 7, 8`.
pub fn served_versions() -> String {
    let numbers: Vec<String> = SERVED
        .iter()
        .map(|version| version.number().to_string())
        .collect();
    numbers.join(", ")
}

/// Why a field's value is not what the draft defines.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FieldError {
    /// Not a Structured Field of the right type.
    #[error("not a valid structured field value: {0}")]
    Syntax(String),
    /// The right syntax, the wrong type.
    #[error("expected {0}")]
    Type(&'static str),
}

fn item(value: &[u8]) -> Result<Item, FieldError> {
    Parser::new(value)
        .parse()
        .map_err(|error: sfv::Error| FieldError::Syntax(error.to_string()))
}

/// A Boolean item (`?0`, `?1`); parameters are allowed and ignored.
pub fn parse_boolean(value: &[u8]) -> Result<bool, FieldError> {
    item(value)?
        .bare_item
        .as_boolean()
        .ok_or(FieldError::Type("a boolean (?0 or ?1)"))
}

/// A non-negative Integer item (`Upload-Offset`, `Upload-Length`).
pub fn parse_integer(value: &[u8]) -> Result<u64, FieldError> {
    let integer = item(value)?
        .bare_item
        .as_integer()
        .ok_or(FieldError::Type("an integer"))?;
    u64::try_from(i64::from(integer)).map_err(|_| FieldError::Type("a non-negative integer"))
}

/// `?1` or `?0`.
pub fn encode_boolean(value: bool) -> &'static str {
    if value { "?1" } else { "?0" }
}

/// An Integer item; `None` above what a Structured Field Integer holds (15 digits, ~888 TiB).
pub fn encode_integer(value: u64) -> Option<String> {
    let integer = Integer::try_from(value).ok()?;
    Some(sfv::ItemSerializer::new().bare_item(integer).finish())
}

/// `Upload-Limit`: what the server allows. Absent members are not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadLimit {
    /// The largest representation, in bytes.
    pub max_size: Option<u64>,
    /// The smallest representation offered resumption, in bytes.
    pub min_size: Option<u64>,
    /// The largest content of one request, in bytes.
    pub max_append_size: Option<u64>,
    /// The smallest content of one request (but the last), in bytes.
    pub min_append_size: Option<u64>,
    /// The upload's remaining lifetime, in seconds.
    pub max_age: Option<u64>,
}

impl UploadLimit {
    /// The members in the order they are written, keyed as `version` names them.
    fn members(&self, lifetime: &'static str) -> [(&'static str, Option<u64>); 5] {
        [
            ("max-size", self.max_size),
            ("min-size", self.min_size),
            ("max-append-size", self.max_append_size),
            ("min-append-size", self.min_append_size),
            (lifetime, self.max_age),
        ]
    }

    /// The field value for `version`. No limits at all is `min-size=0`, never an empty value
    /// (interop 8 requires it; earlier versions read it the same way).
    pub fn encode(&self, version: InteropVersion) -> String {
        let mut serializer = DictSerializer::new();
        let mut any = false;
        for (name, value) in self.members(version.traits().lifetime_limit) {
            let Some(integer) = value.and_then(|value| Integer::try_from(value).ok()) else {
                continue;
            };
            let key = KeyRef::from_str(name).expect("member names are valid keys");
            serializer.bare_item(key, integer);
            any = true;
        }
        if !any {
            let key = KeyRef::from_str("min-size").expect("a valid key");
            serializer.bare_item(key, Integer::ZERO);
        }
        serializer.finish().unwrap_or_else(|| "min-size=0".into())
    }

    /// Parses a field value: unknown members are ignored; a known member that is not a
    /// non-negative Integer makes the whole field invalid, as the draft requires. Both
    /// `max-age` and interop 6's `expires` are read as the lifetime.
    pub fn parse(value: &[u8]) -> Result<Self, FieldError> {
        let dictionary: Dictionary = Parser::new(value)
            .parse()
            .map_err(|error: sfv::Error| FieldError::Syntax(error.to_string()))?;
        let mut limit = UploadLimit::default();
        for (key, entry) in &dictionary {
            let slot = match key.as_str() {
                "max-size" => &mut limit.max_size,
                "min-size" => &mut limit.min_size,
                "max-append-size" => &mut limit.max_append_size,
                "min-append-size" => &mut limit.min_append_size,
                "max-age" | "expires" => &mut limit.max_age,
                _ => continue,
            };
            let ListEntry::Item(item) = entry else {
                return Err(FieldError::Type("an integer limit"));
            };
            let integer = item
                .bare_item
                .as_integer()
                .ok_or(FieldError::Type("an integer limit"))?;
            *slot = Some(
                u64::try_from(i64::from(integer))
                    .map_err(|_| FieldError::Type("a non-negative limit"))?,
            );
        }
        Ok(limit)
    }
}

/// The RFC 9530 algorithm names served, strongest first, and the algorithm each is.
const DIGEST_ALGORITHMS: [(&str, ChecksumAlgorithm); 2] = [
    ("sha-512", ChecksumAlgorithm::Sha512),
    ("sha-256", ChecksumAlgorithm::Sha256),
];

/// The digest to verify from a `Content-Digest` or `Repr-Digest` value: the strongest
/// algorithm served among those given (`None` when none is; RFC 9530 lets a recipient ignore
/// algorithms it does not support). A served algorithm whose value is not a Byte Sequence, or
/// a value that is not a Dictionary, is an error.
pub fn parse_digest(value: &[u8]) -> Result<Option<Checksum>, FieldError> {
    let dictionary: Dictionary = Parser::new(value)
        .parse()
        .map_err(|error: sfv::Error| FieldError::Syntax(error.to_string()))?;
    for (name, algorithm) in DIGEST_ALGORITHMS {
        let Some(entry) = dictionary.get(name) else {
            continue;
        };
        let digest = match entry {
            ListEntry::Item(Item {
                bare_item: BareItem::ByteSequence(bytes),
                ..
            }) => bytes.clone(),
            _ => return Err(FieldError::Type("a byte sequence digest")),
        };
        return Ok(Some(Checksum { algorithm, digest }));
    }
    Ok(None)
}

/// A `Content-Digest` / `Repr-Digest` value carrying `checksum`; `None` for an algorithm
/// RFC 9530 does not name here (only SHA-256 and SHA-512 are).
pub fn encode_digest(checksum: &Checksum) -> Option<String> {
    let (name, _) = DIGEST_ALGORITHMS
        .iter()
        .find(|(_, algorithm)| *algorithm == checksum.algorithm)?;
    let mut serializer = DictSerializer::new();
    let key = KeyRef::from_str(name).expect("algorithm names are valid keys");
    serializer.bare_item(key, &checksum.digest[..]);
    serializer.finish()
}

/// The problem types the draft registers, and the ones this server adds for its own refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// The append's `Upload-Offset` is not the upload's offset.
    MismatchingOffset,
    /// Lengths in the request, or across requests, disagree.
    InconsistentLength,
    /// The upload is complete and takes no more content (registered by drafts -04 and -05).
    CompletedUpload,
    /// Anything else: the status says it all (RFC 9457 `about:blank`).
    Blank,
}

impl ProblemType {
    /// The type URI.
    pub fn uri(self) -> &'static str {
        match self {
            ProblemType::MismatchingOffset => {
                "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
            }
            ProblemType::InconsistentLength => {
                "https://iana.org/assignments/http-problem-types#inconsistent-upload-length"
            }
            ProblemType::CompletedUpload => {
                "https://iana.org/assignments/http-problem-types#completed-upload"
            }
            ProblemType::Blank => "about:blank",
        }
    }
}

/// An `application/problem+json` body (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The problem type's URI.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A short summary of the problem type.
    pub title: String,
    /// What went wrong in this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The upload's offset (mismatching offset).
    #[serde(rename = "expected-offset", skip_serializing_if = "Option::is_none")]
    pub expected_offset: Option<u64>,
    /// The request's offset (mismatching offset).
    #[serde(rename = "provided-offset", skip_serializing_if = "Option::is_none")]
    pub provided_offset: Option<u64>,
}

impl Problem {
    /// A problem of `kind` with the title the draft gives it.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        let title = match kind {
            ProblemType::MismatchingOffset => {
                "offset from request does not match offset of resource"
            }
            ProblemType::InconsistentLength => "inconsistent length values for upload",
            ProblemType::CompletedUpload => "upload is already completed",
            ProblemType::Blank => "the request was refused",
        };
        Problem {
            kind: kind.uri(),
            title: title.into(),
            detail: Some(detail.into()),
            expected_offset: None,
            provided_offset: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn versions_served_parse_and_others_do_not() {
        for version in SERVED {
            let number = version.number().to_string();
            assert_eq!(InteropVersion::parse(number.as_bytes()), Some(version));
        }
        for other in ["0", "2", "9", "-8", "8.0", "\"8\"", "", "8, 8", "abc"] {
            assert_eq!(InteropVersion::parse(other.as_bytes()), None, "{other:?}");
        }
        // Parameters on an Item do not change it.
        assert_eq!(InteropVersion::parse(b"8;x=1"), Some(InteropVersion::V8));
        assert_eq!(served_versions(), "3, 4, 5, 6, 7, 8");
    }

    #[test]
    fn traits_follow_the_drafts_history() {
        let v3 = InteropVersion::V3.traits();
        assert_eq!(v3.completeness, CompletenessField::Incomplete);
        assert!(!v3.partial_upload_required && !v3.length_and_limits);
        let v5 = InteropVersion::V5.traits();
        assert_eq!(v5.completeness, CompletenessField::Complete);
        assert!(!v5.partial_upload_required);
        let v6 = InteropVersion::V6.traits();
        assert!(v6.partial_upload_required && v6.length_and_limits);
        assert_eq!(v6.lifetime_limit, "expires");
        assert!(!v6.ignores_invalid_fields && !v6.get_retrieves_offset);
        assert_eq!(InteropVersion::V7.traits().lifetime_limit, "max-age");
        let v8 = InteropVersion::V8.traits();
        assert!(v8.ignores_invalid_fields && v8.get_retrieves_offset);
    }

    #[test]
    fn completeness_is_inverted_for_upload_incomplete() {
        let old = CompletenessField::Incomplete;
        assert_eq!(old.encode(true), "?0");
        assert!(old.complete(false));
        let new = CompletenessField::Complete;
        assert_eq!(new.encode(true), "?1");
        assert!(!new.complete(false));
    }

    #[test]
    fn booleans_and_integers_are_structured_fields() {
        assert_eq!(parse_boolean(b"?1"), Ok(true));
        assert_eq!(parse_boolean(b"?0"), Ok(false));
        assert_eq!(parse_boolean(b" ?1;a=2"), Ok(true));
        for bad in ["1", "true", "?2", "?1, ?0", ""] {
            assert!(parse_boolean(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(parse_integer(b"0"), Ok(0));
        assert_eq!(parse_integer(b"999999999999999"), Ok(999_999_999_999_999));
        for bad in ["-1", "1.5", "+1", "1000000000000000", "0x10", "1 2", "?1"] {
            assert!(parse_integer(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(encode_integer(42).as_deref(), Some("42"));
        assert_eq!(encode_integer(1_000_000_000_000_000), None);
    }

    #[test]
    fn limits_encode_per_version_and_never_empty() {
        let limit = UploadLimit {
            max_size: Some(1024),
            max_age: Some(3600),
            ..UploadLimit::default()
        };
        assert_eq!(
            limit.encode(InteropVersion::V8),
            "max-size=1024, max-age=3600"
        );
        assert_eq!(
            limit.encode(InteropVersion::V6),
            "max-size=1024, expires=3600"
        );
        assert_eq!(
            UploadLimit::default().encode(InteropVersion::V8),
            "min-size=0"
        );
    }

    #[test]
    fn limits_parse_ignoring_unknown_members_but_not_wrong_types() {
        let parsed = UploadLimit::parse(b"max-size=10, future=?1, expires=5").unwrap();
        assert_eq!(parsed.max_size, Some(10));
        assert_eq!(parsed.max_age, Some(5));
        assert!(UploadLimit::parse(b"max-size=\"10\"").is_err());
        assert!(UploadLimit::parse(b"max-size=(1 2)").is_err());
        assert!(UploadLimit::parse(b"max-size=-1").is_err());
    }

    #[test]
    fn digests_pick_the_strongest_served_algorithm() {
        let value = b"md5=:AAAA:, sha-256=:AQID:, sha-512=:BAUG:";
        let checksum = parse_digest(value).unwrap().unwrap();
        assert_eq!(checksum.algorithm, ChecksumAlgorithm::Sha512);
        assert_eq!(checksum.digest, vec![4, 5, 6]);
        assert_eq!(parse_digest(b"unixsum=:AAAA:"), Ok(None));
        assert!(parse_digest(b"sha-256=abc").is_err());
        assert!(parse_digest(b"sha-256").is_err());
        let sha1 = Checksum {
            algorithm: ChecksumAlgorithm::Sha1,
            digest: vec![1],
        };
        assert_eq!(encode_digest(&sha1), None);
    }

    #[test]
    fn problems_serialise_with_the_drafts_member_names() {
        let mut problem = Problem::new(ProblemType::MismatchingOffset, "offset 5 given, 3 stored");
        problem.expected_offset = Some(3);
        problem.provided_offset = Some(5);
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(
            json["type"],
            "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
        );
        assert_eq!(json["expected-offset"], 3);
        assert_eq!(json["provided-offset"], 5);
        assert_eq!(
            json["title"],
            "offset from request does not match offset of resource"
        );
        let blank = serde_json::to_value(Problem::new(ProblemType::Blank, "x")).unwrap();
        assert!(blank.get("expected-offset").is_none(), "{blank}");
    }

    proptest! {
        #[test]
        fn integers_round_trip(value in 0u64..=999_999_999_999_999) {
            let encoded = encode_integer(value).unwrap();
            prop_assert_eq!(parse_integer(encoded.as_bytes()), Ok(value));
        }

        #[test]
        fn booleans_round_trip(value: bool) {
            prop_assert_eq!(parse_boolean(encode_boolean(value).as_bytes()), Ok(value));
        }

        #[test]
        fn limits_round_trip(
            max_size in proptest::option::of(0u64..=999_999_999_999_999),
            min_size in proptest::option::of(0u64..1_000_000),
            max_append_size in proptest::option::of(0u64..=999_999_999_999_999),
            max_age in proptest::option::of(0u64..1_000_000_000),
        ) {
            let limit = UploadLimit { max_size, min_size, max_append_size, min_append_size: None, max_age };
            for version in [InteropVersion::V6, InteropVersion::V8] {
                let mut parsed = UploadLimit::parse(limit.encode(version).as_bytes()).unwrap();
                if limit == UploadLimit::default() {
                    prop_assert_eq!(parsed.min_size.take(), Some(0));
                }
                prop_assert_eq!(parsed, limit);
            }
        }

        #[test]
        fn digests_round_trip(digest in proptest::collection::vec(any::<u8>(), 0..64), strong: bool) {
            let algorithm = if strong { ChecksumAlgorithm::Sha512 } else { ChecksumAlgorithm::Sha256 };
            let checksum = Checksum { algorithm, digest };
            let encoded = encode_digest(&checksum).unwrap();
            prop_assert_eq!(parse_digest(encoded.as_bytes()), Ok(Some(checksum)));
        }

        #[test]
        fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_boolean(&bytes);
            let _ = parse_integer(&bytes);
            let _ = UploadLimit::parse(&bytes);
            let _ = parse_digest(&bytes);
            let _ = InteropVersion::parse(&bytes);
        }
    }
}
