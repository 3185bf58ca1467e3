//! The resumable HTTP server: protocol front-ends over one [`UploadService`].
//!
//! # Layout
//!
//! - [`app`] builds the router (tests drive it in-process); [`run`] serves it on a listener
//!   until a shutdown signal, letting uploads in flight persist and answer first.
//! - `simple`: the seed's protocol, `GET /status` and `POST /upload`.
//! - `tus`: tus 1.0.0 on `/files/`.
//! - `download`: `GET /files/{id}` of completed uploads, with `Range`.
//! - `wire`: what every front-end shares: request bodies as upload streams, the principal of a
//!   request, plain-text rejections.
//!
//! Each front-end parses a request into a typed value before any I/O, calls the service, and
//! maps [`resumable_core::UploadError`] to its own status codes in one exhaustive `match`.

mod download;
mod simple;
mod tus;
mod wire;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use resumable_core::UploadService;
use std::future::Future;
use std::io;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The upload engine.
    pub service: Arc<UploadService>,
}

/// The whole HTTP application.
pub fn app(service: Arc<UploadService>) -> Router {
    let state = AppState { service };
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(simple::status))
        .route("/upload", post(simple::upload))
        .route("/files", tus::collection_routes())
        .route("/files/", tus::collection_routes())
        .route("/files/{id}", tus::upload_routes().get(download::download))
        .with_state(state)
        .layer(axum::middleware::map_response(no_sniff));
    // Method override must act before routing, so it wraps the router instead of being a layer.
    Router::new().fallback_service(routes.map_request(tus::apply_method_override))
}

/// Liveness for load balancers and orchestrators.
async fn healthz() -> &'static str {
    "ok"
}

async fn no_sniff(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Serves `app(service)` on `listener` until `shutdown` resolves; then uploads in flight stop
/// reading, persist what they have and answer before the server returns.
pub async fn run(
    listener: TcpListener,
    service: Arc<UploadService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|stream| {
        // Small responses (offsets) must not wait for Nagle.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    let stopper = service.clone();
    let make_service = app(service).into_make_service();
    axum::serve(listener, make_service)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: uploads in flight persist and answer");
            stopper.shutdown();
        })
        .await
}
