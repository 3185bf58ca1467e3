//! Cross-origin access, so a page on another origin can upload.
//!
//! Hand-written rather than tower-http's `CorsLayer` because that layer answers every `OPTIONS`
//! request itself, which would hide tus's `OPTIONS` (capability discovery). Here only a real
//! preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered directly.
//! Credentials (cookies) are allowed only where they are how uploads authenticate (`--auth
//! forward`) and only for origins listed by name, never with `*`: then a listed page's
//! `fetch(..., {credentials: 'include'})` carries its session cookie. Elsewhere uploads
//! authenticate with headers, so reflecting the requested headers is safe.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Which origins may use the server from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Every origin (`*`).
    Any,
    /// Only these origins (e.g. `https://example.com`); an empty list disables CORS.
    List(Vec<String>),
}

/// Methods a cross-origin page may use.
const METHODS: &str = "GET, HEAD, POST, PATCH, DELETE, OPTIONS";

/// Response headers a cross-origin page may read: everything the three protocols answer with.
const EXPOSED: &str = "Location, Upload-Offset, Upload-Length, Upload-Defer-Length, \
    Upload-Metadata, Upload-Expires, Upload-Concat, Upload-Complete, Upload-Incomplete, \
    Upload-Limit, Upload-Draft-Interop-Version, Tus-Resumable, Tus-Version, Tus-Extension, \
    Tus-Max-Size, Tus-Checksum-Algorithm, Content-Range, Content-Disposition, Content-Length, \
    WWW-Authenticate, X-Request-Id";

/// Request headers allowed when a preflight does not list any.
const ALLOWED: &str = "Authorization, Content-Type, Content-Disposition, Content-Digest, \
    Repr-Digest, Upload-Offset, Upload-Length, Upload-Defer-Length, Upload-Metadata, \
    Upload-Concat, Upload-Checksum, Upload-Complete, Upload-Incomplete, \
    Upload-Draft-Interop-Version, Tus-Resumable, X-HTTP-Method-Override, X-Requested-With, \
    X-File-Id, X-Start-Byte, X-File-Size, Range, X-Request-Id";

impl CorsOrigins {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match self {
            CorsOrigins::Any => Some(HeaderValue::from_static("*")),
            CorsOrigins::List(origins) => origins
                .iter()
                .any(|allowed| allowed.as_bytes() == origin.as_bytes())
                // A copy: a clone would share, and so keep alive, the buffer the request head
                // was read into for as long as the response takes.
                .then(|| HeaderValue::from_bytes(origin.as_bytes()).expect("was a header value")),
        }
    }
}

/// What the middleware allows.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) origins: CorsOrigins,
    /// Send `Access-Control-Allow-Credentials: true` (cookies authenticate, origins are named).
    pub(crate) credentials: bool,
}

/// The middleware: answers preflights, and marks other responses readable by allowed origins.
pub(crate) async fn cors(
    State(policy): State<Arc<Policy>>,
    request: Request,
    next: Next,
) -> Response {
    let origins = &policy.origins;
    let allowed = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|origin| origins.allow(origin));
    let Some(allowed) = allowed else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut response = preflight_response(allowed, request.headers());
        allow_credentials(&mut response, policy.credentials);
        return response;
    }
    let mut response = next.run(request).await;
    allow_credentials(&mut response, policy.credentials);
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    response
}

fn allow_credentials(response: &mut Response, credentials: bool) {
    if credentials {
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

fn preflight_response(allowed: HeaderValue, request: &HeaderMap) -> Response {
    let requested = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(ALLOWED));
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}
