//! Prometheus metrics, exported at `/metrics` in the text exposition format (0.0.4) by
//! `prometheus-client`.
//!
//! Nothing here is in a handler: requests are measured by a wrapper around the router's future
//! (see [`Measured`]), storage by a [`Store`] decorator ([`Metrics::measure_store`]), locks by a
//! [`Locker`] decorator ([`Metrics::measure_locker`]), and the steps of uploads and hook calls
//! by the service's [`Observer`], which [`Metrics`] is.
//!
//! What a request costs: one `Instant::now()` and one `Arc` clone when it arrives; when it
//! ends, a second clock read and two lookups in label families (a read lock and a hash of a
//! few bytes: the labels are enums and a status code, never strings, so nothing is allocated
//! once a label set has been seen). The wrapper adds 32 bytes to the request's future and
//! boxes nothing. Store and lock calls cost a clock read or two, one family lookup, and the
//! box of the decorator's own future (every call of an `async_trait` method makes one).

use crate::process::ProcessCollector;
use async_trait::async_trait;
use axum::http::{Method, Request, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use resumable_core::lock::{LockError, LockGuard, Locker};
use resumable_core::{
    Appended, BodyError, BodyStream, ByteStream, Capabilities, HookKind, HookOutcome, Observer,
    Offset, Owner, Protocol, Staged, StorageLocation, Store, StoreError, UploadEvent, UploadId,
    UploadInfo, UploadStatus,
};
use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

/// The `Content-Type` of `/metrics`.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Request durations: from a millisecond to an hour (an upload's request lasts as long as its
/// body takes to arrive).
const REQUEST_BUCKETS: [f64; 15] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Store operations: from 100 µs (a status) to an hour (an append streaming a long body).
const STORE_BUCKETS: [f64; 15] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0,
    3600.0,
];
/// Lock waits: up to the lock timeout (10 s by default).
const LOCK_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Writes a label value that is a fixed name.
fn label(encoder: &mut LabelValueEncoder, name: &str) -> fmt::Result {
    encoder.write_str(name)
}

/// The front-end a request went to (`protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RequestProtocol {
    /// `GET /status`, `POST /upload`.
    Simple,
    /// `/files` and `/files/…` without an IETF interop version, downloads excepted.
    Tus,
    /// `/files…` naming an IETF interop version.
    Ietf,
    /// `GET /files/{id}` without an IETF interop version.
    Download,
    /// Everything else: the page, `/healthz`, `/readyz`, `/metrics`, unknown paths.
    Other,
}

impl EncodeLabelValue for RequestProtocol {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        label(
            encoder,
            match self {
                RequestProtocol::Simple => "simple",
                RequestProtocol::Tus => "tus",
                RequestProtocol::Ietf => "ietf",
                RequestProtocol::Download => "download",
                RequestProtocol::Other => "other",
            },
        )
    }
}

/// A request's method (`method` label): the standard ones, any other as `OTHER`, so a client
/// cannot make series without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RequestMethod {
    Get,
    Head,
    Post,
    Patch,
    Put,
    Delete,
    Options,
    Other,
}

impl RequestMethod {
    fn of(method: &Method) -> Self {
        match *method {
            Method::GET => RequestMethod::Get,
            Method::HEAD => RequestMethod::Head,
            Method::POST => RequestMethod::Post,
            Method::PATCH => RequestMethod::Patch,
            Method::PUT => RequestMethod::Put,
            Method::DELETE => RequestMethod::Delete,
            Method::OPTIONS => RequestMethod::Options,
            _ => RequestMethod::Other,
        }
    }
}

impl EncodeLabelValue for RequestMethod {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        label(
            encoder,
            match self {
                RequestMethod::Get => "GET",
                RequestMethod::Head => "HEAD",
                RequestMethod::Post => "POST",
                RequestMethod::Patch => "PATCH",
                RequestMethod::Put => "PUT",
                RequestMethod::Delete => "DELETE",
                RequestMethod::Options => "OPTIONS",
                RequestMethod::Other => "OTHER",
            },
        )
    }
}

