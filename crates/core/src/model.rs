//! The upload model: ids, offsets, lengths, owners and the persisted description of an upload.

use resumable_proto::Metadata;
use resumable_proto::checksum::Checksum;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

/// An upload's id: a random (version 4) UUID, 122 random bits, as 32 lowercase hex digits.
///
/// Ids are never built from client input, and parsing accepts only this exact shape, so an id
/// can be used in a file name or object key without ever becoming a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id.
    pub fn random() -> Self {
        UploadId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The text is not an upload id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an upload id")]
pub struct InvalidUploadId;

impl FromStr for UploadId {
    type Err = InvalidUploadId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid = text.len() == 32
            && text
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
        if valid {
            Ok(UploadId(text.to_owned()))
        } else {
            Err(InvalidUploadId)
        }
    }
}

impl TryFrom<String> for UploadId {
    type Error = InvalidUploadId;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<UploadId> for String {
    fn from(id: UploadId) -> Self {
        id.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// A byte position in an upload: how many bytes are durably stored, or where a request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl fmt::Display for Offset {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// The size of a whole upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Length {
    /// Declared by the client.
    Known(u64),
    /// Not declared yet (tus `Upload-Defer-Length`, a simple-protocol upload without a size).
    Deferred,
}

impl Length {
    /// The length, when known.
    pub fn known(self) -> Option<u64> {
        match self {
            Length::Known(length) => Some(length),
            Length::Deferred => None,
        }
    }
}

/// The principal an upload belongs to; others are told it does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner(String);

impl Owner {
    /// The principal of requests without credentials.
    pub fn anonymous() -> Self {
        Owner("anonymous".into())
    }

    /// A named principal.
    pub fn new(name: impl Into<String>) -> Self {
        Owner(name.into())
    }

    /// The principal's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One part of a final upload, as the client named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcatPart {
    /// The partial upload.
    pub id: UploadId,
    /// The URL the client used for it (echoed back in `Upload-Concat`).
    pub url: String,
}

/// An upload's role in concatenation (tus `Upload-Concat`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concat {
    /// A part of some future final upload.
    Partial,
    /// The concatenation of these partial uploads, in order; it takes no appends.
    Final {
        /// The parts.
        parts: Vec<ConcatPart>,
    },
}

/// The protocol front-end an upload was created through (hooks report it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// The seed's simple protocol (`POST /upload`).
    Simple,
    /// tus 1.0.0 (`/files/`).
    Tus,
    /// The IETF Resumable Uploads draft (`/files/` with `Upload-Draft-Interop-Version`).
    Ietf,
}

impl Protocol {
    /// The name used in hook payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Tus => "tus",
            Protocol::Ietf => "ietf",
        }
    }
}

/// Where a complete upload stands with the finish hooks (`pre-finish`, `post-finish`).
///
/// Persisted because the last byte is committed before the hooks can run: a crash in between
/// must leave a record that the upload still owes them, or `post-finish` would be lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Completion {
    /// Created while hooks were on: once complete, it owes `pre-finish` and `post-finish`. A
    /// complete upload in this state is not finished yet (no download); a restart, or the next
    /// status request, runs what it owes.
    Pending,
    /// `pre-finish` accepted it and `post-finish` is in the outbox.
    Finished,
    /// `pre-finish` refused it, or its bytes did not match the digest the client sent for the
    /// whole upload: it takes no more bytes and cannot be downloaded.
    Failed {
        /// The status chosen (4xx), answered to every later append or download.
        status: u16,
        /// Why, shown to the client.
        reason: String,
    },
}

/// Everything persisted about an upload except its bytes (whose count is the offset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    /// The upload's id.
    pub id: UploadId,
    /// Who may touch it.
    pub owner: Owner,
    /// Its declared size.
    pub length: Length,
    /// The client's metadata.
    #[serde(default)]
    pub metadata: Metadata,
    /// The simple protocol's `X-File-Id`, when the upload was created through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// Its role in concatenation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concat: Option<Concat>,
    /// The front-end that created it; `None` in info written before this was recorded (see
    /// [`UploadInfo::protocol`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Where it stands with the finish hooks; `None` for uploads created without hooks (until
    /// a digest mismatch fails it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<Completion>,
    /// The digest the whole upload must have (the IETF draft's `Repr-Digest`), checked once
    /// its last byte is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repr_digest: Option<ReprDigest>,
}

/// The digest of a whole upload, as the client announced it; persisted as tus writes a
/// checksum (`sha256 <base64>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReprDigest(pub Checksum);

impl TryFrom<String> for ReprDigest {
    type Error = resumable_proto::checksum::ChecksumError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Checksum::parse(text.as_bytes()).map(ReprDigest)
    }
}

impl From<ReprDigest> for String {
    fn from(digest: ReprDigest) -> String {
        digest.0.encode()
    }
}

impl UploadInfo {
    /// The front-end that created it. Info written before the protocol was recorded tells it
    /// by the simple protocol's key, which only that protocol sets.
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(if self.client_key.is_some() {
            Protocol::Simple
        } else {
            Protocol::Tus
        })
    }

    /// Whether a hook refused it at its finish: `(status, reason)`.
    pub fn failure(&self) -> Option<(u16, &str)> {
        match &self.completion {
            Some(Completion::Failed { status, reason }) => Some((*status, reason)),
            _ => None,
        }
    }

    /// Whether this upload is the concatenation of others.
    pub fn is_final(&self) -> bool {
        matches!(self.concat, Some(Concat::Final { .. }))
    }
}

/// An upload as it stands: its info and how many bytes are durably stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    /// The persisted description.
    pub info: UploadInfo,
    /// Bytes durably stored.
    pub offset: Offset,
    /// When bytes were last written (creation time for a new upload).
    pub modified_at: SystemTime,
}

impl UploadStatus {
    /// Whether every declared byte is stored.
    pub fn is_complete(&self) -> bool {
        self.info.length.known() == Some(self.offset.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_parse_back() {
        let id = UploadId::random();
        assert_eq!(id.as_str().parse::<UploadId>().unwrap(), id);
        assert_ne!(UploadId::random(), id);
    }

    #[test]
    fn info_written_before_protocol_and_completion_still_loads() {
        let old = r#"{"id":"0123456789abcdef0123456789abcdef","owner":"anonymous",
            "length":{"known":5},"client_key":"a-5-1","created_at":1}"#;
        let info: UploadInfo = serde_json::from_str(old).unwrap();
        assert_eq!(info.protocol, None);
        assert_eq!(info.protocol(), Protocol::Simple);
        assert_eq!(info.completion, None);
        assert_eq!(info.repr_digest, None);
    }

    #[test]
    fn representation_digests_persist() {
        let digest = ReprDigest(Checksum {
            algorithm: resumable_proto::checksum::ChecksumAlgorithm::Sha512,
            digest: vec![1, 2, 3, 250],
        });
        let text = serde_json::to_string(&digest).unwrap();
        assert_eq!(text, "\"sha512 AQID+g==\"");
        assert_eq!(serde_json::from_str::<ReprDigest>(&text).unwrap(), digest);
        assert!(serde_json::from_str::<ReprDigest>("\"sha9 AA==\"").is_err());
    }

    #[test]
    fn ids_never_hold_path_characters() {
        for bad in [
            "",
            "../../../../etc/passwd",
            "0123456789abcdef0123456789abcde/",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef\x000123456789abcde",
        ] {
            assert!(bad.parse::<UploadId>().is_err(), "{bad:?}");
        }
    }
}
