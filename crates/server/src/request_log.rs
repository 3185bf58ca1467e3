//! One log line per request, and the request id.
//!
//! Each request gets an id: the client's `X-Request-Id` when it is sane (1 to 128 visible ASCII
//! characters), else a fresh random one. It is echoed as `X-Request-Id` in the response, and
//! every event logged while the request is handled (an upload created, completed, terminated)
//! carries it through the `request` span. When the request is over — its response body sent,
//! or the client gone — one line at info level (target `resumable::request`) says its id,
//! method, route (the matched pattern, such as `/files/{id}`, never the raw path or query, which
//! may hold a signed URL's signature), the upload id, status, the body bytes received and sent,
//! and the duration. No header is ever logged, so neither are `Authorization` nor cookies.
//!
//! Cost per request: one small shared record, a wrapper around the request and response bodies
//! (to count bytes) and a span; no boxed future — [`Logged`] wraps the router's future in place,
//! inside the box the outer router already has.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::Response;
use http_body::{Frame, SizeHint};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tracing::Span;

/// `X-Request-Id`.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a client.
const MAX_ID_LENGTH: usize = 128;

/// The longest upload id logged (ids are 32 characters; a longer path segment is cut).
const MAX_UPLOAD_LENGTH: usize = 64;

/// What one request's log line says, filled in as it goes; the line is written when the last
/// holder (the request body, the response body, the router's future) lets go.
struct Entry {
    started: Instant,
    id: HeaderValue,
    method: Method,
    route: OnceLock<Route>,
    /// 0 until there is a response.
    status: AtomicU16,
    received: AtomicU64,
    sent: AtomicU64,
}

/// The route a request matched.
struct Route {
    pattern: MatchedPath,
    /// The `{id}` segment of the path, when the pattern has one.
    upload: Option<Box<str>>,
}

/// The request's entry, in its extensions, for [`note_route`].
#[derive(Clone)]
struct Noted(Arc<Entry>);

impl Drop for Entry {
    fn drop(&mut self) {
        let duration_ms = self.started.elapsed().as_micros() as f64 / 1000.0;
        let id = self.id.to_str().unwrap_or_default();
        let route = self.route.get();
        let pattern = route.map_or("-", |route| route.pattern.as_str());
        let upload = route.and_then(|route| route.upload.as_deref());
        let received = *self.received.get_mut();
        let sent = *self.sent.get_mut();
        match *self.status.get_mut() {
            0 => tracing::info!(
                target: "resumable::request",
                request_id = id,
                method = %self.method,
                route = pattern,
                upload,
                received,
                sent,
                duration_ms,
                "request ended without a response"
            ),
            status => tracing::info!(
                target: "resumable::request",
                request_id = id,
                method = %self.method,
                route = pattern,
                upload,
                status,
                received,
                sent,
                duration_ms,
                "request"
            ),
        }
    }
}

/// The client's request id if it is sane, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let given = headers.get(REQUEST_ID).map(HeaderValue::as_bytes);
    match given {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_ID_LENGTH
                && id.iter().all(|byte| byte.is_ascii_graphic()) =>
        {
            // A copy: a clone would share (and keep alive) hyper's read buffer.
            HeaderValue::from_bytes(id).expect("visible ASCII is a header value")
        }
        _ => HeaderValue::from_str(&format!("{:016x}", fastrand::u64(..)))
            .expect("hex is a header value"),
    }
}

/// Starts the log of `request`: its id, its span, its body counted. The router's future goes
/// through [`Begun::wrap`].
pub(crate) fn begin(request: Request) -> (Request, Begun) {
    let id = request_id(request.headers());
    let span = tracing::info_span!(
        target: "resumable::request",
        "request",
        request_id = id.to_str().unwrap_or_default()
    );
    let entry = Arc::new(Entry {
        started: Instant::now(),
        id,
        method: request.method().clone(),
        route: OnceLock::new(),
        status: AtomicU16::new(0),
        received: AtomicU64::new(0),
        sent: AtomicU64::new(0),
    });
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(Noted(entry.clone()));
    let body = Body::new(Counted {
        inner: body,
        entry: entry.clone(),
        side: Side::Received,
    });
    (Request::from_parts(parts, body), Begun { entry, span })
}