/// How a request ended (`status` label): its response's status code, or `aborted` when it was
/// dropped before answering (an HTTP/2 stream reset, a connection lost under HTTP/2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RequestStatus {
    Code(u16),
    Aborted,
}

impl EncodeLabelValue for RequestStatus {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        match self {
            RequestStatus::Code(code) => write!(encoder, "{code}"),
            RequestStatus::Aborted => label(encoder, "aborted"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    protocol: RequestProtocol,
    method: RequestMethod,
    status: RequestStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    protocol: RequestProtocol,
    method: RequestMethod,
}

/// The protocol that created an upload (`protocol` label of the upload counters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UploadLabels {
    protocol: ProtocolLabel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ProtocolLabel(Protocol);

impl EncodeLabelValue for ProtocolLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        label(encoder, self.0.as_str())
    }
}

/// A [`Store`] method (`operation` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Operation {
    Create,
    Status,
    Append,
    Update,
    Finish,
    Terminate,
    Read,
    FindByKey,
    Stage,
    CommitStaged,
    DiscardStaged,
    Concatenate,
    List,
    RemoveLeftovers,
    Probe,
}

impl EncodeLabelValue for Operation {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        label(
            encoder,
            match self {
                Operation::Create => "create",
                Operation::Status => "status",
                Operation::Append => "append",
                Operation::Update => "update",
                Operation::Finish => "finish",
                Operation::Terminate => "terminate",
                Operation::Read => "read",
                Operation::FindByKey => "find_by_key",
                Operation::Stage => "stage",
                Operation::CommitStaged => "commit_staged",
                Operation::DiscardStaged => "discard_staged",
                Operation::Concatenate => "concatenate",
                Operation::List => "list",
                Operation::RemoveLeftovers => "remove_leftovers",
                Operation::Probe => "probe",
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: Operation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct HookEventLabel(HookKind);

impl EncodeLabelValue for HookEventLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        label(encoder, self.0.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct OutcomeLabel(HookOutcome);

impl EncodeLabelValue for OutcomeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        label(
            encoder,
            match self.0 {
                HookOutcome::Delivered => "delivered",
                HookOutcome::Unreachable => "unreachable",
                HookOutcome::Status => "bad_status",
                HookOutcome::BadAnswer => "bad_answer",
                HookOutcome::Timeout => "timeout",
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HookLabels {
    event: HookEventLabel,
    outcome: OutcomeLabel,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Everything `/metrics` shows. Make one per process ([`Metrics::new`]), measure the store and
/// locker through it, give it to the service and the hooks as their [`Observer`], and to the
/// server in [`crate::ServerConfig::metrics`].
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_durations: HistogramFamily<RouteLabels>,
    received_bytes: Counter,
    created: Family<UploadLabels, Counter>,
    completed: Family<UploadLabels, Counter>,
    terminated: Family<UploadLabels, Counter>,
    expired: Family<UploadLabels, Counter>,
    in_progress: Gauge,
    lock_waits: Counter,
    lock_wait_durations: Histogram,
    lock_takeovers: Counter,
    lock_losses: Counter,
    lock_failures: Counter,
    store_durations: HistogramFamily<OperationLabels>,
    hook_deliveries: Family<HookLabels, Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every metric at zero, and the process's own (`process_*`, read from `/proc` at each
    /// scrape).
    pub fn new() -> Arc<Metrics> {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let metrics = Metrics {
            requests: Family::default(),
            request_durations: Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS)),
            received_bytes: Counter::default(),
            created: Family::default(),
            completed: Family::default(),
            terminated: Family::default(),
            expired: Family::default(),
            in_progress: Gauge::default(),
            lock_waits: Counter::default(),
            lock_wait_durations: Histogram::new(LOCK_BUCKETS),
            lock_takeovers: Counter::default(),
            lock_losses: Counter::default(),
            lock_failures: Counter::default(),
            store_durations: Family::new_with_constructor(|| Histogram::new(STORE_BUCKETS)),
            hook_deliveries: Family::default(),
            registry: Registry::default(),
        };
        // Every protocol's upload counters exist from the start, at 0: `rate()` and alerts see a
        // series before its first event.
        for family in [
            &metrics.created,
            &metrics.completed,
            &metrics.terminated,
            &metrics.expired,
        ] {
            for protocol in [Protocol::Simple, Protocol::Tus, Protocol::Ietf] {
                drop(family.get_or_create(&UploadLabels {
                    protocol: ProtocolLabel(protocol),
                }));
            }
        }
        let ours = root.sub_registry_with_prefix("resumable");
        ours.register(
            "http_requests",
            "HTTP requests answered, by protocol (simple, tus, ietf, download, other), method and status (`aborted`: dropped before an answer)",
            metrics.requests.clone(),
        );
        ours.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its response head (an upload's request includes its body; a download excludes the bytes sent)",
            Unit::Seconds,
            metrics.request_durations.clone(),
        );
        ours.register_with_unit(
            "received",
            "Request-body bytes made durable in uploads (appended, or a verified checksummed chunk committed); bytes discarded or cut off are not counted",
            Unit::Bytes,
            metrics.received_bytes.clone(),
        );
        ours.register(
            "uploads_created",
            "Uploads created, by the protocol that created them",
            metrics.created.clone(),
        );
        ours.register(
            "uploads_completed",
            "Uploads whose last byte was stored (or final uploads assembled), by the protocol that created them",
            metrics.completed.clone(),
        );
        ours.register(
            "uploads_terminated",
            "Uploads removed by their client, by the protocol that created them",
            metrics.terminated.clone(),
        );
        ours.register(
            "uploads_expired",
            "Unfinished uploads removed by expiry, by the protocol that created them",
            metrics.expired.clone(),
        );
        ours.register(
            "uploads_in_progress",
            "Request bodies being streamed into the store now",
            metrics.in_progress.clone(),
        );
        ours.register(
            "lock_waits",
            "Lock requests (of an upload, a simple-protocol file id or an owner's quota) that found the lock held and waited",
            metrics.lock_waits.clone(),
        );
        ours.register_with_unit(
            "lock_wait_duration",
            "How long the lock requests that waited took (until granted or timed out)",
            Unit::Seconds,
            metrics.lock_wait_durations.clone(),
        );
        ours.register(
            "lock_takeovers",
            "Request bodies stopped because another request asked for their upload's lock (their bytes are kept)",
            metrics.lock_takeovers.clone(),
        );
        ours.register(
            "lock_losses",
            "Request bodies stopped because their upload's lock was lost (a lease ran out or the lock service went away; their bytes are kept)",
            metrics.lock_losses.clone(),
        );
        ours.register(
            "lock_failures",
            "Lock requests that failed because the lock service could not be reached (answered 503)",
            metrics.lock_failures.clone(),
        );
        ours.register_with_unit(
            "store_operation_duration",
            "Store calls by operation (append and stage include the time the body takes to arrive; read only opens the stream)",
            Unit::Seconds,
            metrics.store_durations.clone(),
        );
        ours.register(
            "hook_deliveries",
            "Calls to the hook receiver (pre-* calls and each post-* delivery attempt), by event and outcome (delivered, unreachable, bad_status, bad_answer, timeout)",
            metrics.hook_deliveries.clone(),
        );
        Arc::new(Metrics {
            registry: root,
            ..metrics
        })
    }

    /// The text `/metrics` answers.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// `store`, measured: the latency of each operation, the bytes it makes durable, bodies in
    /// progress and bodies stopped by a takeover.
    pub fn measure_store(self: &Arc<Self>, store: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(MeasuredStore {
            inner: store,
            metrics: self.clone(),
        })
    }

    /// `locker`, measured: the lock requests that had to wait, and how long.
    pub fn measure_locker(self: &Arc<Self>, locker: Arc<dyn Locker>) -> Arc<dyn Locker> {
        Arc::new(MeasuredLocker {
            inner: locker,
            metrics: self.clone(),
        })
    }

    fn store_time(&self, operation: Operation, started: Instant) {
        self.store_durations
            .get_or_create(&OperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The request's measurement, started now; recorded when its response head is ready.
    pub(crate) fn begin<B>(self: &Arc<Self>, request: &Request<B>, ietf: bool) -> InFlight {
        InFlight {
            metrics: self.clone(),
            protocol: classify(request, ietf),
            method: RequestMethod::of(request.method()),
            started: Instant::now(),
        }
    }
}

impl Observer for Metrics {
    fn upload(&self, event: UploadEvent, protocol: Protocol) {
        let family = match event {
            UploadEvent::Created => &self.created,
            UploadEvent::Completed => &self.completed,
            UploadEvent::Terminated => &self.terminated,
            UploadEvent::Expired => &self.expired,
        };
        family
            .get_or_create(&UploadLabels {
                protocol: ProtocolLabel(protocol),
            })
            .inc();
    }

    fn hook(&self, kind: HookKind, outcome: HookOutcome) {
        self.hook_deliveries
            .get_or_create(&HookLabels {
                event: HookEventLabel(kind),
                outcome: OutcomeLabel(outcome),
            })
            .inc();
    }
}

/// Which front-end a request goes to, as the router will decide (`ietf`: it names an interop
/// version on an upload route).
fn classify<B>(request: &Request<B>, ietf: bool) -> RequestProtocol {
    let path = request.uri().path();
    if ietf {
        RequestProtocol::Ietf
    } else if path == "/status" || path == "/upload" {
        RequestProtocol::Simple
    } else if let Some(rest) = path.strip_prefix("/files/")
        && !rest.is_empty()
        && request.method() == Method::GET
    {
        RequestProtocol::Download
    } else if path == "/files" || path.starts_with("/files/") {
        RequestProtocol::Tus
    } else {
        RequestProtocol::Other
    }
}

/// A request being measured.
pub(crate) struct InFlight {
    metrics: Arc<Metrics>,
    protocol: RequestProtocol,
    method: RequestMethod,
    started: Instant,
}

impl InFlight {
    fn finish(self, status: RequestStatus) {
        let (protocol, method) = (self.protocol, self.method);
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                protocol,
                method,
                status,
            })
            .inc();
        self.metrics
            .request_durations
            .get_or_create(&RouteLabels { protocol, method })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// The router's future for one request, measured when it yields the response (or, if it is
/// dropped first, as `aborted`). A plain struct polled in place, not a boxed future: it is held
/// for as long as an upload's body streams.
pub(crate) struct Measured<F> {
    inner: F,
    in_flight: Option<InFlight>,
}

impl<F> Measured<F> {
    /// `inner`, measured by `in_flight` (`None`: not measured).
    pub(crate) fn new(inner: F, in_flight: Option<InFlight>) -> Self {
        Measured { inner, in_flight }
    }
}

impl<F, B> Future for Measured<F>
where
    F: Future<Output = Result<Response<B>, Infallible>> + Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let output = ready!(Pin::new(&mut this.inner).poll(context));
        if let (Some(in_flight), Ok(response)) = (this.in_flight.take(), &output) {
            in_flight.finish(RequestStatus::Code(response.status().as_u16()));
        }
        Poll::Ready(output)
    }
}

impl<F> Drop for Measured<F> {
    fn drop(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.finish(RequestStatus::Aborted);
        }
    }
}

/// A [`Store`] that measures the one it wraps.
struct MeasuredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

/// Counts a body as in progress while it lives.
struct Streaming<'a>(&'a Gauge);

impl<'a> Streaming<'a> {
    fn start(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Streaming(gauge)
    }
}

impl Drop for Streaming<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl MeasuredStore {
    async fn timed<T>(&self, operation: Operation, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = call.await;
        self.metrics.store_time(operation, started);
        result
    }

    fn stopped(&self, interruption: Option<&BodyError>) {
        let counter = match interruption {
            Some(BodyError::TakenOver) => &self.metrics.lock_takeovers,
            Some(BodyError::LockLost) => &self.metrics.lock_losses,
            _ => return,
        };
        counter.inc();
    }

    fn received(&self, from: Offset, to: Offset) {
        self.metrics
            .received_bytes
            .inc_by(to.0.saturating_sub(from.0));
    }
}

#[async_trait]
impl Store for MeasuredStore {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn create(&self, info: &UploadInfo) -> Result<(), StoreError> {
        self.timed(Operation::Create, self.inner.create(info)).await
    }

    async fn status(&self, id: &UploadId) -> Result<UploadStatus, StoreError> {
        self.timed(Operation::Status, self.inner.status(id)).await
    }

    async fn append(
        &self,
        id: &UploadId,
        offset: Offset,
        body: BodyStream,
    ) -> Result<Appended, StoreError> {
        let _streaming = Streaming::start(&self.metrics.in_progress);
        let appended = self
            .timed(Operation::Append, self.inner.append(id, offset, body))
            .await?;
        self.received(offset, appended.offset);
        self.stopped(appended.interruption.as_ref());
        Ok(appended)
    }

    async fn update(&self, info: &UploadInfo) -> Result<(), StoreError> {
        self.timed(Operation::Update, self.inner.update(info)).await
    }

    async fn finish(&self, id: &UploadId) -> Result<(), StoreError> {
        self.timed(Operation::Finish, self.inner.finish(id)).await
    }

    async fn terminate(&self, id: &UploadId) -> Result<(), StoreError> {
        self.timed(Operation::Terminate, self.inner.terminate(id))
            .await
    }

    async fn read(&self, id: &UploadId, range: Range<u64>) -> Result<ByteStream, StoreError> {
        self.timed(Operation::Read, self.inner.read(id, range))
            .await
    }

    async fn find_by_key(
        &self,
        owner: &Owner,
        client_key: &str,
    ) -> Result<Option<UploadId>, StoreError> {
        self.timed(
            Operation::FindByKey,
            self.inner.find_by_key(owner, client_key),
        )
        .await
    }

    async fn stage(
        &self,
        id: &UploadId,
        offset: Offset,
        body: BodyStream,
    ) -> Result<Staged, StoreError> {
        let _streaming = Streaming::start(&self.metrics.in_progress);
        let staged = self
            .timed(Operation::Stage, self.inner.stage(id, offset, body))
            .await?;
        self.stopped(staged.interruption.as_ref());
        Ok(staged)
    }

    async fn commit_staged(&self, id: &UploadId, offset: Offset) -> Result<Offset, StoreError> {
        let committed = self
            .timed(
                Operation::CommitStaged,
                self.inner.commit_staged(id, offset),
            )
            .await?;
        self.received(offset, committed);
        Ok(committed)
    }

    async fn discard_staged(&self, id: &UploadId) -> Result<(), StoreError> {
        self.timed(Operation::DiscardStaged, self.inner.discard_staged(id))
            .await
    }

    async fn concatenate(&self, target: &UploadId, parts: &[UploadId]) -> Result<(), StoreError> {
        self.timed(
            Operation::Concatenate,
            self.inner.concatenate(target, parts),
        )
        .await
    }

    async fn list(
        &self,
        start_after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<UploadId>, StoreError> {
        let listing = self.inner.list(start_after, limit);
        self.timed(Operation::List, listing).await
    }

    async fn remove_leftovers(&self, min_age: Duration) -> Result<usize, StoreError> {
        self.timed(
            Operation::RemoveLeftovers,
            self.inner.remove_leftovers(min_age),
        )
        .await
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.timed(Operation::Probe, self.inner.probe()).await
    }

    fn location(&self, id: &UploadId) -> Option<StorageLocation> {
        self.inner.location(id)
    }
}

/// A [`Locker`] that measures the one it wraps.
struct MeasuredLocker {
    inner: Arc<dyn Locker>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl Locker for MeasuredLocker {
    /// A lock request waited if its first poll did not get the lock.
    async fn lock(&self, key: &str) -> Result<LockGuard, LockError> {
        let started = Instant::now();
        let mut locking = self.inner.lock(key);
        let mut waited = false;
        let locked = std::future::poll_fn(|context| {
            let poll = locking.as_mut().poll(context);
            waited |= poll.is_pending();
            poll
        })
        .await;
        if waited {
            self.metrics.lock_waits.inc();
            self.metrics
                .lock_wait_durations
                .observe(started.elapsed().as_secs_f64());
        }
        self.failed(locked)
    }

    async fn try_lock(&self, key: &str) -> Result<Option<LockGuard>, LockError> {
        self.failed(self.inner.try_lock(key).await)
    }
}

impl MeasuredLocker {
    /// Counts a lock request the lock service could not answer.
    fn failed<T>(&self, result: Result<T, LockError>) -> Result<T, LockError> {
        if let Err(LockError::Backend(_)) = &result {
            self.metrics.lock_failures.inc();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(method: Method, path: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn requests_are_classified_by_front_end() {
        let cases = [
            (Method::GET, "/status", false, RequestProtocol::Simple),
            (Method::POST, "/upload", false, RequestProtocol::Simple),
            (Method::POST, "/files/", false, RequestProtocol::Tus),
            (Method::POST, "/files", false, RequestProtocol::Tus),
            (Method::OPTIONS, "/files/", false, RequestProtocol::Tus),
            (Method::GET, "/files/", false, RequestProtocol::Tus),
            (Method::PATCH, "/files/abc", false, RequestProtocol::Tus),
            (Method::HEAD, "/files/abc", false, RequestProtocol::Tus),
            (Method::GET, "/files/abc", false, RequestProtocol::Download),
            (Method::GET, "/files/abc", true, RequestProtocol::Ietf),
            (Method::POST, "/files/", true, RequestProtocol::Ietf),
            (Method::GET, "/", false, RequestProtocol::Other),
            (Method::GET, "/metrics", false, RequestProtocol::Other),
            (Method::GET, "/filesystem", false, RequestProtocol::Other),
        ];
        for (method, path, ietf, expected) in cases {
            assert_eq!(
                classify(&request(method.clone(), path), ietf),
                expected,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn measuring_adds_32_bytes_to_a_request_in_flight() {
        assert_eq!(std::mem::size_of::<Option<InFlight>>(), 32);
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let method = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(RequestMethod::of(&method), RequestMethod::Other);
        assert_eq!(RequestMethod::of(&Method::PATCH), RequestMethod::Patch);
    }

    #[test]
    fn the_text_names_every_metric_with_its_unit_and_suffix() {
        let metrics = Metrics::new();
        // A family shows once it has a series.
        metrics
            .begin(&request(Method::GET, "/files/abc"), false)
            .finish(RequestStatus::Code(206));
        metrics
            .begin(&request(Method::PUT, "/"), false)
            .finish(RequestStatus::Aborted);
        metrics.store_time(Operation::CommitStaged, Instant::now());
        metrics.upload(UploadEvent::Created, Protocol::Ietf);
        metrics.hook(HookKind::PostFinish, HookOutcome::Timeout);
        let text = metrics.render();
        for line in [
            "# TYPE resumable_http_requests_total counter",
            "resumable_http_requests_total{protocol=\"download\",method=\"GET\",status=\"206\"} 1",
            "resumable_http_requests_total{protocol=\"other\",method=\"PUT\",status=\"aborted\"} 1",
            "# TYPE resumable_http_request_duration_seconds histogram",
            "resumable_http_request_duration_seconds_count{protocol=\"download\",method=\"GET\"} 1",
            "resumable_store_operation_duration_seconds_bucket{operation=\"commit_staged\",le=\"+Inf\"} 1",
            "# TYPE resumable_received_bytes_total counter",
            "resumable_uploads_created_total{protocol=\"ietf\"} 1",
            "resumable_uploads_created_total{protocol=\"tus\"} 0",
            "resumable_uploads_expired_total{protocol=\"simple\"} 0",
            "# TYPE resumable_uploads_in_progress gauge",
            "# TYPE resumable_lock_waits_total counter",
            "# TYPE resumable_lock_wait_duration_seconds histogram",
            "# TYPE resumable_lock_takeovers_total counter",
            "# TYPE resumable_lock_losses_total counter",
            "# TYPE resumable_lock_failures_total counter",
            "# TYPE resumable_store_operation_duration_seconds histogram",
            "resumable_hook_deliveries_total{event=\"post-finish\",outcome=\"timeout\"} 1",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
    }
}
