//! Flags shared by the client subcommands, and their parsers.

use crate::Usage;
use clap::Args;
use resumable_client::{ClientConfig, HeaderMap, HeaderName, HeaderValue, RetryPolicy};

/// `Authorization`, which `--token` sets.
const AUTHORIZATION: HeaderName = HeaderName::from_static("authorization");
use std::time::Duration;

/// How the client subcommands talk to the server.
#[derive(Args, Debug, Clone)]
pub(crate) struct HttpArgs {
    /// Extra header sent with every request, e.g. 'X-Tenant: blue' or 'Authorization: Basic ...'
    /// (repeatable).
    #[arg(long = "header", short = 'H', value_name = "'NAME: VALUE'")]
    headers: Vec<Secret>,

    /// Send `Authorization: Bearer TOKEN` with every request. Prefer RESUMABLE_TOKEN: a flag's
    /// value shows in `ps` and shell history.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "RESUMABLE_TOKEN",
        hide_env_values = true
    )]
    token: Option<Secret>,

    /// Stop retrying after this long without progress (e.g. 30s, 10m, 2h).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    give_up_after: Duration,

    /// Abandon (and retry) a request that moves no byte for this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    stall_timeout: Duration,
}

impl HttpArgs {
    /// The client configuration these flags describe; a [`Usage`] error for a token a header
    /// cannot carry, or a token given next to an `Authorization` header.
    pub(crate) fn client_config(&self) -> Result<ClientConfig, Usage> {
        let mut headers = HeaderMap::new();
        for header in &self.headers {
            let (name, value) =
                parse_header(&header.0).map_err(|error| Usage(format!("--header: {error}")))?;
            headers.append(name, value);
        }
        if let Some(token) = &self.token {
            // Two credentials would make the server pick one: refuse rather than guess which.
            if headers.contains_key(AUTHORIZATION) {
                return Err(Usage(
                    "--token (or RESUMABLE_TOKEN) and --header 'Authorization: ...' both set the \
                     Authorization header; give one"
                        .into(),
                ));
            }
            headers.insert(AUTHORIZATION, token.bearer()?);
        }
        Ok(ClientConfig {
            headers,
            retry: RetryPolicy {
                give_up_after: self.give_up_after,
                ..RetryPolicy::default()
            },
            stall_timeout: self.stall_timeout,
            ..ClientConfig::default()
        })
    }
}

/// A value that may hold a credential (`--token`, `--header`): its `Debug` never shows it, and
/// clap takes it as it is, checked later, because clap's own error would quote a rejected value.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(..)")
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret(text)
    }
}

impl Secret {
    /// `Bearer TOKEN`, marked sensitive so that debug logs of requests leave it out.
    fn bearer(&self) -> Result<HeaderValue, Usage> {
        let token = self.0.trim();
        if token.is_empty() {
            return Err(Usage("--token (or RESUMABLE_TOKEN) is empty".into()));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            Usage("--token (or RESUMABLE_TOKEN) holds characters a header cannot carry".into())
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Header names whose values are credentials: never echoed, and marked sensitive.
pub(crate) fn is_credential(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    ["authorization", "proxy-authorization", "cookie"].contains(&name.as_str())
        || ["token", "secret", "key", "auth"]
            .iter()
            .any(|part| name.contains(part))
}

/// `Name: value`. Errors never quote the whole argument: it may be a credential.
fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text.split_once(':').ok_or_else(|| {
        "a header is 'Name: value', with a colon after the name (e.g. 'X-Tenant: blue')".to_owned()
    })?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        if is_credential(name) {
            "not a valid header name before the colon".to_owned()
        } else {
            format!("{:?} is not a valid header name", name.trim())
        }
    })?;
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of {name} holds characters a header cannot carry"))?;
    value.set_sensitive(is_credential(name.as_str()));
    Ok((name, value))
}

/// `key=value` for upload metadata.
pub(crate) fn parse_metadata_pair(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not metadata like key=value"))?;
    let mut check = resumable_client::Metadata::default();
    check
        .insert(key, None)
        .map_err(|error| format!("--metadata {text:?}: {error}"))?;
    Ok((key.to_owned(), value.to_owned()))
}

/// A byte count: plain digits, or with a unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 5000000, 16MiB or 2GB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A chunk size: a positive size, or `unlimited` (the rest of the file in one request).
pub(crate) fn parse_chunk_size(text: &str) -> Result<ChunkSize, String> {
    if text.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(ChunkSize(None));
    }
    match parse_size(text)? {
        0 => Err("the chunk size must be at least 1 byte (or `unlimited`)".into()),
        bytes => Ok(ChunkSize(Some(bytes))),
    }
}

/// The most bytes one request carries; `None` for no limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkSize(pub(crate) Option<u64>);

/// A transfer rate in bytes per second (`10MiB` means 10 MiB/s).
pub(crate) fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bytes = parse_size(text.strip_suffix("/s").unwrap_or(text))?;
    if bytes == 0 {
        return Err("the rate must be at least 1 byte per second".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_need_a_name_and_a_value() {
        let (name, value) = parse_header("Authorization: Bearer abc").unwrap();
        assert_eq!(name, "authorization");
        assert_eq!(value, "Bearer abc");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_header("X-Ok: line\nbreak").is_err());
    }

    #[test]
    fn header_errors_do_not_echo_credentials() {
        let error = parse_header("Authorization Bearer s3cret").unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
        let error = parse_header("Authorization Bearer s3cret: x").unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
        let error = parse_header("Authorization: Bearer s3\ncret").unwrap_err();
        assert!(!error.contains("s3"), "{error}");
        assert!(
            parse_header("Authorization: Bearer x")
                .unwrap()
                .1
                .is_sensitive()
        );
        assert!(!parse_header("X-Tenant: blue").unwrap().1.is_sensitive());
    }

    #[test]
    fn tokens_become_bearer_credentials() {
        let value = Secret("abc.def".into()).bearer().unwrap();
        assert_eq!(value, "Bearer abc.def");
        assert!(value.is_sensitive());
        assert!(Secret("  ".into()).bearer().is_err());
        let trimmed = Secret("s3cret\r\n".into()).bearer().unwrap();
        assert_eq!(
            trimmed, "Bearer s3cret",
            "surrounding whitespace is trimmed"
        );
        let error = Secret("s3\ncret".into()).bearer().unwrap_err();
        assert!(!error.0.contains("s3"), "{error}");
        assert_eq!(format!("{:?}", Secret("s3cret".into())), "Secret(..)");
    }

    #[test]
    fn metadata_keys_are_checked() {
        assert_eq!(
            parse_metadata_pair("album=Summer = 2024").unwrap(),
            ("album".into(), "Summer = 2024".into())
        );
        assert!(parse_metadata_pair("novalue").is_err());
        assert!(parse_metadata_pair("bad key=x").is_err());
        assert!(parse_metadata_pair("=x").is_err());
    }

    #[test]
    fn sizes_and_rates_take_units() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("1e3").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert_eq!(parse_chunk_size("unlimited").unwrap().0, None);
        assert!(parse_chunk_size("0").is_err());
        assert_eq!(parse_rate("10MiB/s"), Ok(10 << 20));
        assert_eq!(parse_rate("500k"), Ok(500 << 10));
        assert!(parse_rate("0").is_err());
    }
}
