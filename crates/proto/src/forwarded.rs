//! The origin a client used, as a trusted proxy reports it: `Forwarded` (RFC 7239) or the older
//! `X-Forwarded-Host` / `X-Forwarded-Proto`.

/// Scheme and host of the client's request, as far as the headers tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedOrigin {
    /// `http` or `https`.
    pub proto: Option<String>,
    /// `host[:port]`.
    pub host: Option<String>,
}

/// Reads the first (client-nearest) element of a `Forwarded` value.
pub fn parse_forwarded(value: &str) -> ForwardedOrigin {
    let first = value.split(',').next().unwrap_or_default();
    let mut origin = ForwardedOrigin::default();
    for pair in first.split(';') {
        let Some((name, raw)) = pair.split_once('=') else {
            continue;
        };
        let raw = raw.trim();
        let unquoted = raw
            .strip_prefix('"')
            .and_then(|inner| inner.strip_suffix('"'))
            .unwrap_or(raw);
        match name.trim().to_ascii_lowercase().as_str() {
            "proto" => origin.proto = valid_proto(unquoted),
            "host" => origin.host = valid_host(unquoted),
            _ => {}
        }
    }
    origin
}

/// Reads `X-Forwarded-Proto` and `X-Forwarded-Host` (first values of comma-separated lists).
pub fn parse_x_forwarded(proto: Option<&str>, host: Option<&str>) -> ForwardedOrigin {
    let first = |value: &str| {
        value
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    ForwardedOrigin {
        proto: proto.map(first).and_then(|proto| valid_proto(&proto)),
        host: host.map(first).and_then(|host| valid_host(&host)),
    }
}

/// `http` or `https`, lowercased; anything else is ignored.
pub fn valid_proto(proto: &str) -> Option<String> {
    let proto = proto.to_ascii_lowercase();
    matches!(proto.as_str(), "http" | "https").then_some(proto)
}

/// A host with an optional port: letters, digits, `.`, `-`, `:`, `[`, `]` only, so it cannot
/// smuggle a path, userinfo or another URL into a `Location`.
pub fn valid_host(host: &str) -> Option<String> {
    let valid = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b".-:[]".contains(&byte));
    valid.then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_first_forwarded_element() {
        let origin = parse_forwarded(
            "for=192.0.2.60;proto=https;host=\"up.example.com:8443\", proto=http;host=inner",
        );
        assert_eq!(origin.proto.as_deref(), Some("https"));
        assert_eq!(origin.host.as_deref(), Some("up.example.com:8443"));
    }

    #[test]
    fn ignores_hostile_values() {
        let origin = parse_forwarded("proto=javascript;host=evil.com/path");
        assert_eq!(origin, ForwardedOrigin::default());
        let origin = parse_x_forwarded(Some("https, http"), Some("a.example@evil.com"));
        assert_eq!(origin.proto.as_deref(), Some("https"));
        assert_eq!(origin.host, None);
    }

    #[test]
    fn reads_x_forwarded_lists() {
        let origin = parse_x_forwarded(Some("HTTPS"), Some("up.example.com, proxy.local"));
        assert_eq!(origin.proto.as_deref(), Some("https"));
        assert_eq!(origin.host.as_deref(), Some("up.example.com"));
    }

    proptest! {
        #[test]
        fn hosts_never_carry_url_syntax(value: String) {
            if let Some(host) = parse_forwarded(&value).host {
                prop_assert!(!host.contains(['/', '@', '?', '#', ' ']));
            }
        }
    }
}
