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
//! Every connection's socket is wrapped for [`interim`](crate::interim) responses, which its
//! HTTP/1.1 requests may queue; on HTTP/2 the wrapper is idle.
//!
//! Connections over the [`limits`](crate::limits) are closed as soon as they are accepted.
//!
//! A request head is capped separately from the read buffer (`max_header_size`: hyper answers
//! 431 past it, on HTTP/1.1 its `max_header_size`, on HTTP/2 `max_header_list_size`), so the
//! buffer can stay large for bodies while a client sending an endless head is refused early.

use crate::interim::{self, Requests};
use crate::limits::{Admission, ConnectionLimits, Peer, RefusalLog};
use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The largest read buffer hyper may grow per connection (bodies arrive in chunks of at most
/// this size). Measured with 200 concurrent 16 MiB uploads and one 1 GiB upload: hyper's
/// default (408 KiB) peaked at 146 MiB RSS; 256 KiB and 128 KiB at 107 MiB; 64 KiB at 103 MiB
/// but cost a single upload a fifth more CPU in system calls.
const READ_BUFFER_MAX: usize = 256 * 1024;

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How soon a connection whose first bytes are a beginning of the HTTP/2 preface (or of
/// `POST`...) is looked at again, the wait doubling up to [`UNDECIDED_RECHECK_MAX`] until it
/// says which protocol it speaks: a client split its preface, and is quick to send the rest,
/// or it is stalling, and costs a wake-up a second at most.
const UNDECIDED_RECHECK: Duration = Duration::from_millis(10);
const UNDECIDED_RECHECK_MAX: Duration = Duration::from_secs(1);

/// The protocol a connection's first bytes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Settings of every connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// How long a connection may go without sending a request head.
    pub(crate) head_timeout: Duration,
    /// The largest request head (request line and header fields; HTTP/2: the header list).
    pub(crate) max_header_size: usize,
    /// How many connections may be open.
    pub(crate) limits: ConnectionLimits,
    /// Every connection comes from a proxy: no per-client connection limit.
    pub(crate) behind_proxy: bool,
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
        http2.http2().max_header_list_size(list_size);
        Builders { http1, http2 }
    }
}

/// Serves `router` on every connection `listener` accepts until `shutdown` resolves, then stops
/// accepting, lets each connection finish the request it is serving, and returns once all have.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let head_timeout = settings.head_timeout;
    let builders = Arc::new(Builders::new(&settings));
    let admission = Admission::new(settings.limits, settings.behind_proxy);
    let mut refusals = RefusalLog::default();
    let connections = GracefulShutdown::new();
    // Connections still waiting for their first bytes are not watched yet: this stops them.
    let stopping = CancellationToken::new();
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
        let (router, builders, watcher, stopping) = (
            router.clone(),
            builders.clone(),
            connections.watcher(),
            stopping.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let first = tokio::time::timeout(head_timeout, first_bytes(&stream));
            let protocol = tokio::select! {
                protocol = first => match protocol {
                    Ok(Ok(Some(protocol))) => protocol,
                    Ok(Ok(None)) => return,
                    Ok(Err(error)) => return tracing::debug!(%error, "connection lost before a request"),
                    Err(_) => return tracing::debug!("connection silent for too long: closed"),
                },
                () = stopping.cancelled() => return,
            };
            let (io, requests) = interim::wrap(TokioIo::new(stream));
            let service = per_connection(router, requests).map_request(
                move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(Peer(peer));
                    request
                },
            );
            let service = TowerToHyperService::new(service);
            let ended = match protocol {
                Protocol::Http1 => {
                    let connection = builders.http1.serve_connection(io, service);
                    watcher.watch(connection).await.map_err(Into::into)
                }
                Protocol::Http2 => {
                    let connection = builders.http2.serve_connection(io, service);
                    watcher.watch(connection).await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    stopping.cancel();
    connections.shutdown().await;
    Ok(())
}

/// `router` as one connection serves it: each request gets its [`interim::Interim`] (if
/// HTTP/1.1), which closes when the router has produced the response.
pub(crate) fn per_connection(
    router: Router,
    requests: Requests,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    let begin = requests.clone();
    router
        .map_request(move |request: Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            begin.begin(&mut request);
            request
        })
        .map_response(move |response| {
            requests.end();
            response
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
