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
//!
//! Connections over the [`limits`](crate::limits) are closed as soon as they are accepted.
//!
//! A request head is capped separately from the read buffer (`max_header_size`: hyper answers
//! 431 past it, on HTTP/1.1 its `max_header_size`, on HTTP/2 `max_header_list_size`), so the
//! buffer can stay large for bodies while a client sending an endless head is refused early.

use crate::interim::{self, Requests};
use crate::limits::{Admission, ConnectionLimits, Peer, RefusalLog};
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
use std::net::SocketAddr;
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

/// How soon a connection whose first bytes are a beginning of the HTTP/2 preface (or of
/// `POST`...) is looked at again, the wait doubling up to [`UNDECIDED_RECHECK_MAX`] until it
/// says which protocol it speaks: a client split its preface, and is quick to send the rest,
/// or it is stalling, and costs a wake-up a second at most.
const UNDECIDED_RECHECK: Duration = Duration::from_millis(10);
const UNDECIDED_RECHECK_MAX: Duration = Duration::from_secs(1);

/// The protocol a connection's first bytes (or, over TLS, ALPN) show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Settings of every connection of one listener.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// How long a connection may go without sending a request head (or finishing its TLS
    /// handshake).
    pub(crate) head_timeout: Duration,
    /// The largest request head (request line and header fields; HTTP/2: the header list).
    pub(crate) max_header_size: usize,
    /// How many connections may be open.
    pub(crate) limits: ConnectionLimits,
    /// Every connection comes from a proxy: no per-client connection limit.
    pub(crate) behind_proxy: bool,
    /// Serve HTTPS with this certificate; `None` for plain HTTP.
    pub(crate) tls: Option<Arc<tls::Tls>>,
    /// HTTP/2's limits.
    pub(crate) http2: Http2Config,
}

impl Settings {
    /// The settings `config` asks for.
    pub(crate) fn of(config: &ServerConfig) -> Self {
        Settings {
            head_timeout: config.head_timeout,
            max_header_size: config.max_header_size,
            limits: config.connection_limits,
            behind_proxy: config.behind_proxy,
            tls: config.tls.clone(),
            http2: config.http2,
        }
    }
}

/// One builder per [`Protocol`], with the same settings.
struct Builders {
    http1: hyper::server::conn::http1::Builder,
    http2: Builder<TokioExecutor>,
}

impl Builders {
    fn new(settings: &Settings) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .max_buf_size(READ_BUFFER_MAX)
            .max_header_size(settings.max_header_size)
            .timer(TokioTimer::new())
            .header_read_timeout(settings.head_timeout);
        let mut http2 = Builder::new(TokioExecutor::new()).http2_only();
        let list_size = u32::try_from(settings.max_header_size).unwrap_or(u32::MAX);
        http2
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(list_size)
            .max_concurrent_streams(settings.http2.max_concurrent_streams)
            .initial_stream_window_size(settings.http2.stream_window)
            .initial_connection_window_size(settings.http2.connection_window)
            .max_frame_size(H2_MAX_FRAME_SIZE)
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        Builders { http1, http2 }
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
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let shared = Arc::new(Shared {
        router,
        builders: Builders::new(&settings),
        tls: settings.tls.as_ref().map(|tls| tls.acceptor()),
        head_timeout: settings.head_timeout,
        http2_idle_timeout: settings.http2.idle_timeout,
        stopping: CancellationToken::new(),
    });
    let admission = Admission::new(settings.limits, settings.behind_proxy);
    let mut refusals = RefusalLog::default();
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    back_off_after(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over a limit: closed at once (dropped), without reading or waiting on the client.
        let permit = match admission.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                refusals.refused(peer, refusal, &settings.limits);
                continue;
            }
        };
        // Small responses (offsets) must not wait for Nagle.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let shared = shared.clone();
        connections.spawn(async move {
            let _permit = permit;
            connection(stream, peer, shared).await;
        });
    }
    drop(listener);
    shared.stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One connection, from its first bytes to its close.
async fn connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
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
        None => serve_io(TokioIo::new(stream), protocol, peer, &shared).await,
        // Boxed: a task is as large as its largest state, and a TLS stream holds rustls's
        // connection inline; unboxed, every plain connection's task would carry that room
        // (10,000 held uploads: 42 MiB more).
        Some(acceptor) => Box::pin(tls_connection(stream, peer, acceptor, &shared)).await,
    }
}

/// A TLS connection: the handshake (bounded like a request head), then HTTP/2 or HTTP/1.1 as
/// ALPN chose.
async fn tls_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &tokio_rustls::TlsAcceptor,
    shared: &Shared,
) {
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
    serve_io(TokioIo::new(stream), protocol, peer, shared).await;
}

