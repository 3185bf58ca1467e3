//! Upload metadata: an ordered list of keys, each with an optional binary value.
//!
//! Its tus encoding (`Upload-Metadata`) is `key base64,key2 base64,key3`: keys are ASCII without
//! spaces or commas and unique; values are base64 so any bytes (non-Latin-1 file names included)
//! travel safely in a header. The same encoding is used to persist metadata.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use thiserror::Error;

/// Accepts values with or without padding: clients differ, the bytes do not.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The longest `Upload-Metadata` header accepted, in bytes.
pub const MAX_ENCODED_LEN: usize = 16 * 1024;

/// Why an `Upload-Metadata` value is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetadataError {
    /// A pair has an empty key.
    #[error("metadata key is empty")]
    EmptyKey,
    /// A key holds a character outside visible ASCII, or a comma.
    #[error("metadata key {0:?} is not visible ASCII")]
    InvalidKey(String),
    /// The same key appears twice.
    #[error("metadata key {0:?} appears twice")]
    DuplicateKey(String),
    /// A value is not base64.
    #[error("metadata value of {0:?} is not base64")]
    InvalidValue(String),
    /// A pair has more than a key and a value.
    #[error("metadata pair {0:?} has more than a key and a value")]
    ExtraField(String),
    /// The whole value is longer than [`MAX_ENCODED_LEN`].
    #[error("metadata is longer than {MAX_ENCODED_LEN} bytes")]
    TooLong,
}

/// One metadata pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataEntry {
    /// The key: visible ASCII, no comma.
    pub key: String,
    /// The value, absent for keys sent without one.
    pub value: Option<Vec<u8>>,
}

/// Upload metadata in the order the client sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Metadata(Vec<MetadataEntry>);

impl Metadata {
    /// Parses a tus `Upload-Metadata` value.
    pub fn parse_tus(value: &[u8]) -> Result<Self, MetadataError> {
        if value.len() > MAX_ENCODED_LEN {
            return Err(MetadataError::TooLong);
        }
        let text = std::str::from_utf8(value)
            .map_err(|_| MetadataError::InvalidKey(String::from_utf8_lossy(value).into()))?;
        let mut metadata = Metadata::default();
        if text.trim().is_empty() {
            return Ok(metadata);
        }
        for pair in text.split(',') {
            let mut fields = pair.trim_start().split(' ');
            let key = fields.next().unwrap_or_default();
            let value = fields.next();
            if fields.next().is_some() {
                return Err(MetadataError::ExtraField(pair.into()));
            }
            let value = value
                .map(|encoded| {
                    LENIENT
                        .decode(encoded)
                        .map_err(|_| MetadataError::InvalidValue(key.into()))
                })
                .transpose()?;
            metadata.insert(key, value)?;
        }
        Ok(metadata)
    }

    /// Encodes as a tus `Upload-Metadata` value (canonical padded base64).
    pub fn encode_tus(&self) -> String {
        let pairs: Vec<String> = self
            .0
            .iter()
            .map(|entry| match &entry.value {
                Some(value) => format!("{} {}", entry.key, general_purpose::STANDARD.encode(value)),
                None => entry.key.clone(),
            })
            .collect();
        pairs.join(",")
    }

