//! `Upload-Concat` (tus concatenation): `partial`, or `final;<url> <url> ...`.

use thiserror::Error;

/// An `Upload-Concat` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadConcat {
    /// This upload is a part of a future final upload.
    Partial,
    /// This upload is the concatenation of these parts (URLs, absolute or relative), in order.
    Final(Vec<String>),
}

/// Why an `Upload-Concat` value is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConcatError {
    /// Neither `partial` nor `final;...`.
    #[error("Upload-Concat must be \"partial\" or \"final;<url> <url> ...\"")]
    Malformed,
    /// A final upload without parts.
    #[error("Upload-Concat: final names no partial uploads")]
    NoParts,
}

/// The most parts one final upload may name.
pub const MAX_PARTS: usize = 1000;

impl UploadConcat {
    /// Parses an `Upload-Concat` value.
    pub fn parse(value: &[u8]) -> Result<Self, ConcatError> {
        let text = std::str::from_utf8(value)
            .map_err(|_| ConcatError::Malformed)?
            .trim();
        if text == "partial" {
            return Ok(UploadConcat::Partial);
        }
        let parts = text.strip_prefix("final;").ok_or(ConcatError::Malformed)?;
        let urls: Vec<String> = parts.split_ascii_whitespace().map(str::to_owned).collect();
        if urls.is_empty() {
            return Err(ConcatError::NoParts);
        }
        if urls.len() > MAX_PARTS {
            return Err(ConcatError::Malformed);
        }
        Ok(UploadConcat::Final(urls))
    }

    /// Encodes as an `Upload-Concat` value.
    pub fn encode(&self) -> String {
        match self {
            UploadConcat::Partial => "partial".to_owned(),
            UploadConcat::Final(urls) => format!("final;{}", urls.join(" ")),
        }
    }
}

/// The last path segment of an upload URL (absolute or relative): the candidate upload id.
pub fn last_segment(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(UploadConcat::parse(b"partial"), Ok(UploadConcat::Partial));
        assert_eq!(
            UploadConcat::parse(b"final;/files/a https://x.example/files/b"),
            Ok(UploadConcat::Final(vec![
                "/files/a".into(),
                "https://x.example/files/b".into()
            ]))
        );
        assert_eq!(UploadConcat::parse(b"final;"), Err(ConcatError::NoParts));
        assert_eq!(UploadConcat::parse(b"whole"), Err(ConcatError::Malformed));
    }

    #[test]
    fn finds_ids_in_urls() {
        assert_eq!(last_segment("/files/abc"), "abc");
        assert_eq!(last_segment("https://x.example/files/abc/?q=1"), "abc");
        assert_eq!(last_segment("abc"), "abc");
    }

    proptest! {
        #[test]
        fn final_round_trips(urls in proptest::collection::vec("[!-~]{1,20}", 1..5)) {
            let concat = UploadConcat::Final(urls);
            prop_assert_eq!(UploadConcat::parse(concat.encode().as_bytes()), Ok(concat));
        }
    }
}
