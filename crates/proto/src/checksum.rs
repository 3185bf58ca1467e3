//! `Upload-Checksum: <algorithm> <base64 digest>` (tus checksum extension).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

/// The checksum algorithms served, in the order `Tus-Checksum-Algorithm` lists them.
pub const ALGORITHMS: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Sha1,
    ChecksumAlgorithm::Md5,
    ChecksumAlgorithm::Sha256,
    ChecksumAlgorithm::Sha512,
    ChecksumAlgorithm::Crc32,
];

/// A checksum algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    /// SHA-1 (the one every tus server must support).
    Sha1,
    /// MD5.
    Md5,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
    /// CRC-32 (IEEE), as 4 big-endian bytes.
    Crc32,
}

impl ChecksumAlgorithm {
    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha1 => "sha1",
            ChecksumAlgorithm::Md5 => "md5",
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Sha512 => "sha512",
            ChecksumAlgorithm::Crc32 => "crc32",
        }
    }

    /// The algorithm of a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        ALGORITHMS
            .into_iter()
            .find(|algorithm| algorithm.name() == name)
    }
}

/// The `Tus-Checksum-Algorithm` value.
pub fn encode_algorithms() -> String {
    let names: Vec<&str> = ALGORITHMS
        .iter()
        .map(|algorithm| algorithm.name())
        .collect();
    names.join(",")
}

/// An expected digest of a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// How the digest is computed.
    pub algorithm: ChecksumAlgorithm,
    /// The digest's bytes.
    pub digest: Vec<u8>,
}

/// Why an `Upload-Checksum` value is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChecksumError {
    /// Not `<algorithm> <base64>`.
    #[error("Upload-Checksum must be \"<algorithm> <base64 digest>\"")]
    Malformed,
    /// An algorithm this server does not support.
    #[error("unsupported checksum algorithm {0:?}; supported: sha1, md5, sha256, sha512, crc32")]
    UnsupportedAlgorithm(String),
}

impl Checksum {
    /// Parses an `Upload-Checksum` value.
    pub fn parse(value: &[u8]) -> Result<Self, ChecksumError> {
        let text = std::str::from_utf8(value).map_err(|_| ChecksumError::Malformed)?;
        let (name, encoded) = text
            .trim()
            .split_once(' ')
            .ok_or(ChecksumError::Malformed)?;
        let algorithm = ChecksumAlgorithm::from_name(name)
            .ok_or_else(|| ChecksumError::UnsupportedAlgorithm(name.to_owned()))?;
        let digest = STANDARD
            .decode(encoded.trim())
            .map_err(|_| ChecksumError::Malformed)?;
        Ok(Checksum { algorithm, digest })
    }

    /// Encodes as an `Upload-Checksum` value.
    pub fn encode(&self) -> String {
        format!(
            "{} {}",
            self.algorithm.name(),
            STANDARD.encode(&self.digest)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_spec_example() {
        let checksum = Checksum::parse(b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert_eq!(checksum.algorithm, ChecksumAlgorithm::Sha1);
        assert_eq!(checksum.digest.len(), 20);
    }

    #[test]
    fn rejects_unknown_algorithms_and_malformed_values() {
        assert_eq!(
            Checksum::parse(b"whirlpool AAAA"),
            Err(ChecksumError::UnsupportedAlgorithm("whirlpool".into()))
        );
        assert_eq!(
            Checksum::parse(b"SHA1 AAAA"),
            Err(ChecksumError::UnsupportedAlgorithm("SHA1".into()))
        );
        assert_eq!(Checksum::parse(b"sha1"), Err(ChecksumError::Malformed));
        assert_eq!(Checksum::parse(b"sha1 !!!"), Err(ChecksumError::Malformed));
    }

    #[test]
    fn lists_every_algorithm() {
        assert_eq!(encode_algorithms(), "sha1,md5,sha256,sha512,crc32");
    }

    proptest! {
        #[test]
        fn round_trips(index in 0usize..5, digest in proptest::collection::vec(any::<u8>(), 1..64)) {
            let checksum = Checksum { algorithm: ALGORITHMS[index], digest };
            prop_assert_eq!(Checksum::parse(checksum.encode().as_bytes()).unwrap(), checksum);
        }

        #[test]
        fn never_panics(bytes: Vec<u8>) {
            let _ = Checksum::parse(&bytes);
        }
    }
}
