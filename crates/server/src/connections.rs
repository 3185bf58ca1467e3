//! Accepting connections and serving the router on each, with our own HTTP settings.
//!
//! `axum::serve` would do this but offers no way to size hyper's read buffer, and that buffer is
//! a large part of the memory of an upload in flight: hyper grows it up to 408 KiB per
//! connection, so 200 concurrent uploads could hold 80 MiB in read buffers alone.
//!
//! Whether a connection speaks HTTP/1.1 or HTTP/2 (prior knowledge, as from a proxy) is told by
//! peeking at its first bytes, not by hyper-util's detection: that one reads up to 24 bytes and
//! hands them back to hyper as a first read, which leaves a partial request head in hyper's
//! 8 KiB read buffer and makes it grow to 16 KiB for the life of the connection (10,000 held
//! uploads: 78 MiB). Peeking also means a connection that has sent nothing holds no HTTP state.
//!
//! With TLS ([`crate::tls`]) the first bytes only say that the client is there; the handshake
//! follows (bounded by the head timeout) and ALPN picks HTTP/2 (`h2`) or HTTP/1.1.
//!
//! Every connection's IO (the socket, or the TLS stream over it) is wrapped for
//! [`interim`](crate::interim) responses, which its HTTP/1.1 requests may queue; on HTTP/2 the
//! wrapper is idle.
//!
//! HTTP/2 connections get what hyper leaves to us: a limit on concurrent streams, flow-control
//! windows sized for uploads, pings that find dead peers, and an idle timeout (hyper has none
//! for HTTP/2): each connection counts its requests from arrival until their response has been
//! sent, and one that has had none open for [`Http2Config::idle_timeout`] is shut down
//! gracefully (`GOAWAY`, then closed).

use crate::interim::{self, Requests};
use crate::{Http2Config, ServerConfig, tls};
use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The largest read buffer hyper may grow per connection (bodies arrive in chunks of at most
/// this size). Measured with 200 concurrent 16 MiB uploads and one 1 GiB upload: hyper's
/// default (408 KiB) peaked at 146 MiB RSS; 256 KiB and 128 KiB at 107 MiB; 64 KiB at 103 MiB
/// but cost a single upload a fifth more CPU in system calls.
const READ_BUFFER_MAX: usize = 256 * 1024;

/// The largest HTTP/2 frame a client may send (SETTINGS_MAX_FRAME_SIZE). Each DATA frame
/// arrives as one chunk of the body, and h2 reads a whole frame into its buffer. One 1 GiB
/// upload over h2c (bench/RESULTS.md): hyper's 16 KiB cost the server 0.65–0.80 CPU s/GiB,
/// 64 KiB 0.43–0.57 (HTTP/1.1: 0.62–0.80).
const H2_MAX_FRAME_SIZE: u32 = 64 * 1024;

/// How often an HTTP/2 connection is pinged, and how long the answer may take before the
/// connection counts as dead and is closed (its bodies cut, their bytes kept).
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection's first bytes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
    /// The bytes so far are a beginning of the HTTP/2 preface: hyper-util reads on to decide.
    Undecided,
}

/// One builder per [`Protocol`], with the same settings.
struct Builders {
    http1: Builder<TokioExecutor>,
    http2: Builder<TokioExecutor>,
    undecided: Builder<TokioExecutor>,
}

impl Builders {
    fn new(head_timeout: Duration, http2: &Http2Config) -> Self {
        let builder = || {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .max_buf_size(READ_BUFFER_MAX)
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(http2.max_concurrent_streams)
                .initial_stream_window_size(http2.stream_window)
                .initial_connection_window_size(http2.connection_window)
                .max_frame_size(H2_MAX_FRAME_SIZE)
                .keep_alive_interval(H2_PING_INTERVAL)
                .keep_alive_timeout(H2_PING_TIMEOUT);
            builder
        };
        Builders {
            http1: builder().http1_only(),
            http2: builder().http2_only(),
            undecided: builder(),
        }
    }

    fn get(&self, protocol: Protocol) -> &Builder<TokioExecutor> {
        match protocol {
            Protocol::Http1 => &self.http1,
            Protocol::Http2 => &self.http2,
            Protocol::Undecided => &self.undecided,
        }
    }
}

