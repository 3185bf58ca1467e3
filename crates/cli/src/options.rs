//! Flags shared by the client subcommands, and their parsers.

use clap::Args;
use resumable_client::{ClientConfig, HeaderMap, HeaderName, HeaderValue, RetryPolicy};
use std::time::Duration;

/// How the client subcommands talk to the server.
#[derive(Args, Debug, Clone)]
pub(crate) struct HttpArgs {
    /// Extra header sent with every request, e.g. 'Authorization: Bearer TOKEN' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "'NAME: VALUE'", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,

    /// Stop retrying after this long without progress (e.g. 30s, 10m, 2h).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    give_up_after: Duration,

    /// Abandon (and retry) a request that moves no byte for this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    stall_timeout: Duration,
}

impl HttpArgs {
    /// The client configuration these flags describe.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        ClientConfig {
            headers,
            retry: RetryPolicy {
                give_up_after: self.give_up_after,
                ..RetryPolicy::default()
            },
            stall_timeout: self.stall_timeout,
            ..ClientConfig::default()
        }
    }
}

/// `Name: value`.
fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not a header like 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{:?} is not a valid header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of {name} holds characters a header cannot carry"))?;
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
