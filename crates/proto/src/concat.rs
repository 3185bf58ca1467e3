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

/// An upload URL taken apart: the scheme and authority of an absolute URL, and the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// `(scheme, authority)` of an absolute `http`/`https` URL; `None` for an absolute path.
    pub origin: Option<(&'a str, &'a str)>,
    /// The path, starting with `/`.
    pub path: &'a str,
}

/// Splits an upload URL as a client may name a partial upload: an absolute `http(s)` URL or an
/// absolute path. Anything else (other schemes, relative paths, network-path references such
/// as `//host/x`, queries, fragments) is `None`: a part must be named exactly.
pub fn split_url(url: &str) -> Option<UrlParts<'_>> {
    if url.contains(['?', '#']) {
        return None;
    }
    if url.starts_with('/') {
        return (!url.starts_with("//")).then_some(UrlParts {
            origin: None,
            path: url,
        });
    }
    let (scheme, rest) = url.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let slash = rest.find('/')?;
    let (authority, path) = rest.split_at(slash);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(UrlParts {
        origin: Some((scheme, authority)),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_final_upload_names_at_most_max_parts() {
        let urls = |count: usize| {
            let list: Vec<String> = (0..count).map(|index| format!("/files/{index}")).collect();
            format!("final;{}", list.join(" "))
        };
        assert!(matches!(
            UploadConcat::parse(urls(MAX_PARTS).as_bytes()),
            Ok(UploadConcat::Final(parts)) if parts.len() == MAX_PARTS
        ));
        assert_eq!(
            UploadConcat::parse(urls(MAX_PARTS + 1).as_bytes()),
            Err(ConcatError::Malformed)
        );
    }

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
    fn splits_absolute_urls_and_paths_only() {
        assert_eq!(
            split_url("/files/abc"),
            Some(UrlParts {
                origin: None,
                path: "/files/abc"
            })
        );
        assert_eq!(
            split_url("HTTPS://x.example:8443/files/abc"),
            Some(UrlParts {
                origin: Some(("HTTPS", "x.example:8443")),
                path: "/files/abc"
            })
        );
        for bad in [
            "abc",
            "files/abc",
            "//evil.example/files/abc",
            "file:///x/abc",
            "ftp://x.example/files/abc",
            "https://x.example",
            "https:///files/abc",
            "https://user@x.example/files/abc",
            "/files/abc?q=1",
            "/files/abc#f",
        ] {
            assert_eq!(split_url(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn final_round_trips(urls in proptest::collection::vec("[!-~]{1,20}", 1..5)) {
            let concat = UploadConcat::Final(urls);
            prop_assert_eq!(UploadConcat::parse(concat.encode().as_bytes()), Ok(concat));
        }
    }
}
