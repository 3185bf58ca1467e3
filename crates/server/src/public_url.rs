//! `--public-url`: the base every upload URL is built on, instead of the request's `Host`.
//!
//! Behind a proxy the server cannot know the name clients use (and a `Host` header is whatever
//! the client says). With a public URL, `Location` is `{public-url}/files/{id}` for every
//! protocol, and a final concatenation's parts must be named under it.
//!
//! A path in the public URL (`https://uploads.example.com/base`) is a prefix the proxy adds in
//! front of the server's own paths and strips before passing a request on: the server's routes
//! stay `/files/...`, `/upload`, `/`; only the URLs it hands out carry the prefix.

use http::Uri;
use std::fmt;

/// A validated public base URL: `http` or `https`, a host, an optional path prefix, no query,
/// fragment or credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `scheme://host[:port]`, the scheme lowercased.
    origin: String,
    /// The path prefix without a trailing slash: empty, or like `/base`.
    prefix: String,
}

impl PublicUrl {
    /// Parses `https://host[:port][/prefix]`. Errors never quote a URL that holds credentials.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.contains('@') {
            return Err("a public URL must not hold credentials (user@ or user:password@)".into());
        }
        if text.contains(['?', '#']) {
            return Err(format!(
                "{text:?} has a query or fragment; give only scheme, host and path"
            ));
        }
        let uri: Uri = text
            .parse()
            .map_err(|_| format!("{text:?} is not a URL like https://uploads.example.com/base"))?;
        let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
        let (Some(scheme @ ("http" | "https")), Some(authority)) =
            (scheme.as_deref(), uri.authority())
        else {
            return Err(format!(
                "{text:?} is not an http:// or https:// URL with a host"
            ));
        };
        if authority.host().is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        if prefix.contains("//") {
            return Err(format!("{text:?} has an empty path segment"));
        }
        Ok(PublicUrl {
            origin: format!("{scheme}://{}", authority.as_str()),
            prefix,
        })
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The path prefix (empty, or like `/base`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether `scheme` and `authority` are this URL's origin (case-insensitively).
    pub(crate) fn has_origin(&self, scheme: &str, authority: &str) -> bool {
        self.origin
            .eq_ignore_ascii_case(&format!("{scheme}://{authority}"))
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}{}", self.origin, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_an_origin_and_a_prefix() {
        let url = PublicUrl::parse("https://Uploads.example.com/base/").unwrap();
        assert_eq!(url.origin(), "https://Uploads.example.com");
        assert_eq!(url.prefix(), "/base");
        assert_eq!(url.to_string(), "https://Uploads.example.com/base");
        assert!(url.has_origin("HTTPS", "uploads.example.com"));
        let bare = PublicUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(bare.to_string(), "http://127.0.0.1:8080");
        assert_eq!(bare.prefix(), "");
        assert_eq!(
            PublicUrl::parse("HTTP://x/a/b").unwrap().to_string(),
            "http://x/a/b"
        );
        for bad in [
            "uploads.example.com",
            "ftp://x/",
            "https://x/?a=1",
            "https://x/#f",
            "https:///path",
            "/base",
            "https://x//y",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad}");
        }
        let error = PublicUrl::parse("https://user:s3cret@x/").unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
    }
}
