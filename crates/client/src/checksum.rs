//! Per-chunk `Upload-Checksum` values (tus checksum extension).
//!
//! The header goes before the body, so a chunk is read twice: once through the hash here, once as
//! the body. Both reads stream; nothing is held in memory.

use crate::ClientError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::Digest;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A checksum algorithm of the tus checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    /// `sha1`, the one every server implementing the extension must support.
    Sha1,
    /// `sha256`.
    Sha256,
    /// `sha512`.
    Sha512,
    /// `md5`.
    Md5,
}

impl ChecksumAlgorithm {
    /// Every algorithm, in the order `--help` lists them.
    pub const ALL: [ChecksumAlgorithm; 4] = [
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha512,
        ChecksumAlgorithm::Md5,
    ];

    /// The name tus uses in `Upload-Checksum` and `Tus-Checksum-Algorithm`.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha1 => "sha1",
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Sha512 => "sha512",
            ChecksumAlgorithm::Md5 => "md5",
        }
    }
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// An algorithm name that is not one of [`ChecksumAlgorithm::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown checksum algorithm {0:?} (use sha256, sha1, sha512 or md5)")]
pub struct UnknownAlgorithm(String);

impl FromStr for ChecksumAlgorithm {
    type Err = UnknownAlgorithm;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ChecksumAlgorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| UnknownAlgorithm(name.to_owned()))
    }
}

/// The `Upload-Checksum` value of `range` of the file at `path`: `<algorithm> <base64 digest>`.
pub(crate) async fn upload_checksum(
    algorithm: ChecksumAlgorithm,
    path: &Path,
    range: Range<u64>,
) -> Result<String, ClientError> {
    let owned: PathBuf = path.to_owned();
    let digest = tokio::task::spawn_blocking(move || match algorithm {
        ChecksumAlgorithm::Sha1 => digest_range::<sha1::Sha1>(&owned, range),
        ChecksumAlgorithm::Sha256 => digest_range::<sha2::Sha256>(&owned, range),
        ChecksumAlgorithm::Sha512 => digest_range::<sha2::Sha512>(&owned, range),
        ChecksumAlgorithm::Md5 => digest_range::<md5::Md5>(&owned, range),
    })
    .await
    .map_err(|error| ClientError::File {
        path: path.to_owned(),
        source: std::io::Error::other(error),
    })?
    .map_err(|source| ClientError::File {
        path: path.to_owned(),
        source,
    })?;
    Ok(format!("{} {}", algorithm.name(), STANDARD.encode(digest)))
}

fn digest_range<D: Digest>(path: &Path, range: Range<u64>) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(range.start))?;
    let mut reader = file.take(range.end - range.start);
    let mut hasher = D::new();
    let mut buffer = vec![0; 256 * 1024];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for algorithm in ChecksumAlgorithm::ALL {
            assert_eq!(algorithm.name().parse::<ChecksumAlgorithm>(), Ok(algorithm));
        }
        assert_eq!(
            "SHA256".parse::<ChecksumAlgorithm>(),
            Ok(ChecksumAlgorithm::Sha256)
        );
        assert!("crc32".parse::<ChecksumAlgorithm>().is_err());
    }

    #[tokio::test]
    async fn digests_only_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"xxhello worldyy").unwrap();
        // Known digests of "hello world".
        let expected = [
            (ChecksumAlgorithm::Sha1, "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
            (
                ChecksumAlgorithm::Sha256,
                "sha256 uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=",
            ),
            (ChecksumAlgorithm::Md5, "md5 XrY7u+Ae7tCTyyK7j1rNww=="),
        ];
        for (algorithm, value) in expected {
            assert_eq!(
                upload_checksum(algorithm, &path, 2..13).await.unwrap(),
                value
            );
        }
    }
}