    /// Adds a pair, rejecting invalid or repeated keys.
    pub fn insert(&mut self, key: &str, value: Option<Vec<u8>>) -> Result<(), MetadataError> {
        if key.is_empty() {
            return Err(MetadataError::EmptyKey);
        }
        if !key
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && byte != b',')
        {
            return Err(MetadataError::InvalidKey(key.into()));
        }
        if self.0.iter().any(|entry| entry.key == key) {
            return Err(MetadataError::DuplicateKey(key.into()));
        }
        self.0.push(MetadataEntry {
            key: key.into(),
            value,
        });
        Ok(())
    }

    /// Sets `key` to `value`, in place when the key is present (its position kept), else at
    /// the end; rejects an invalid key.
    pub fn set(&mut self, key: &str, value: Option<Vec<u8>>) -> Result<(), MetadataError> {
        match self.0.iter_mut().find(|entry| entry.key == key) {
            Some(entry) => {
                entry.value = value;
                Ok(())
            }
            None => self.insert(key, value),
        }
    }

    /// Removes `key`, if present.
    pub fn remove(&mut self, key: &str) {
        self.0.retain(|entry| entry.key != key);
    }

    /// The value of `key`, if the key is present with a value.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|entry| entry.key == key)
            .and_then(|entry| entry.value.as_deref())
    }

    /// The `filename` value as text, when present and valid UTF-8.
    pub fn filename(&self) -> Option<&str> {
        self.get("filename")
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The pairs in order.
    pub fn entries(&self) -> &[MetadataEntry] {
        &self.0
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<String> for Metadata {
    type Error = MetadataError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Metadata::parse_tus(value.as_bytes())
    }
}

impl From<Metadata> for String {
    fn from(metadata: Metadata) -> Self {
        metadata.encode_tus()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_up_to_the_limit_parse_and_one_byte_more_is_too_long() {
        // "kkk " and 16,380 base64 characters (4,095 whole groups): exactly the limit.
        let value = "A".repeat(MAX_ENCODED_LEN - 4);
        let header = format!("kkk {value}");
        assert_eq!(header.len(), MAX_ENCODED_LEN);
        assert!(Metadata::parse_tus(header.as_bytes()).is_ok());
        let header = format!("kkkk {value}");
        assert_eq!(
            Metadata::parse_tus(header.as_bytes()),
            Err(MetadataError::TooLong)
        );
    }

    #[test]
    fn emptiness_and_the_serde_form_follow_the_pairs() {
        assert!(Metadata::default().is_empty());
        let metadata = Metadata::parse_tus(b"filename YS50eHQ=,flag").unwrap();
        assert!(!metadata.is_empty());
        // Stored as its tus encoding, and read back through the parser.
        let stored = String::from(metadata.clone());
        assert_eq!(stored, metadata.encode_tus());
        assert_eq!(Metadata::try_from(stored).unwrap(), metadata);
        assert!(Metadata::try_from("bad,,key".to_owned()).is_err());
    }

    #[test]
    fn parses_keys_with_and_without_values() {
        let metadata =
            Metadata::parse_tus(b"filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
                .unwrap();
        assert_eq!(metadata.filename(), Some("world_domination_plan.pdf"));
        assert_eq!(metadata.entries()[1].key, "is_confidential");
        assert_eq!(metadata.entries()[1].value, None);
        assert_eq!(
            metadata.encode_tus(),
            "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential"
        );
    }

    #[test]
    fn set_replaces_in_place_and_remove_drops() {
        let mut metadata = Metadata::parse_tus(b"a YQ==,b Yg==").unwrap();
        metadata.set("a", Some(b"z".to_vec())).unwrap();
        metadata.set("c", None).unwrap();
        metadata.remove("b");
        assert_eq!(metadata.encode_tus(), "a eg==,c");
        assert!(metadata.set("bad key", None).is_err());
    }

    #[test]
    fn accepts_unpadded_values() {
        let metadata = Metadata::parse_tus(b"name YQ").unwrap();
        assert_eq!(metadata.get("name"), Some(&b"a"[..]));
    }

    #[test]
    fn empty_header_is_empty_metadata() {
        assert!(Metadata::parse_tus(b"").unwrap().is_empty());
    }

    #[test]
    fn rejects_malformed_pairs() {
        assert_eq!(
            Metadata::parse_tus(b"a YQ==,a YQ=="),
            Err(MetadataError::DuplicateKey("a".into()))
        );
        assert_eq!(
            Metadata::parse_tus(b"a !!!"),
            Err(MetadataError::InvalidValue("a".into()))
        );
        assert_eq!(
            Metadata::parse_tus(b"a YQ== YQ=="),
            Err(MetadataError::ExtraField("a YQ== YQ==".into()))
        );
        assert_eq!(
            Metadata::parse_tus(b"a YQ==,,b"),
            Err(MetadataError::EmptyKey)
        );
        assert!(Metadata::parse_tus(&vec![b'a'; MAX_ENCODED_LEN + 1]).is_err());
    }

    fn arbitrary_metadata() -> impl Strategy<Value = Metadata> {
        proptest::collection::btree_map(
            "[!-+\\--~]{1,12}",
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            0..6,
        )
        .prop_map(|pairs| {
            let mut metadata = Metadata::default();
            for (key, value) in pairs {
                metadata.insert(&key, value).unwrap();
            }
            metadata
        })
    }

    proptest! {
        #[test]
        fn round_trips(metadata in arbitrary_metadata()) {
            let encoded = metadata.encode_tus();
            prop_assert_eq!(Metadata::parse_tus(encoded.as_bytes()).unwrap(), metadata);
        }

        #[test]
        fn never_panics(bytes: Vec<u8>) {
            let _ = Metadata::parse_tus(&bytes);
        }
    }
}
