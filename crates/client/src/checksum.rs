//! Per-chunk `Upload-Checksum` values (tus checksum extension).
//!
//! The header goes before the body, so a chunk is read twice: once through the hash here, once as
//! the body. Both reads stream; nothing is held in memory.

use crate::ClientError;
use resumable_proto::checksum::{Checksum, ChecksumAlgorithm, Digests};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The `Upload-Checksum` value of `range` of the file at `path`: `<algorithm> <base64 digest>`.
pub(crate) async fn upload_checksum(
    algorithm: ChecksumAlgorithm,
    path: &Path,
    range: Range<u64>,
) -> Result<String, ClientError> {
    let owned: PathBuf = path.to_owned();
    let digest = tokio::task::spawn_blocking(move || digest_range(algorithm, &owned, range))
        .await
        .map_err(|error| ClientError::File {
            path: path.to_owned(),
            source: std::io::Error::other(error),
        })?
        .map_err(|source| ClientError::File {
            path: path.to_owned(),
            source,
        })?;
    Ok(Checksum { algorithm, digest }.encode())
}

fn digest_range(
    algorithm: ChecksumAlgorithm,
    path: &Path,
    range: Range<u64>,
) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(range.start))?;
    let mut reader = file.take(range.end - range.start);
    let mut hasher = Digests::one(algorithm);
    let mut buffer = vec![0; 256 * 1024];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    hasher
        .finish(algorithm)
        .ok_or_else(|| std::io::Error::other("digest not computed"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
