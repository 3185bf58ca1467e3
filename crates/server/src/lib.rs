//! The resumable HTTP server: protocol front-ends over one [`UploadService`].
//!
//! # Layout
//!
//! - [`app`] builds the router (tests drive it in-process); [`run`] serves it on a listener
//!   until a shutdown signal, letting uploads in flight persist and answer first.
//! - `connections`: the accept loop, HTTP/1.1-or-2 detection (by peeking, or by ALPN over
//!   TLS), and hyper's per-connection settings (read buffer size, the largest request head and
//!   the timeout for one, HTTP/2's streams, windows and idle timeout).
//! - [`limits`]: how many connections may be open (in all, per client), and who a client is
//!   for the limits that count per client.
//! - [`tls`]: rustls, with a certificate that [`tls::Tls::reload`] replaces while serving.
//! - `interim`: 1xx responses a handler queues on HTTP/1.1 (`104 Upload Resumption
//!   Supported`), written between hyper's own writes by a wrapper around the socket.
//! - `simple`: the seed's protocol, `GET /status` and `POST /upload`.
//! - `tus`: tus 1.0.0 on `/files/`.
//! - `ietf`: the IETF Resumable Uploads draft on the same routes, for requests that name an
//!   interop version.
//! - `download`: `GET /files/{id}` of completed uploads, with `Range`.
//! - [`auth`]: the `--auth` modes, which name the principal (owner) of each request.
//! - `cors`: cross-origin access for pages on other origins.
//! - `public_url`: `--public-url`, the base of upload URLs behind a proxy.
//! - `request_log`: the request id and one log line per request.
//! - `classify`: what each service error means on the wire (status, message, stored offset),
//!   decided once; each front-end renders it in its own format.
//! - `web`: the upload page and the browser client, embedded in the binary.
//! - [`metrics`]: the Prometheus metrics of `/metrics`: a wrapper around each request's future,
//!   measuring decorators of the store and the locker, the service's observer; `process`: the
//!   `process_*` figures from `/proc`.
//! - [`ready`]: the named checks of `/readyz`.
//! - `wire`: what every front-end shares: request bodies as upload streams, the principal of a
//!   request, plain-text rejections.
//!
//! Each front-end parses a request into a typed value before any I/O, calls the service, and
//! renders [`resumable_core::UploadError`]s as `classify` classified them.

pub mod auth;
mod classify;
mod connections;
mod cors;
mod download;
mod ietf;
mod interim;
pub mod limits;
pub mod metrics;
mod process;
mod public_url;
pub mod ready;
mod request_log;
mod simple;
pub mod tls;
mod tus;
mod web;
mod wire;

pub use cors::CorsOrigins;
pub use limits::ConnectionLimits;
pub use metrics::Metrics;
pub use public_url::PublicUrl;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use resumable_core::UploadService;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Settings of the HTTP layer (the upload rules live in [`resumable_core::ServiceConfig`]).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Origins whose pages may upload from a browser.
    pub cors_origins: CorsOrigins,
    /// Trust `Forwarded` / `X-Forwarded-Host` / `X-Forwarded-Proto` when building upload URLs.
    /// Only for a server reachable solely through a proxy that sets them.
    pub behind_proxy: bool,
    /// The base of every upload URL (`--public-url`), whatever the request's `Host`; it wins
    /// over [`ServerConfig::behind_proxy`].
    pub public_url: Option<PublicUrl>,
    /// How long a connection may stay silent before sending a request head, from when it opens
    /// and between requests on a kept-alive HTTP/1.1 connection; then it is closed. (A stalled
    /// body is cut by [`resumable_core::ServiceConfig::body_idle_timeout`] instead.)
    pub head_timeout: Duration,
    /// Who requests act for (`--auth`).
    pub auth: Arc<auth::Auth>,
    /// How many connections may be open; past it a connection is closed as it is accepted.
    pub connection_limits: ConnectionLimits,
    /// The largest request head, in bytes (the request line and header fields; on HTTP/2 the
    /// header list as RFC 9113 counts it); past it hyper answers `431` and closes the
    /// connection. At most [`MAX_HEADER_SIZE_LIMIT`].
    pub max_header_size: usize,
    /// Whether requests are measured, and where `/metrics` is served.
    pub metrics: MetricsExport,
    /// What `/readyz` checks besides the store's probe (the data directory, a fleet backend).
    pub readiness: ready::Checks,
    /// Serve HTTPS with this certificate (HTTP/2 or HTTP/1.1 by ALPN); `None` for plain HTTP
    /// (HTTP/1.1, or HTTP/2 with prior knowledge). Upload URLs say `https://` with it.
    pub tls: Option<Arc<tls::Tls>>,
    /// HTTP/2's limits.
    pub http2: Http2Config,
}