/// What every connection is served with.
struct Shared {
    router: Router,
    builders: Builders,
    tls: Option<tokio_rustls::TlsAcceptor>,
    head_timeout: Duration,
    http2_idle_timeout: Duration,
    /// Cancelled when the server stops: connections not yet serving end, serving ones finish
    /// their requests and close.
    stopping: CancellationToken,
}

/// Serves `router` on every connection `listener` accepts until `shutdown` resolves, then stops
/// accepting, lets each connection finish the requests it is serving, and returns once all have.
pub(crate) fn serve<S: Future<Output = ()>>(
    listener: TcpListener,
    router: Router,
    config: &ServerConfig,
    shutdown: S,
) -> impl Future<Output = io::Result<()>> + use<S> {
    let shared = Arc::new(Shared {
        router,
        builders: Builders::new(config.head_timeout, &config.http2),
        tls: config.tls.as_ref().map(|tls| tls.acceptor()),
        head_timeout: config.head_timeout,
        http2_idle_timeout: config.http2.idle_timeout,
        stopping: CancellationToken::new(),
    });
    accept(listener, shared, shutdown)
}

async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    back_off_after(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small responses (offsets) must not wait for Nagle.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        connections.spawn(connection(stream, shared.clone()));
    }
    drop(listener);
    shared.stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One connection, from its first bytes to its close.
async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let first = tokio::time::timeout(shared.head_timeout, first_bytes(&stream));
    let protocol = tokio::select! {
        protocol = first => match protocol {
            Ok(Ok(Some(protocol))) => protocol,
            Ok(Ok(None)) => return,
            Ok(Err(error)) => return tracing::debug!(%error, "connection lost before a request"),
            Err(_) => return tracing::debug!("connection silent for too long: closed"),
        },
        () = shared.stopping.cancelled() => return,
    };
    match &shared.tls {
        None => serve_io(TokioIo::new(stream), protocol, &shared).await,
        // Boxed: a task is as large as its largest state, and a TLS stream holds rustls's
        // connection inline; unboxed, every plain connection's task would carry that room
        // (10,000 held uploads: 42 MiB more).
        Some(acceptor) => Box::pin(tls_connection(stream, acceptor, &shared)).await,
    }
}

/// A TLS connection: the handshake (bounded like a request head), then HTTP/2 or HTTP/1.1 as
/// ALPN chose.
async fn tls_connection(stream: TcpStream, acceptor: &tokio_rustls::TlsAcceptor, shared: &Shared) {
    let handshake = tokio::time::timeout(shared.head_timeout, acceptor.accept(stream));
    let stream = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return tracing::debug!(%error, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake took too long: closed"),
        },
        () = shared.stopping.cancelled() => return,
    };
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(tls::ALPN_H2) => Protocol::Http2,
        // `http/1.1`, or a client that offered no ALPN: HTTP/2 over TLS needs `h2` (RFC 9113 §3.2).
        _ => Protocol::Http1,
    };
    serve_io(TokioIo::new(stream), protocol, shared).await;
}

