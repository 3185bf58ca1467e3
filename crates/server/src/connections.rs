//! Accepting connections and serving the router on each, with our own HTTP settings.
//!
//! `axum::serve` would do this but offers no way to size hyper's read buffer, and that buffer is
//! a large part of the memory of an upload in flight: hyper grows it up to 408 KiB per
//! connection, so 200 concurrent uploads could hold 80 MiB in read buffers alone.

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// The largest read buffer hyper may grow per connection (bodies arrive in chunks of at most
/// this size). Measured with 200 concurrent 16 MiB uploads and one 1 GiB upload: hyper's
/// default (408 KiB) peaked at 146 MiB RSS; 256 KiB and 128 KiB at 107 MiB; 64 KiB at 103 MiB
/// but cost a single upload a fifth more CPU in system calls.
const READ_BUFFER_MAX: usize = 256 * 1024;

/// Serves `router` on every connection `listener` accepts until `shutdown` resolves, then stops
/// accepting, lets each connection finish the request it is serving, and returns once all have.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(READ_BUFFER_MAX);
    let connections = GracefulShutdown::new();
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
        let service = router
            .clone()
            .map_request(|request: Request<Incoming>| request.map(axum::body::Body::new));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
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