impl ServerConfig {
    /// The scheme clients reach this listener with, for upload URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Whether requests are measured, and where their metrics are served.
#[derive(Debug, Clone, Default)]
pub enum MetricsExport {
    /// Nothing is measured; there is no `/metrics`.
    #[default]
    Off,
    /// Requests are measured into these metrics, served at `/metrics` on the main listener
    /// (without authentication, like `/healthz`).
    Main(Arc<Metrics>),
    /// Requests are measured into these metrics, served elsewhere ([`run_metrics`] on a listener
    /// of its own); the main listener has no `/metrics`.
    Separate(Arc<Metrics>),
}

impl MetricsExport {
    fn metrics(&self) -> Option<&Arc<Metrics>> {
        match self {
            MetricsExport::Off => None,
            MetricsExport::Main(metrics) | MetricsExport::Separate(metrics) => Some(metrics),
        }
    }
}

/// The largest [`ServerConfig::max_header_size`] that takes effect: the read buffer holds at
/// most this much, and a head must fit in it.
pub const MAX_HEADER_SIZE_LIMIT: usize = 256 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            cors_origins: CorsOrigins::Any,
            behind_proxy: false,
            public_url: None,
            head_timeout: Duration::from_secs(30),
            auth: Arc::new(auth::Auth::None),
            connection_limits: ConnectionLimits::default(),
            max_header_size: 32 * 1024,
            metrics: MetricsExport::Off,
            readiness: ready::Checks::new(),
            tls: None,
            http2: Http2Config::default(),
        }
    }
}

/// The settings of HTTP/2 connections (TLS `h2`, and cleartext with prior knowledge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Config {
    /// The streams (requests) one connection may have open at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`): a client opens more only as earlier ones end, and a
    /// stream beyond it is refused (`REFUSED_STREAM`, safe to retry).
    pub max_concurrent_streams: u32,
    /// A connection with no open stream for this long is closed gracefully (`GOAWAY`).
    pub idle_timeout: Duration,
    /// How many bytes of one request body a client may send ahead of what the server has read
    /// (`SETTINGS_INITIAL_WINDOW_SIZE`).
    pub stream_window: u32,
    /// The same for all the bodies of one connection together.
    pub connection_window: u32,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            max_concurrent_streams: 100,
            idle_timeout: Duration::from_secs(60),
            stream_window: Http2Config::STREAM_WINDOW,
            connection_window: Http2Config::CONNECTION_WINDOW,
        }
    }
}

impl Http2Config {
    /// The default [`Http2Config::stream_window`]: 4 MiB. What a client sends ahead of our
    /// reading sits in our memory (on HTTP/1.1 it waits in the kernel's socket buffer), so this
    /// bounds an upload's buffered bytes. One 1 GiB upload over h2c against HTTP/1.1 on loopback
    /// (bench/RESULTS.md, alternating runs on a shared 2-core machine): the protocol's 64 KiB
    /// windows reached 0.69×; hyper's 1 MiB with 16 KiB frames 0.86–1.13×; 4 MiB with 64 KiB
    /// frames 0.86–1.22× (median about 1.0) at a third less CPU; 8 and 16 MiB were no faster
    /// and held 5–16 MiB more.
    pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
    /// The default [`Http2Config::connection_window`]: two streams' worth.
    pub const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The upload engine.
    pub service: Arc<UploadService>,
    /// The HTTP settings.
    pub config: Arc<ServerConfig>,
}

