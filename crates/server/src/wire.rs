//! What every front-end shares.

use crate::AppState;
use crate::auth::{Auth, AuthError, Credentials, FrontEnd};
use crate::classify::Classified;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use resumable_core::{BodyError, BodyStream, Limits, Owner};
use std::sync::{Arc, Mutex};

/// The principal a request acts for, as the server's `--auth` mode authenticated it; a request
/// that does not authenticate is refused (401, or 403 for a front-end its token does not allow)
/// before its handler runs.
pub(crate) struct Principal {
    /// Who owns what the request touches.
    pub(crate) owner: Owner,
    /// The principal's own limits.
    pub(crate) limits: Limits,
    /// Whom the request's creations count against (see [`crate::limits::creator`]).
    pub(crate) creator: Option<String>,
}

/// The front-end a request speaks, for tokens limited to some; `None` for downloads, which
/// every token may make.
fn front_end(parts: &Parts) -> Option<FrontEnd> {
    let path = parts.uri.path();
    if path == "/status" || path == "/upload" {
        Some(FrontEnd::Simple)
    } else if crate::ietf::names_interop_version(path, &parts.headers) {
        Some(FrontEnd::Ietf)
    } else if parts.method == Method::GET {
        None
    } else {
        Some(FrontEnd::Tus)
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let auth = &state.config.auth;
        let behind_proxy = state.config.behind_proxy;
        if let Auth::None = **auth {
            let owner = Owner::anonymous();
            return Ok(Principal {
                creator: crate::limits::creator(parts, auth, &owner, behind_proxy),
                owner,
                limits: Limits::default(),
            });
        }
        // HTTP/2 may split cookies over several fields; the endpoint gets them as one.
        let cookies: Vec<&[u8]> = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let cookie = cookies.join(&b"; "[..]);
        let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
        let credentials = Credentials {
            authorization: header_bytes(&parts.headers, header::AUTHORIZATION.as_str())?,
            cookie: (!cookie.is_empty()).then_some(&cookie[..]),
            method: parts.method.as_str(),
            path,
        };
        let identity = auth
            .authenticate(credentials)
            .await
            .map_err(unauthenticated)?;
        if let (Some(allowed), Some(front_end)) = (&identity.front_ends, front_end(parts))
            && !allowed.contains(&front_end)
        {
            let message = format!("these credentials do not allow {front_end}");
            return Err(reject(StatusCode::FORBIDDEN, message));
        }
        Ok(Principal {
            creator: crate::limits::creator(parts, auth, &identity.owner, behind_proxy),
            owner: identity.owner,
            limits: identity.limits,
        })
    }
}

