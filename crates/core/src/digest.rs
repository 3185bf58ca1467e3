//! Digests of request bodies, computed while the bytes stream to the store (never buffered).

use resumable_proto::checksum::{ALGORITHMS, ChecksumAlgorithm};
use sha2::Digest;

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

/// Digests of the same bytes under one or several algorithms.
pub(crate) struct Digests(Vec<(ChecksumAlgorithm, Running)>);

impl Digests {
    /// One algorithm, known before the body (an `Upload-Checksum` header).
    pub(crate) fn one(algorithm: ChecksumAlgorithm) -> Self {
        Digests(vec![(algorithm, Running::new(algorithm))])
    }

    /// Every algorithm, for a checksum that arrives after the body (a trailer).
    pub(crate) fn all() -> Self {
        Digests(
            ALGORITHMS
                .iter()
                .map(|&algorithm| (algorithm, Running::new(algorithm)))
                .collect(),
        )
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for (_, running) in &mut self.0 {
            running.update(bytes);
        }
    }

    /// The digest under `algorithm`, if it was computed.
    pub(crate) fn finish(self, algorithm: ChecksumAlgorithm) -> Option<Vec<u8>> {
        self.0
            .into_iter()
            .find(|(computed, _)| *computed == algorithm)
            .map(|(_, running)| running.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
