//! What can go wrong, and what the retry loop does about each kind.

use reqwest::StatusCode;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Why a client operation failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The request did not get an answer: refused connection, reset, DNS, TLS, timeout.
    #[error("{method} {url}: {}", root_cause(.source))]
    Network {
        /// The request's method.
        method: &'static str,
        /// The request's URL.
        url: String,
        /// What reqwest reported.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a status the operation cannot use.
    #[error("{method} {url} answered {status}{}", describe(.message))]
    Status {
        /// The request's method.
        method: &'static str,
        /// The request's URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the response body, which servers use for a human-readable reason.
        message: String,
    },
    /// The server refused the request's credentials (`401`, or `403`): missing, wrong or
    /// expired, or not allowed to do this. Retrying with the same headers cannot help.
    #[error("the server refused the credentials: {message} ({method} {url} answered {status})")]
    Refused {
        /// The request's method.
        method: &'static str,
        /// The request's URL.
        url: String,
        /// `401` or `403`.
        status: StatusCode,
        /// The server's reason: the start of its body, else its `WWW-Authenticate` challenge.
        message: String,
    },
    /// The upload behind a URL no longer exists (`404` or `410`): expired, deleted, or never ours.
    #[error("the upload {url} no longer exists ({status})")]
    Gone {
        /// The upload URL.
        url: String,
        /// `404` or `410`.
        status: StatusCode,
    },
    /// The server's answer breaks the protocol (missing or malformed header, offset going
    /// backwards, ...).
    #[error("invalid answer from {url}: {reason}")]
    Protocol {
        /// The request's URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The server does not offer what was asked for (e.g. `--checksum` without the tus checksum
    /// extension).
    #[error("{0}")]
    Unsupported(String),
    /// The file is larger than the server takes (the IETF draft's `Upload-Limit: max-size`),
    /// refused before sending it.
    #[error(
        "{} is {size} bytes, more than the {max_size} bytes {url} accepts (its Upload-Limit \
         max-size)",
        .path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The server's `max-size`.
        max_size: u64,
        /// The endpoint or upload URL that announced it.
        url: String,
    },
    /// The client's configuration is unusable (e.g. a TLS backend that fails to start).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// Reading the file to upload, or writing a download, failed.
    #[error("{}: {source}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file changed (size or modification time) while it was being uploaded.
    #[error("{} changed while it was being uploaded; upload it again", .0.display())]
    SourceChanged(PathBuf),
    /// Another process is uploading the same file to the same endpoint right now.
    #[error("{} is being uploaded to this endpoint by another resumable process", .0.display())]
    AlreadyRunning(PathBuf),
    /// The resume state directory cannot be used.
    #[error("resume state in {}: {source}", .path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A request sent or received nothing for too long.
    #[error("{method} {url}: no progress for {after:.1?}")]
    Stalled {
        /// The request's method.
        method: &'static str,
        /// The request's URL.
        url: String,
        /// How long nothing moved.
        after: Duration,
    },
    /// Retries went on for the configured time without the server storing a byte more.
    #[error("gave up after {after:.1?} without progress; last error: {last}")]
    GaveUp {
        /// How long the client kept trying.
        after: Duration,
        /// The last error seen.
        last: Box<ClientError>,
    },
}

/// The innermost error: reqwest's own message ("error sending request for url") says less than
/// the I/O error under it ("Connection refused").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn describe(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// What the upload loop does after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Wait (backoff), ask the server for its offset, continue from there.
    Retry,
    /// The upload is gone: forget it and start a new one.
    StartOver,
    /// Nothing to retry: report the error.
    Fail,
}

impl ClientError {
    /// What the upload loop does about this error.
    pub(crate) fn recovery(&self) -> Recovery {
        match self {
            ClientError::Network { source, .. } if source.is_builder() => Recovery::Fail,
            ClientError::Network { .. } | ClientError::Stalled { .. } => Recovery::Retry,
            ClientError::Status { status, .. } if is_transient(*status) => Recovery::Retry,
            ClientError::Gone { .. } => Recovery::StartOver,
            ClientError::Status { .. }
            | ClientError::Refused { .. }
            | ClientError::Protocol { .. }
            | ClientError::Unsupported(_)
            | ClientError::TooLarge { .. }
            | ClientError::Config(_)
            | ClientError::File { .. }
            | ClientError::SourceChanged(_)
            | ClientError::AlreadyRunning(_)
            | ClientError::State { .. }
            | ClientError::GaveUp { .. } => Recovery::Fail,
        }
    }
}

/// Statuses worth retrying after re-reading the server's offset.
///
/// - `409`: the offset we sent is not the server's (a previous request stored more or less than
///   we know); the retry starts from the server's offset.
/// - `423`: another request holds the upload (e.g. our own previous, half-dead connection).
/// - `460`: checksum mismatch: the chunk was damaged on the way and discarded.
/// - `408`, `429`, and `5xx` except `501`/`505` (which will not change by retrying).
fn is_transient(status: StatusCode) -> bool {
    match status.as_u16() {
        408 | 409 | 423 | 429 | 460 => true,
        501 | 505 => false,
        code => (500..600).contains(&code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> ClientError {
        ClientError::Status {
            method: "PATCH",
            url: "http://x/files/1".into(),
            status: StatusCode::from_u16(code).unwrap(),
            message: String::new(),
        }
    }

    #[test]
    fn transient_statuses_are_retried() {
        for code in [408, 409, 423, 429, 460, 500, 502, 503, 504, 507] {
            assert_eq!(status(code).recovery(), Recovery::Retry, "{code}");
        }
        for code in [400, 401, 403, 412, 413, 415, 501, 505] {
            assert_eq!(status(code).recovery(), Recovery::Fail, "{code}");
        }
    }

    #[test]
    fn refused_credentials_are_permanent() {
        let refused = ClientError::Refused {
            method: "HEAD",
            url: "http://x/files/1".into(),
            status: StatusCode::UNAUTHORIZED,
            message: "unknown token".into(),
        };
        assert_eq!(refused.recovery(), Recovery::Fail);
        assert_eq!(
            refused.to_string(),
            "the server refused the credentials: unknown token \
             (HEAD http://x/files/1 answered 401 Unauthorized)"
        );
    }

    #[test]
    fn gone_uploads_start_over() {
        let gone = ClientError::Gone {
            url: "http://x/files/1".into(),
            status: StatusCode::GONE,
        };
        assert_eq!(gone.recovery(), Recovery::StartOver);
    }

    #[test]
    fn a_file_over_the_servers_limit_is_not_retried() {
        let error = ClientError::TooLarge {
            path: "big.iso".into(),
            size: 11,
            max_size: 10,
            url: "http://x/files/".into(),
        };
        assert_eq!(error.recovery(), Recovery::Fail);
        assert_eq!(
            error.to_string(),
            "big.iso is 11 bytes, more than the 10 bytes http://x/files/ accepts (its \
             Upload-Limit max-size)"
        );
    }

    #[test]
    fn messages_name_the_request() {
        let text = ClientError::Status {
            method: "POST",
            url: "http://x/files/".into(),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: "upload is larger than 10 bytes".into(),
        }
        .to_string();
        assert_eq!(
            text,
            "POST http://x/files/ answered 413 Payload Too Large: upload is larger than 10 bytes"
        );
    }
}
