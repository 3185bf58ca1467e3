//! `Upload-Checksum: <algorithm> <base64 digest>` (tus checksum extension).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::Digest;
use std::fmt;
use std::str::FromStr;
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

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A name that is not one of [`ALGORITHMS`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown checksum algorithm {0:?} (use sha1, md5, sha256, sha512 or crc32)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for ChecksumAlgorithm {
    type Err = UnknownAlgorithm;

    /// Parses a name given by a person (any case); wire values go through [`Checksum::parse`].
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ChecksumAlgorithm::from_name(&name.trim().to_ascii_lowercase())
            .ok_or_else(|| UnknownAlgorithm(name.to_owned()))
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

/// A running digest of one algorithm.
enum Running {
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
    Crc32(crc32fast::Hasher),
}

impl Running {
    fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Sha1 => Running::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Md5 => Running::Md5(md5::Md5::new()),
            ChecksumAlgorithm::Sha256 => Running::Sha256(sha2::Sha256::new()),
            ChecksumAlgorithm::Sha512 => Running::Sha512(sha2::Sha512::new()),
            ChecksumAlgorithm::Crc32 => Running::Crc32(crc32fast::Hasher::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Running::Sha1(digest) => digest.update(bytes),
            Running::Md5(digest) => digest.update(bytes),
            Running::Sha256(digest) => digest.update(bytes),
            Running::Sha512(digest) => digest.update(bytes),
            Running::Crc32(digest) => digest.update(bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Running::Sha1(digest) => digest.finalize().to_vec(),
            Running::Md5(digest) => digest.finalize().to_vec(),
            Running::Sha256(digest) => digest.finalize().to_vec(),
            Running::Sha512(digest) => digest.finalize().to_vec(),
            Running::Crc32(digest) => digest.finalize().to_be_bytes().to_vec(),
        }
    }
}

/// Digests of the same bytes under one or several algorithms, fed as the bytes stream by.
pub struct Digests(Vec<(ChecksumAlgorithm, Running)>);

impl Digests {
    /// One algorithm, known before the body (an `Upload-Checksum` header).
    pub fn one(algorithm: ChecksumAlgorithm) -> Self {
        Digests(vec![(algorithm, Running::new(algorithm))])
    }

    /// Every algorithm, for a checksum that arrives after the body (a trailer).
    pub fn all() -> Self {
        Digests(
            ALGORITHMS
                .iter()
                .map(|&algorithm| (algorithm, Running::new(algorithm)))
                .collect(),
        )
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for (_, running) in &mut self.0 {
            running.update(bytes);
        }
    }

    /// The digest under `algorithm`, if it was computed.
    pub fn finish(self, algorithm: ChecksumAlgorithm) -> Option<Vec<u8>> {
        self.0
            .into_iter()
            .find(|(computed, _)| *computed == algorithm)
            .map(|(_, running)| running.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn algorithms_display_as_their_wire_names() {
        for algorithm in ALGORITHMS {
            assert_eq!(algorithm.to_string(), algorithm.name());
        }
        assert_eq!(ChecksumAlgorithm::Sha1.to_string(), "sha1");
    }

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
    fn names_from_people_ignore_case() {
        assert_eq!(
            "SHA256".parse::<ChecksumAlgorithm>(),
            Ok(ChecksumAlgorithm::Sha256)
        );
        assert!("crc64".parse::<ChecksumAlgorithm>().is_err());
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

    fn digest_of(algorithm: ChecksumAlgorithm, bytes: &[u8]) -> String {
        let mut digests = Digests::all();
        for chunk in bytes.chunks(3) {
            digests.update(chunk);
        }
        hex::encode(digests.finish(algorithm).unwrap())
    }

    #[test]
    fn known_answers() {
        let text = b"hello world";
        assert_eq!(
            digest_of(ChecksumAlgorithm::Sha1, text),
            "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"
        );
        assert_eq!(
            digest_of(ChecksumAlgorithm::Md5, text),
            "5eb63bbbe01eeed093cb22bb8f5acdc3"
        );
        assert_eq!(
            digest_of(ChecksumAlgorithm::Sha256, text),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert!(
            digest_of(ChecksumAlgorithm::Sha512, text)
                .starts_with("309ecc489c12d6eb4cc40f50c902f2b4")
        );
        assert_eq!(digest_of(ChecksumAlgorithm::Crc32, text), "0d4a1185");
    }

    #[test]
    fn a_single_digest_knows_only_its_algorithm() {
        let digests = Digests::one(ChecksumAlgorithm::Md5);
        assert!(digests.finish(ChecksumAlgorithm::Sha1).is_none());
    }
}