/// The answer to a request that does not authenticate.
fn unauthenticated(error: AuthError) -> Rejection {
    let challenge = |value: String| {
        HeaderValue::from_str(&value)
            .unwrap_or_else(|_| HeaderValue::from_static(r#"Bearer realm="resumable""#))
    };
    match error {
        AuthError::Missing => reject(StatusCode::UNAUTHORIZED, "authentication required")
            .with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="resumable""#),
            ),
        AuthError::Invalid(reason) => {
            let value = format!(
                r#"Bearer realm="resumable", error="invalid_token", error_description="{reason}""#
            );
            reject(StatusCode::UNAUTHORIZED, reason)
                .with_header(header::WWW_AUTHENTICATE, challenge(value))
        }
        AuthError::Refused {
            status: 403,
            challenge: _,
        } => reject(StatusCode::FORBIDDEN, "forbidden"),
        AuthError::Refused {
            challenge: given, ..
        } => {
            let value = given.unwrap_or_else(|| r#"Bearer realm="resumable""#.to_owned());
            reject(StatusCode::UNAUTHORIZED, "not authenticated")
                .with_header(header::WWW_AUTHENTICATE, challenge(value))
        }
        AuthError::Unavailable(reason) => reject(StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// The trailers of a request body, filled in once the body has been read to its end.
#[derive(Clone, Default)]
pub(crate) struct Trailers(Arc<Mutex<Option<HeaderMap>>>);

impl Trailers {
    /// The trailers, if the body had any (taken: a second call returns `None`).
    pub(crate) fn take(&self) -> Option<HeaderMap> {
        self.0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take()
    }
}

/// A request body as an upload stream that also keeps its trailers (HTTP/1.1 chunked trailers,
/// HTTP/2 trailing headers).
pub(crate) fn body_stream_with_trailers(body: Body) -> (BodyStream, Trailers) {
    let trailers = Trailers::default();
    let slot = trailers.clone();
    let stream = http_body_util::BodyStream::new(body)
        .filter_map(move |frame| {
            let item = match frame {
                Err(error) => Some(Err(BodyError::Interrupted(error.to_string()))),
                Ok(frame) => match frame.into_data() {
                    Ok(data) => Some(Ok(data)),
                    Err(frame) => {
                        if let Ok(headers) = frame.into_trailers() {
                            *slot.0.lock().unwrap_or_else(|poison| poison.into_inner()) =
                                Some(headers);
                        }
                        None
                    }
                },
            };
            std::future::ready(item)
        })
        .boxed();
    (stream, trailers)
}

/// A request body as an upload stream; a failed connection ends it with
/// [`BodyError::Interrupted`].
pub(crate) fn body_stream(body: Body) -> BodyStream {
    body.into_data_stream()
        .map(|chunk| chunk.map_err(|error| BodyError::Interrupted(error.to_string())))
        .boxed()
}

/// A refused request: a status, a short human-readable message, and any headers the protocol
/// requires on that status (e.g. `Upload-Offset` on a 409).
#[derive(Debug)]
pub(crate) struct Rejection {
    status: StatusCode,
    message: String,
    /// The body's media type: plain text, or problem details for the IETF front-end.
    content_type: &'static str,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The reason phrase of a status HTTP does not name (tus's 460).
    reason: Option<&'static str>,
}

impl Rejection {
    pub(crate) fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    pub(crate) fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// With `Retry-After` in whole seconds (rounded up), when there is a wait.
    pub(crate) fn with_retry_after(self, wait: Option<std::time::Duration>) -> Self {
        match wait {
            Some(wait) => {
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                self.with_header(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))
            }
            None => self,
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, self.content_type)],
            self.message,
        )
            .into_response();
        response.headers_mut().extend(self.headers);
        if let Some(reason) = self.reason {
            let phrase = hyper::ext::ReasonPhrase::from_static(reason.as_bytes());
            response.extensions_mut().insert(phrase);
        }
        response
    }
}

impl Rejection {
    /// A classified service error as plain text, with `Upload-Offset` whenever the stored
    /// count is known.
    pub(crate) fn plain(classified: Classified) -> Self {
        let rejection =
            reject(classified.status, classified.message).with_retry_after(classified.retry_after);
        match classified.stored {
            Some(stored) => rejection.with_header(
                HeaderName::from_static(resumable_proto::tus::UPLOAD_OFFSET),
                HeaderValue::from(stored.0),
            ),
            None => rejection,
        }
    }
}

/// A rejection whose body is `body`, of media type `content_type`.
pub(crate) fn reject_with_body(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Rejection {
    Rejection {
        content_type,
        ..reject(status, body)
    }
}

/// A rejection with a plain-text message.
pub(crate) fn reject(status: StatusCode, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        message: message.into(),
        content_type: "text/plain; charset=utf-8",
        headers: Vec::new(),
        reason: None,
    }
}

/// The announced body size, when the request has a valid `Content-Length`.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| resumable_proto::parse_u64(value.as_bytes()).ok())
}

/// The headers read through [`header_bytes`] whose grammar has commas of its own; in any other,
/// a comma means two values folded into one line (`Upload-Length: 3, 9`).
const COMMAS_ALLOWED: [&str; 3] = [
    resumable_proto::tus::UPLOAD_METADATA,
    resumable_proto::simple::FILE_ID,
    // Credentials with auth-params (`Digest a="1", b="2"`), passed on to a forward endpoint.
    "authorization",
];

/// The raw bytes of a header that carries one value, if present; an error naming it when it is
/// given twice, as two lines or (where its grammar has no commas) as one line folded from two.
/// The first value never silently wins over the second. This is the "exactly one" rule of every
/// front-end, for request headers and trailers alike; `name` is lowercase.
pub(crate) fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a [u8]>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let folded = !COMMAS_ALLOWED.contains(&name) && value.as_bytes().contains(&b',');
    if folded || values.next().is_some() {
        return Err(format!("{} must be given once", display_name(name)));
    }
    Ok(Some(value.as_bytes()))
}

/// A request header that carries one value (see [`single_header`]); a 400 when it is repeated.
pub(crate) fn header_bytes<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a [u8]>, Rejection> {
    single_header(headers, name).map_err(|message| reject(StatusCode::BAD_REQUEST, message))
}

/// `upload-length` as people write it: `Upload-Length`.
pub(crate) fn display_name(lowercase: &str) -> String {
    lowercase
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}
