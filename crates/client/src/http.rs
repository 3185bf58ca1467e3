//! One HTTP connection pool with the caller's extra headers, and the helpers every protocol uses
//! to turn responses into typed values or [`ClientError`]s.

use crate::ClientError;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use resumable_proto::ietf::PROBLEM_JSON;
use resumable_proto::tus::media_type_is;
use serde::Deserialize;
use std::time::Duration;

/// How much of an error body is kept for the message.
const MESSAGE_LIMIT: usize = 200;

/// The HTTP side of a [`crate::Client`].
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    /// Sent with every request (authentication, routing...).
    headers: HeaderMap,
}

impl Http {
    pub(crate) fn new(headers: HeaderMap, connect_timeout: Duration) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("resumable/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|error| ClientError::Config(error.to_string()))?;
        Ok(Http { client, headers })
    }

    /// A request with the extra headers already set.
    pub(crate) fn request(&self, method: Method, url: &Url) -> RequestBuilder {
        self.client
            .request(method, url.clone())
            .headers(self.headers.clone())
    }

    /// Sends `request`, turning transport failures into [`ClientError::Network`].
    pub(crate) async fn send(
        &self,
        method: &'static str,
        url: &Url,
        request: RequestBuilder,
    ) -> Result<Response, ClientError> {
        request.send().await.map_err(|source| ClientError::Network {
            method,
            url: url.to_string(),
            source,
        })
    }
}

/// The error for an unexpected answer about an existing upload: [`ClientError::Gone`] for `404`
/// and `410`, else as [`unexpected`].
pub(crate) async fn unexpected_for_upload(
    method: &'static str,
    url: &Url,
    response: Response,
) -> ClientError {
    let status = response.status();
    if matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE) {
        return ClientError::Gone {
            url: url.to_string(),
            status,
        };
    }
    unexpected(method, url, response).await
}

/// The error for an unexpected status, with the start of the body as the server's reason (of
/// problem details, as the IETF draft's refusals are: their `detail`); [`ClientError::Refused`]
/// for `401` and `403`.
///
/// `403` counts as refused credentials too: it is what servers answer to credentials that are
/// valid but not allowed this request. (tus also answers `403` to a `PATCH` of a final upload,
/// which this client never sends.)
pub(crate) async fn unexpected(method: &'static str, url: &Url, response: Response) -> ClientError {
    let status = response.status();
    let challenge = header_text(&response, "www-authenticate").map(str::to_owned);
    let problem = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| media_type_is(value.as_bytes(), PROBLEM_JSON));
    let body = response.text().await.unwrap_or_default();
    let reason = if problem {
        problem_detail(&body).unwrap_or(body)
    } else {
        body
    };
    let message: String = reason.trim().chars().take(MESSAGE_LIMIT).collect();
    let url = url.to_string();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        // A HEAD answer has no body: the challenge is then the only reason given.
        let message = match challenge {
            _ if !message.is_empty() => message,
            Some(challenge) => challenge.chars().take(MESSAGE_LIMIT).collect(),
            None => status.to_string(),
        };
        return ClientError::Refused {
            method,
            url,
            status,
            message,
        };
    }
    ClientError::Status {
        method,
        url,
        status,
        message,
    }
}

/// What an `application/problem+json` body (RFC 9457) says went wrong: its `detail`, else its
/// `title`; `None` for a body that is not such an object.
fn problem_detail(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Problem {
        title: Option<String>,
        detail: Option<String>,
    }
    let problem: Problem = serde_json::from_str(body).ok()?;
    problem
        .detail
        .or(problem.title)
        .filter(|text| !text.trim().is_empty())
}

/// A header's value as text, when present.
pub(crate) fn header_text<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// A strict decimal header (`Upload-Offset`, `Upload-Length`, ...), when present.
pub(crate) fn number_header(
    response: &Response,
    url: &Url,
    name: &'static str,
) -> Result<Option<u64>, ClientError> {
    response
        .headers()
        .get(name)
        .map(|value| {
            resumable_proto::tus::parse_number(name, value.as_bytes())
                .map_err(|error| protocol(url, error.to_string()))
        })
        .transpose()
}

/// A strict decimal header that must be present.
pub(crate) fn required_number(
    response: &Response,
    url: &Url,
    name: &'static str,
) -> Result<u64, ClientError> {
    number_header(response, url, name)?
        .ok_or_else(|| protocol(url, format!("the answer has no {name} header")))
}

/// A [`ClientError::Protocol`] about `url`.
pub(crate) fn protocol(url: &Url, reason: impl Into<String>) -> ClientError {
    ClientError::Protocol {
        url: url.to_string(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_details_give_their_detail() {
        let body = r#"{"type":"https://iana.org/assignments/http-problem-types#mismatching-upload-offset","title":"offset from request does not match offset of resource","detail":"Upload-Offset 5 given, 3 stored","expected-offset":3,"provided-offset":5}"#;
        assert_eq!(
            problem_detail(body).as_deref(),
            Some("Upload-Offset 5 given, 3 stored")
        );
        assert_eq!(
            problem_detail(r#"{"type":"about:blank","title":"too large"}"#).as_deref(),
            Some("too large")
        );
        for not_one in [
            "",
            "not json",
            "[1]",
            r#"{"detail":7}"#,
            r#"{"detail":" "}"#,
        ] {
            assert_eq!(problem_detail(not_one), None, "{not_one:?}");
        }
    }
}
