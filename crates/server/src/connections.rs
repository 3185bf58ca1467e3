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

use crate::interim::{self, Requests};
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
    fn new(head_timeout: Duration) -> Self {
        let builder = || {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .max_buf_size(READ_BUFFER_MAX)
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout);
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

/// Serves `router` on every connection `listener` accepts until `shutdown` resolves, then stops
/// accepting, lets each connection finish the request it is serving, and returns once all have.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    head_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let builders = Arc::new(Builders::new(head_timeout));
    let connections = GracefulShutdown::new();
    // Connections still waiting for their first bytes are not watched yet: this stops them.
    let stopping = CancellationToken::new();
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
        let (router, builders, watcher, stopping) = (
            router.clone(),
            builders.clone(),
            connections.watcher(),
            stopping.clone(),
        );
        tokio::spawn(async move {
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
            let service = TowerToHyperService::new(per_connection(router, requests));
            let connection = builders.get(protocol).serve_connection(io, service);
            if let Err(error) = watcher.watch(connection).await {
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
