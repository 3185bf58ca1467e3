//! How hook events reach a receiver: [`HttpHook`] POSTs each event's JSON, signed with
//! HMAC-SHA256 when a key is given; [`CommandHook`] runs a program with the JSON on its stdin.
//! Both read the answer of a blocking event ([`resumable_core::HookAnswer`]) from the response
//! body (or the program's stdout): empty accepts; JSON may refuse or set metadata.
//!
//! The HTTP client speaks plain `http://` only (reqwest without a TLS backend): receivers are
//! expected beside the server (the same host or network). `https://` URLs are refused at
//! start-up rather than failing on the first event.

use hmac::{Hmac, Mac};
use resumable_core::{HookAnswer, HookCallError, HookEvent, HookTransport};
use sha2::Sha256;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The header carrying the signature: `sha256=` and the hex HMAC-SHA256 of the body.
pub const SIGNATURE_HEADER: &str = "resumable-signature";

/// The largest answer read from a receiver; a refusal's message and some metadata fit easily.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a hook transport cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum HookSetupError {
    /// The URL does not parse, or is not `http://`.
    #[error("hook URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The signing key is empty.
    #[error("the hook secret is empty")]
    EmptySecret,
    /// The HTTP client cannot be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// `sha256=HEX`: the value of [`SIGNATURE_HEADER`] for `body` under `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail; the match keeps it free of unwraps.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// The key a secret file holds: its bytes, less trailing line breaks (files written with
/// `echo` end with one, and the receiver's copy of the key usually does not).
pub fn secret_from_file_contents(contents: &[u8]) -> Result<Vec<u8>, HookSetupError> {
    let mut key = contents.to_vec();
    while key.last().is_some_and(|byte| matches!(byte, b'\n' | b'\r')) {
        key.pop();
    }
    if key.is_empty() {
        return Err(HookSetupError::EmptySecret);
    }
    Ok(key)
}

/// Reads an answer body: empty (or blank) accepts, anything else must be a [`HookAnswer`].
pub fn parse_answer(body: &[u8]) -> Result<HookAnswer, HookCallError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(HookAnswer::default());
    }
    serde_json::from_slice(body).map_err(|error| HookCallError::BadAnswer(error.to_string()))
}

/// Events POSTed as JSON to one URL.
pub struct HttpHook {
    client: reqwest::Client,
    url: reqwest::Url,
    key: Option<Vec<u8>>,
}

impl HttpHook {
    /// POSTs to `url` (plain `http://`), signing with `key` if given; each request may take
    /// `timeout`.
    pub fn new(url: &str, key: Option<Vec<u8>>, timeout: Duration) -> Result<Self, HookSetupError> {
        let bad = |reason: &str| HookSetupError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|error| bad(&error.to_string()))?;
        if parsed.scheme() != "http" {
            return Err(bad("only http:// is supported (no TLS in this build)"));
        }
        if key.as_ref().is_some_and(Vec::is_empty) {
            return Err(HookSetupError::EmptySecret);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|error| HookSetupError::Client(error.to_string()))?;
        Ok(HttpHook {
            client,
            url: parsed,
            key,
        })
    }
}

#[async_trait::async_trait]
impl HookTransport for HttpHook {
    async fn send(&self, event: &HookEvent) -> Result<HookAnswer, HookCallError> {
        let body = serde_json::to_vec(event).map_err(|error| {
            HookCallError::Unreachable(format!("cannot encode the event: {error}"))
        })?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json");
        if let Some(key) = &self.key {
            request = request.header(SIGNATURE_HEADER, sign(key, &body));
        }
        // Without the URL: it may hold credentials (user:password@), and the error is logged.
        let unreachable = |error: reqwest::Error| {
            let error = error.without_url();
            if error.is_timeout() {
                HookCallError::Unreachable(format!("timed out: {error}"))
            } else {
                HookCallError::Unreachable(error.to_string())
            }
        };
        let mut response = request.body(body).send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(HookCallError::Status(status.as_u16()));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if answer.len() + chunk.len() > MAX_ANSWER {
                return Err(HookCallError::BadAnswer(format!(
                    "longer than {MAX_ANSWER} bytes"
                )));
            }
            answer.extend_from_slice(&chunk);
        }
        parse_answer(&answer)
    }
}

/// Events given as JSON on the stdin of a program, run once per event; its stdout is the
/// answer and a non-zero exit a failure (retried for `post-*` events).
pub struct CommandHook {
    program: PathBuf,
}

impl CommandHook {
    /// Runs `program` (no arguments, no shell) for each event.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        CommandHook {
            program: program.into(),
        }
    }
}

#[async_trait::async_trait]
impl HookTransport for CommandHook {
    async fn send(&self, event: &HookEvent) -> Result<HookAnswer, HookCallError> {
        let failed = |error: std::io::Error| {
            HookCallError::Unreachable(format!("{}: {error}", self.program.display()))
        };
        let body = serde_json::to_vec(event).map_err(|error| {
            HookCallError::Unreachable(format!("cannot encode the event: {error}"))
        })?;
        let mut child = tokio::process::Command::new(&self.program)
            .env("RESUMABLE_HOOK_TYPE", event.kind.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // The caller's timeout drops this future: the program must not outlive it.
            .kill_on_drop(true)
            .spawn()
            .map_err(failed)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A program that ignores its stdin and exits early is not a failure.
            if let Err(error) = stdin.write_all(&body).await
                && error.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(failed(error));
            }
        }
        let mut answer = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let limit = u64::try_from(MAX_ANSWER).unwrap_or(u64::MAX);
            stdout
                .take(limit)
                .read_to_end(&mut answer)
                .await
                .map_err(failed)?;
        }
        let status = child.wait().await.map_err(failed)?;
        if !status.success() {
            return Err(HookCallError::Status(
                status
                    .code()
                    .and_then(|code| u16::try_from(code).ok())
                    .unwrap_or(u16::MAX),
            ));
        }
        parse_answer(&answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn secret_files_lose_their_trailing_line_break() {
        assert_eq!(secret_from_file_contents(b"key\n").unwrap(), b"key");
        assert_eq!(secret_from_file_contents(b"key\r\n").unwrap(), b"key");
        assert_eq!(secret_from_file_contents(b" key ").unwrap(), b" key ");
        assert!(secret_from_file_contents(b"\n").is_err());
    }

    #[test]
    fn answers_accept_refuse_or_set_metadata() {
        assert_eq!(parse_answer(b"").unwrap(), HookAnswer::default());
        assert_eq!(parse_answer(b" \n").unwrap(), HookAnswer::default());
        let answer = parse_answer(
            br#"{"reject":{"status":422,"message":"no"},"metadata":{"a":"b","c":null}}"#,
        )
        .unwrap();
        let rejection = answer.reject.unwrap();
        assert_eq!(rejection.status, Some(422));
        assert_eq!(rejection.message.as_deref(), Some("no"));
        assert_eq!(answer.metadata["a"].as_deref(), Some("b"));
        assert_eq!(answer.metadata["c"], None);
        assert!(matches!(
            parse_answer(b"yes"),
            Err(HookCallError::BadAnswer(_))
        ));
    }

    #[test]
    fn only_plain_http_urls() {
        let timeout = Duration::from_secs(1);
        assert!(HttpHook::new("http://127.0.0.1:9/hook", None, timeout).is_ok());
        assert!(HttpHook::new("https://example.com/hook", None, timeout).is_err());
        assert!(HttpHook::new("not a url", None, timeout).is_err());
        assert!(HttpHook::new("http://127.0.0.1:9/", Some(Vec::new()), timeout).is_err());
    }
}