/// Serves HTTP on `io` until the connection ends; closes it gracefully when the server stops
/// and, on HTTP/2, once no stream has been open for the idle timeout.
async fn serve_io<I>(io: I, protocol: Protocol, peer: SocketAddr, shared: &Shared)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (io, requests) = interim::wrap(io);
    let router = shared.router.clone();
    match protocol {
        // HTTP/1.1 has its head timeout between requests: nothing is counted, no timer held.
        Protocol::Http1 => {
            let service = per_connection(router, requests, OpenRequests(None), Some(Peer(peer)));
            let connection = shared
                .builders
                .http1
                .serve_connection(io, TowerToHyperService::new(service));
            let connection = std::pin::pin!(connection);
            until_closed(
                connection,
                None::<Pin<Box<std::future::Pending<()>>>>,
                shared,
                |c| c.graceful_shutdown(),
            )
            .await;
        }
        // HTTP/2 has no such thing in hyper: the connection counts its requests, and the timer
        // is boxed so that a held HTTP/1.1 upload's task stays as small as it was.
        Protocol::Http2 => {
            let (open, watch_open) = watch::channel(0usize);
            let idle = Box::pin(idle_for(watch_open, shared.http2_idle_timeout));
            let open = OpenRequests(Some(Arc::new(open)));
            let service = per_connection(router, requests, open, Some(Peer(peer)));
            let connection = shared
                .builders
                .http2
                .serve_connection(io, TowerToHyperService::new(service));
            let connection = std::pin::pin!(connection);
            until_closed(connection, Some(idle), shared, |c| c.graceful_shutdown()).await;
        }
    }
}

/// Drives `connection` to its end, shutting it down gracefully when the server stops or
/// `idle` (HTTP/2's idle timeout) resolves.
async fn until_closed<C, E>(
    mut connection: Pin<&mut C>,
    mut idle: Option<Pin<Box<impl Future<Output = ()>>>>,
    shared: &Shared,
    graceful_shutdown: impl Fn(Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
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
                graceful_shutdown(connection.as_mut());
                closing = true;
            }
            () = idle_now, if !closing => {
                tracing::debug!(idle_timeout = ?shared.http2_idle_timeout, "HTTP/2 connection idle: closing it");
                graceful_shutdown(connection.as_mut());
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
/// HTTP/1.1), which closes when the router has produced the response, and the connection's
/// [`Peer`] (if known), and is counted in `open` until its response is sent.
pub(crate) fn per_connection(
    router: Router,
    requests: Requests,
    open: OpenRequests,
    peer: Option<Peer>,
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
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
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
/// them; `None` if the client closed without sending any. Bytes that begin the HTTP/2 preface
/// but do not finish it (`P`, `PRI * HT`) are looked at again until they decide, so that every
/// HTTP/1.1 connection is served with the same settings (the caller's timeout ends a client
/// that stops there).
async fn first_bytes(stream: &TcpStream) -> io::Result<Option<Protocol>> {
    let mut start = [0; H2_PREFACE.len()];
    let mut recheck = UNDECIDED_RECHECK;
    loop {
        let seen = stream.peek(&mut start).await?;
        match seen {
            0 => return Ok(None),
            _ if start[..seen] != H2_PREFACE[..seen] => return Ok(Some(Protocol::Http1)),
            _ if seen == H2_PREFACE.len() => return Ok(Some(Protocol::Http2)),
            // Peeking again at once would find the same bytes: wait for more.
            _ => {
                tokio::time::sleep(recheck).await;
                recheck = (recheck * 2).min(UNDECIDED_RECHECK_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What `first_bytes` makes of a connection whose client sent `sent` and then, if `close`,
    /// closed it (`None` also when it has not decided after a second).
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
        let protocol = tokio::time::timeout(Duration::from_secs(1), first_bytes(&server))
            .await
            .ok()
            .and_then(Result::unwrap);
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
        assert_eq!(protocol_after(b"PO", false).await, Some(Protocol::Http1));
    }

    #[tokio::test]
    async fn the_whole_preface_is_http2() {
        let mut preface = H2_PREFACE.to_vec();
        preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(protocol_after(&preface, false).await, Some(Protocol::Http2));
    }

    #[tokio::test]
    async fn part_of_the_preface_waits_for_the_rest() {
        let part = &H2_PREFACE[..10];
        assert_eq!(protocol_after(part, false).await, None);
        assert_eq!(protocol_after(b"P", true).await, None);
        // The rest, a moment later, decides.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b"P").await.unwrap();
        let decided = tokio::spawn(async move { first_bytes(&server).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"ATCH / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(decided.await.unwrap(), Some(Protocol::Http1));
    }

    #[tokio::test]
    async fn a_client_that_closes_silently_is_nothing() {
        assert_eq!(protocol_after(b"", true).await, None);
    }
}
