//! The origin a client used, as a trusted proxy reports it: `Forwarded` (RFC 7239) or the older
//! `X-Forwarded-Host` / `X-Forwarded-Proto`; and the client's address (`for=`,
//! `X-Forwarded-For`).

use std::net::{IpAddr, SocketAddr};

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

/// A client as a proxy names it in `for=` or `X-Forwarded-For`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardedFor {
    /// An address (any port dropped).
    Address(IpAddr),
    /// An obfuscated identifier (`_hidden`) or `unknown`: a token, as given.
    Token(String),
}

/// The client's address as the nearest proxy reports it: the `for=` of the **last** element of
/// `Forwarded` (or, without it, the last entry of `X-Forwarded-For`). The last one is the one
/// the proxy in front of this server added; earlier ones come from whoever connected to it and
/// can be anything. `None` when neither names a usable client.
pub fn parse_forwarded_for(
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
) -> Option<ForwardedFor> {
    if let Some(value) = forwarded {
        let last = value.rsplit(',').next().unwrap_or_default();
        let named = last.split(';').find_map(|pair| {
            let (name, raw) = pair.split_once('=')?;
            name.trim().eq_ignore_ascii_case("for").then(|| raw.trim())
        });
        if let Some(raw) = named {
            let unquoted = raw
                .strip_prefix('"')
                .and_then(|inner| inner.strip_suffix('"'))
                .unwrap_or(raw);
            return node(unquoted);
        }
    }
    node(x_forwarded_for?.rsplit(',').next()?.trim())
}

/// A node of RFC 7239 §6 (`192.0.2.43`, `192.0.2.43:4711`, `[2001:db8::17]:4711`, `_hidden`,
/// `unknown`), or a bare IPv6 address as `X-Forwarded-For` has them.
fn node(text: &str) -> Option<ForwardedFor> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(ForwardedFor::Address(address));
    }
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Some(ForwardedFor::Address(address.ip()));
    }
    if let Some(inner) = text
        .strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        && let Ok(address) = inner.parse::<IpAddr>()
    {
        return Some(ForwardedFor::Address(address));
    }
    let token = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
    token.then(|| ForwardedFor::Token(text.to_owned()))
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

    #[test]
    fn the_client_is_the_one_the_nearest_proxy_names() {
        let address = |text: &str| Some(ForwardedFor::Address(text.parse().unwrap()));
        // The first element may come from the client itself; the last is the proxy's.
        assert_eq!(
            parse_forwarded_for(Some("for=1.1.1.1, for=192.0.2.60;proto=https"), None),
            address("192.0.2.60")
        );
        assert_eq!(
            parse_forwarded_for(Some("for=\"[2001:db8:cafe::17]:4711\""), None),
            address("2001:db8:cafe::17")
        );
        assert_eq!(
            parse_forwarded_for(Some("For=\"192.0.2.43:47011\""), Some("9.9.9.9")),
            address("192.0.2.43")
        );
        assert_eq!(
            parse_forwarded_for(Some("for=_hidden"), None),
            Some(ForwardedFor::Token("_hidden".into()))
        );
        // Forwarded without for= leaves X-Forwarded-For to say.
        assert_eq!(
            parse_forwarded_for(Some("proto=https"), Some("6.6.6.6, 203.0.113.7")),
            address("203.0.113.7")
        );
        assert_eq!(
            parse_forwarded_for(None, Some("2001:db8::1")),
            address("2001:db8::1")
        );
        assert_eq!(parse_forwarded_for(None, Some("a b/c")), None);
        assert_eq!(parse_forwarded_for(None, None), None);
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
