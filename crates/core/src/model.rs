//! The upload model: ids, offsets, lengths, owners and the persisted description of an upload.

use resumable_proto::Metadata;
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
}

impl UploadInfo {
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