/// The whole HTTP application.
pub fn app(service: Arc<UploadService>, config: ServerConfig) -> Router {
    let cors_policy = Arc::new(cors::Policy {
        origins: config.cors_origins.clone(),
        credentials: matches!(*config.auth, auth::Auth::Forward(_))
            && matches!(config.cors_origins, CorsOrigins::List(_)),
    });
    let measure = config.metrics.metrics().cloned();
    let export = match &config.metrics {
        MetricsExport::Main(metrics) => Some(metrics.clone()),
        MetricsExport::Off | MetricsExport::Separate(_) => None,
    };
    let web = web::routes(config.public_url.as_ref());
    let state = AppState {
        service,
        config: Arc::new(config),
    };
    let common = |routes: Router| {
        routes
            // The matched route, for the request's log line: a plain function, as below.
            .route_layer(tower::util::MapRequestLayer::new(request_log::note_route))
            .layer(axum::middleware::from_fn_with_state(
                cors_policy.clone(),
                cors::cors,
            ))
            // A plain function through tower's MapResponse: unlike axum's `map_response` it
            // boxes no future per request, which held ~0.4 KiB per open upload (massif, 1,000
            // held).
            .layer(tower::util::MapResponseLayer::new(no_sniff))
    };
    let ietf = common(ietf::routes().with_state(state.clone()));
    let mut others = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if let Some(metrics) = export {
        others = others.route("/metrics", get(move || render(metrics.clone())));
    }
    let others = common(
        others
            .route("/status", get(simple::status))
            .route("/upload", post(simple::upload))
            .route("/files", tus::collection_routes())
            .route("/files/", tus::collection_routes())
            .route("/files/{id}", tus::upload_routes().get(download::download))
            .merge(web)
            .with_state(state),
    );
    // The IETF draft shares tus's paths, so requests are told apart before routing (a nested
    // router would see the outer route's path parameters twice). Method override must act
    // before routing too. The request's log wraps the chosen router's future in place: the
    // fallback below boxes it once, as it would without logging.
    let protocols = tower::service_fn(move |request: axum::extract::Request| {
        let request = tus::apply_method_override(request);
        let (request, log) = request_log::begin(request);
        let speaks_ietf = ietf::speaks_ietf(&request);
        let in_flight = measure
            .as_ref()
            .map(|metrics| metrics.begin(&request, speaks_ietf));
        let router = if speaks_ietf {
            ietf.clone()
        } else {
            others.clone()
        };
        log.wrap(metrics::Measured::new(router.oneshot(request), in_flight))
    });
    Router::new().fallback_service(protocols)
}

/// Liveness for load balancers and orchestrators.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 200 when the store answers and every configured check passes, else 503; both
/// with a JSON [`ready::Report`].
async fn readyz(State(state): State<AppState>) -> Response {
    let store: Arc<dyn ready::Check> = Arc::new(ready::StoreAnswers(state.service.clone()));
    let report = ready::run(std::iter::once(&store).chain(state.config.readiness.iter())).await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        tracing::warn!(reasons = ?report.reasons, "not ready");
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string(&report).unwrap_or_default();
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `/metrics`.
async fn render(metrics: Arc<Metrics>) -> Response {
    (
        [
            (header::CONTENT_TYPE, metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        metrics.render(),
    )
        .into_response()
}

/// The router of a listener that serves only `/metrics`.
pub fn metrics_app(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(move || render(metrics.clone())))
        .layer(tower::util::MapResponseLayer::new(no_sniff))
}

/// Serves [`metrics_app`] on `listener` until `shutdown` resolves (for
/// [`MetricsExport::Separate`]).
pub async fn run_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    // Plain HTTP with the default limits: the metrics listener is an internal one.
    let settings = connections::Settings::of(&ServerConfig::default());
    connections::serve(listener, metrics_app(metrics), settings, shutdown).await
}

fn no_sniff(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Serves `app(service, config)` on `listener` until `shutdown` resolves; then uploads in flight stop
/// reading, persist what they have and answer before the server returns.
pub async fn run(
    listener: TcpListener,
    service: Arc<UploadService>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let stopper = service.clone();
    let sweeper = tokio::spawn({
        let service = service.clone();
        async move { tokio::join!(sweep_expired(service.clone()), sweep_leftovers(service)) }
    });
    let settings = connections::Settings::of(&config);
    let router = app(service, config);
    let served = connections::serve(listener, router, settings, async move {
        shutdown.await;
        tracing::info!("shutting down: uploads in flight persist and answer");
        stopper.shutdown();
    })
    .await;
    sweeper.abort();
    served
}

/// Removes expired unfinished uploads now and then: ten times per expiry period, at least every
/// second and at most every ten minutes.
async fn sweep_expired(service: Arc<UploadService>) {
    let Some(expire_after) = service.expire_after() else {
        return;
    };
    let period = (expire_after / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    // The first sweep waits a period too: nothing can have expired at start-up that the first
    // request would not find expired anyway.
    every(period, || async {
        if let Err(error) = service.remove_expired().await {
            tracing::warn!(%error, "expiry sweep failed");
        }
    })
    .await;
}

/// Removes what crashes left behind every ten minutes, whether or not uploads expire.
async fn sweep_leftovers(service: Arc<UploadService>) {
    every(Duration::from_secs(600), || async {
        if let Err(error) = service.remove_leftovers().await {
            tracing::warn!(%error, "sweep of crash leftovers failed");
        }
    })
    .await;
}

/// Runs `work` every `period`, the first time one period from now, never two at once.
async fn every<F: Future<Output = ()>>(period: Duration, mut work: impl FnMut() -> F) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        work().await;
    }
}