/// A request whose log has begun.
pub(crate) struct Begun {
    entry: Arc<Entry>,
    span: Span,
}

impl Begun {
    /// `future` (the router answering the request) run in the request's span; its response
    /// gets `X-Request-Id` and its body counted.
    pub(crate) fn wrap<F>(self, future: F) -> Logged<F> {
        Logged {
            inner: future,
            span: self.span,
            entry: Some(self.entry),
        }
    }
}

pin_project_lite::pin_project! {
    /// The router's future for one request, in the request's span.
    pub(crate) struct Logged<F> {
        #[pin]
        inner: F,
        span: Span,
        entry: Option<Arc<Entry>>,
    }
}

impl<F> Future for Logged<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let Ok(response) = ready!(this.inner.poll(context));
        let entry = this.entry.take().expect("polled after it completed");
        entry
            .status
            .store(response.status().as_u16(), Ordering::Relaxed);
        let (mut parts, body) = response.into_parts();
        parts.headers.insert(REQUEST_ID, entry.id.clone());
        let body = Body::new(Counted {
            inner: body,
            entry,
            side: Side::Sent,
        });
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

/// Records the matched route and the upload id of a routed request (a route layer, so it sees
/// [`MatchedPath`]).
pub(crate) fn note_route(request: Request) -> Request {
    let extensions = request.extensions();
    if let (Some(Noted(entry)), Some(pattern)) =
        (extensions.get::<Noted>(), extensions.get::<MatchedPath>())
    {
        let upload = upload_segment(pattern.as_str(), request.uri().path());
        let _ = entry.route.set(Route {
            pattern: pattern.clone(),
            upload,
        });
    }
    request
}

/// The path segment where the pattern has `{id}`.
fn upload_segment(pattern: &str, path: &str) -> Option<Box<str>> {
    let index = pattern.split('/').position(|segment| segment == "{id}")?;
    let segment = path.split('/').nth(index)?;
    let end = segment
        .char_indices()
        .nth(MAX_UPLOAD_LENGTH)
        .map_or(segment.len(), |(at, _)| at);
    Some(segment[..end].into())
}

/// Which count a body adds to.
#[derive(Clone, Copy)]
enum Side {
    Received,
    Sent,
}

/// A body that counts its data bytes into the entry.
struct Counted {
    inner: Body,
    entry: Arc<Entry>,
    side: Side,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(context);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let count = match self.side {
                Side::Received => &self.entry.received,
                Side::Sent => &self.entry.sent,
            };
            count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_request_ids_are_kept_others_replaced() {
        let id = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(REQUEST_ID, HeaderValue::from_bytes(value).unwrap());
            request_id(&headers)
        };
        assert_eq!(id(b"abc-123_X.y:z"), "abc-123_X.y:z");
        let long = vec![b'a'; MAX_ID_LENGTH];
        assert_eq!(id(&long).as_bytes(), &long[..]);
        for insane in [
            &b"has space"[..],
            &[b'a'; MAX_ID_LENGTH + 1],
            b"\xe9t\xe9",
            b"tab\there",
        ] {
            let replaced = id(insane);
            assert_ne!(replaced.as_bytes(), insane);
            assert_eq!(replaced.len(), 16, "a fresh id");
        }
        assert_eq!(request_id(&HeaderMap::new()).len(), 16);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn the_upload_id_is_the_id_segment() {
        assert_eq!(
            upload_segment("/files/{id}", "/files/abc").as_deref(),
            Some("abc")
        );
        assert_eq!(upload_segment("/files/", "/files/"), None);
        let long = "x".repeat(500);
        let cut = upload_segment("/files/{id}", &format!("/files/{long}")).unwrap();
        assert_eq!(cut.len(), MAX_UPLOAD_LENGTH);
    }
}