/// Serves HTTP on `io` until the connection ends; closes it gracefully when the server stops
/// and, on HTTP/2, once no stream has been open for the idle timeout.
async fn serve_io<I>(io: I, protocol: Protocol, shared: &Shared)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (io, requests) = interim::wrap(io);
    // HTTP/1.1 has its head timeout between requests; HTTP/2 has no such thing in hyper. Only
    // connections that may be HTTP/2 count their requests (and hold the timer, boxed: a held
    // HTTP/1.1 upload's task stays as small as it was).
    let idle_timeout = shared.http2_idle_timeout;
    let (open, mut idle) = if protocol == Protocol::Http1 {
        (OpenRequests(None), None)
    } else {
        let (open, watch_open) = watch::channel(0usize);
        let idle = Box::pin(idle_for(watch_open, idle_timeout));
        (OpenRequests(Some(Arc::new(open))), Some(idle))
    };
    let service = TowerToHyperService::new(per_connection(shared.router.clone(), requests, open));
    let mut connection =
        std::pin::pin!(shared.builders.get(protocol).serve_connection(io, service));
    let mut closing = false;
    loop {
        let idle_now = async {
            match idle.as_mut() {
                Some(idle) => idle.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = shared.stopping.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = idle_now, if !closing => {
                tracing::debug!(?idle_timeout, "HTTP/2 connection idle: closing it");
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Resolves once no request has been open on a connection for `timeout`.
async fn idle_for(mut open: watch::Receiver<usize>, timeout: Duration) {
    loop {
        if open.wait_for(|open| *open == 0).await.is_err() {
            // The service is gone with the connection.
            return std::future::pending().await;
        }
        if tokio::time::timeout(timeout, open.changed()).await.is_err() {
            return;
        }
    }
}

/// Counts a connection's requests from their arrival until their response has been sent (or
/// they are dropped); `None` counts nothing.
#[derive(Clone)]
pub(crate) struct OpenRequests(Option<Arc<watch::Sender<usize>>>);

impl OpenRequests {
    /// One more request, until the returned guard is dropped.
    fn open(&self) -> Option<OpenRequest> {
        let open = self.0.as_ref()?;
        open.send_modify(|open| *open += 1);
        Some(OpenRequest(open.clone()))
    }

    /// For a connection nobody watches.
    #[cfg(test)]
    pub(crate) fn unwatched() -> Self {
        OpenRequests(None)
    }
}

struct OpenRequest(Arc<watch::Sender<usize>>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}

/// A response body that keeps its request counted until hyper drops it (all sent, or the
/// stream reset).
struct Counted {
    body: axum::body::Body,
    _open: OpenRequest,
}

impl hyper::body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// `router` as one connection serves it: each request gets its [`interim::Interim`] (if
/// HTTP/1.1), which closes when the router has produced the response, and is counted in `open`
/// until its response is sent.
pub(crate) fn per_connection(
    router: Router,
    requests: Requests,
    open: OpenRequests,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    let mut router = router;
    tower::service_fn(move |request: Request<Incoming>| {
        let counted = open.open();
        let mut request = request.map(axum::body::Body::new);
        requests.begin(&mut request);
        // A router is always ready: called directly, its future holds no copy of it.
        let response = tower::Service::call(&mut router, request);
        let requests = requests.clone();
        async move {
            let response = response.await?;
            requests.end();
            Ok(match counted {
                Some(counted) => response.map(|body| {
                    axum::body::Body::new(Counted {
                        body,
                        _open: counted,
                    })
                }),
                None => response,
            })
        }
    })
}

/// A failed accept: a connection that died in the queue is nobody's problem; anything else
/// (such as running out of file descriptors) is logged and waited out, so the loop does not spin.
async fn back_off_after(error: io::Error) {
    let gone = matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    );
    if !gone {
        tracing::error!(%error, "cannot accept connections; retrying in a second");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits for a connection's first bytes and tells its protocol from them, without consuming
/// them; `None` if the client closed without sending any.
async fn first_bytes(stream: &TcpStream) -> io::Result<Option<Protocol>> {
    let mut start = [0; H2_PREFACE.len()];
    let seen = stream.peek(&mut start).await?;
    Ok(match seen {
        0 => None,
        _ if start[..seen] != H2_PREFACE[..seen] => Some(Protocol::Http1),
        _ if seen == H2_PREFACE.len() => Some(Protocol::Http2),
        _ => Some(Protocol::Undecided),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What `first_bytes` makes of a connection whose client sent `sent` and then, if `close`,
    /// closed it.
    async fn protocol_after(sent: &[u8], close: bool) -> Option<Protocol> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(sent).await.unwrap();
        if close {
            client.shutdown().await.unwrap();
        }
        let protocol = first_bytes(&server).await.unwrap();
        // Peeking leaves the bytes for hyper.
        let mut again = vec![0; sent.len()];
        let peeked = server.peek(&mut again).await.unwrap();
        assert_eq!(&again[..peeked], &sent[..peeked]);
        protocol
    }

    #[tokio::test]
    async fn a_request_line_is_http1() {
        let request = b"PATCH /files/abc HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(protocol_after(request, false).await, Some(Protocol::Http1));
        assert_eq!(protocol_after(b"P", true).await, Some(Protocol::Undecided));
        assert_eq!(protocol_after(b"PO", false).await, Some(Protocol::Http1));
    }

    #[tokio::test]
    async fn the_whole_preface_is_http2() {
        let mut preface = H2_PREFACE.to_vec();
        preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(protocol_after(&preface, false).await, Some(Protocol::Http2));
    }

    #[tokio::test]
    async fn part_of_the_preface_is_left_to_hyper_util() {
        let part = &H2_PREFACE[..10];
        assert_eq!(protocol_after(part, false).await, Some(Protocol::Undecided));
    }

    #[tokio::test]
    async fn a_client_that_closes_silently_is_nothing() {
        assert_eq!(protocol_after(b"", true).await, None);
    }
}
