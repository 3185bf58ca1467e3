//! The measurements: many uploads at once, connections held open mid-body, and HEADs/s.

use crate::body::{PatchBody, Pattern};
use crate::tus::{Endpoint, TusError};
use http::StatusCode;
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Barrier, Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::timeout;

/// How many uploads of which shape [`upload_many`] runs.
#[derive(Clone, Copy, Debug)]
pub struct UploadPlan {
    /// Bytes per upload.
    pub size: u64,
    /// Bytes per `PATCH` (the last one may be shorter).
    pub chunk: u64,
    /// How many uploads.
    pub uploads: usize,
    /// How many run at once.
    pub concurrency: usize,
    /// Longest the whole run may take.
    pub deadline: Duration,
}

/// What a run of uploads measured.
#[derive(Debug, Default, Serialize)]
pub struct UploadReport {
    /// Bytes the server acknowledged, over all uploads.
    pub bytes: u64,
    /// Wall time from the first connection to the last acknowledgement.
    pub seconds: f64,
    /// Uploads that completed with the server's offset equal to their length.
    pub completed: usize,
    /// Uploads that failed.
    pub errors: usize,
    /// The first failure, for the log.
    pub first_error: Option<String>,
}

/// Runs `plan.uploads` uploads, at most `plan.concurrency` at a time, each on its own
/// keep-alive connection: create, `PATCH` chunk after chunk, then `HEAD` to check the offset.
pub async fn upload_many(endpoint: &Endpoint, pattern: &Pattern, plan: UploadPlan) -> UploadReport {
    let permits = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut uploads = JoinSet::new();
    for _ in 0..plan.uploads {
        let (endpoint, pattern) = (endpoint.clone(), pattern.clone());
        let (permits, acknowledged) = (permits.clone(), acknowledged.clone());
        uploads.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            upload_one(&endpoint, &pattern, plan.size, plan.chunk, &acknowledged).await
        });
    }
    let mut report = UploadReport::default();
    let all = async {
        while let Some(outcome) = uploads.join_next().await {
            match outcome.expect("upload task panicked") {
                Ok(()) => report.completed += 1,
                Err(error) => report.fail(error.to_string()),
            }
        }
    };
    if timeout(plan.deadline, all).await.is_err() {
        let unfinished = plan.uploads - report.completed - report.errors;
        report.errors += unfinished;
        report.first_error.get_or_insert(format!(
            "{unfinished} uploads unfinished after {:?}",
            plan.deadline
        ));
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.bytes = acknowledged.load(Ordering::Relaxed);
    report
}

impl UploadReport {
    fn fail(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

/// One upload on one connection; adds the bytes the server acknowledges to `acknowledged`.
pub async fn upload_one(
    endpoint: &Endpoint,
    pattern: &Pattern,
    size: u64,
    chunk: u64,
    acknowledged: &AtomicU64,
) -> Result<(), TusError> {
    let mut connection = endpoint.connect().await?;
    let upload = connection.create(size).await?;
    let mut offset = 0;
    while offset < size {
        let len = chunk.max(1).min(size - offset);
        let body = PatchBody::stream(pattern, len);
        let new_offset = connection.patch(&upload, offset, len, body).await?;
        acknowledged.fetch_add(new_offset.saturating_sub(offset), Ordering::Relaxed);
        if new_offset != offset + len {
            return Err(short_write(offset + len, new_offset));
        }
        offset = new_offset;
    }
    let stored = connection.head(&upload).await?;
    if stored != size {
        return Err(short_write(size, stored));
    }
    Ok(())
}

fn short_write(expected: u64, got: u64) -> TusError {
    TusError::Status {
        method: http::Method::PATCH,
        status: StatusCode::OK,
        body: format!("offset {got}, expected {expected}"),
    }
}

/// How [`hold_idle`] opens its connections.
#[derive(Clone, Copy, Debug)]
pub struct IdlePlan {
    /// Connections to hold.
    pub connections: usize,
    /// How many are being set up at once (connect, create, send the `PATCH` head), so the
    /// server's accept backlog is not flooded.
    pub setup_concurrency: usize,
    /// Each upload's `Upload-Length`, also each `PATCH`'s `Content-Length`.
    pub upload_length: u64,
    /// Bytes of the body sent before going quiet.
    pub head_bytes: usize,
    /// Longest the setup may take.
    pub deadline: Duration,
}

/// Counts of the held connections, updated as they change.
#[derive(Debug, Default)]
pub struct IdleCounts {
    /// Connections whose `PATCH` body has stalled with no answer yet.
    pub holding: AtomicUsize,
    /// Connections that never got to holding.
    pub failed: AtomicUsize,
    /// Held requests the server answered (or cut) while the client stayed quiet.
    pub answered: AtomicUsize,
    /// The first failure, for the log.
    pub first_error: Mutex<Option<String>>,
    /// What the first held request that ended got: an answer or the error that ended it.
    pub first_answer: Mutex<Option<String>>,
}

impl IdleCounts {
    fn fail(&self, error: impl ToString) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("not poisoned");
        first.get_or_insert_with(|| error.to_string());
    }
}

/// What [`hold_idle`] reports once its connections are set up.
#[derive(Debug, Serialize)]
pub struct HoldingReport {
    /// Connections holding a `PATCH` open.
    pub holding: usize,
    /// Connections that failed to get there.
    pub failed: usize,
    /// Seconds the setup took.
    pub setup_seconds: f64,
    /// The first failure.
    pub first_error: Option<String>,
}

/// Opens `plan.connections` connections, each holding an upload's `PATCH` open after a few
/// bytes; reports once every one is holding (or failed, or the deadline passed); then awaits
/// `release`, after which every connection is dropped. Returns what `release` returned.
pub async fn hold_idle<T>(
    endpoint: &Endpoint,
    pattern: &Pattern,
    plan: IdlePlan,
    on_holding: impl FnOnce(HoldingReport),
    release: impl Future<Output = T>,
) -> (T, Arc<IdleCounts>) {
    let counts = Arc::new(IdleCounts::default());
    let permits = Arc::new(Semaphore::new(plan.setup_concurrency.max(1)));
    let started = Instant::now();
    let mut held = JoinSet::new();
    for _ in 0..plan.connections {
        let (endpoint, pattern) = (endpoint.clone(), pattern.clone());
        let (counts, permits) = (counts.clone(), permits.clone());
        held.spawn(async move {
            let permit = permits.acquire_owned().await.expect("never closed");
            hold_one(&endpoint, &pattern, plan, &counts, permit).await;
        });
    }
    let all_set_up = async {
        while counts.holding.load(Ordering::Relaxed) + counts.failed.load(Ordering::Relaxed)
            < plan.connections
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let _ = timeout(plan.deadline, all_set_up).await;
    on_holding(HoldingReport {
        holding: counts.holding.load(Ordering::Relaxed),
        failed: counts.failed.load(Ordering::Relaxed),
        setup_seconds: started.elapsed().as_secs_f64(),
        first_error: counts.first_error.lock().expect("not poisoned").clone(),
    });
    let released = release.await;
    held.abort_all();
    (released, counts)
}

async fn hold_one(
    endpoint: &Endpoint,
    pattern: &Pattern,
    plan: IdlePlan,
    counts: &IdleCounts,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let set_up = async {
        let mut connection = endpoint.connect().await?;
        let upload = connection.create(plan.upload_length).await?;
        Ok::<_, TusError>((connection, upload))
    };
    let (mut connection, upload) = match set_up.await {
        Ok(set_up) => set_up,
        Err(error) => return counts.fail(error),
    };
    let (stalled, stalled_seen) = oneshot::channel();
    let body = PatchBody::stall(pattern, plan.head_bytes, stalled);
    let request = connection.patch_request(&upload, 0, plan.upload_length, body);
    let answer = connection.exchange(request, StatusCode::NO_CONTENT);
    tokio::pin!(answer);
    tokio::select! {
        _ = stalled_seen => {}
        answer = &mut answer => {
            let error = answer.err().map_or("answered before the body ended".into(), |e| e.to_string());
            return counts.fail(error);
        }
    }
    drop(permit);
    counts.holding.fetch_add(1, Ordering::Relaxed);
    // Resolves only if the server answers or cuts the request while the client is quiet.
    let answer = match answer.await {
        Ok(_) => "answered 204 before the body ended".to_owned(),
        Err(error) => error.to_string(),
    };
    counts.holding.fetch_sub(1, Ordering::Relaxed);
    counts.answered.fetch_add(1, Ordering::Relaxed);
    let mut first = counts.first_answer.lock().expect("not poisoned");
    first.get_or_insert(answer);
}

/// Longest a HEAD loop's connection and creation may take.
const SET_UP_DEADLINE: Duration = Duration::from_secs(30);

/// What [`heads`] measured.
#[derive(Debug, Default, Serialize)]
pub struct HeadReport {
    /// HEADs answered 200 with an offset.
    pub requests: u64,
    /// Seconds the HEAD loops ran.
    pub seconds: f64,
    /// Failed requests (each failure ends its connection's loop).
    pub errors: usize,
    /// The first failure.
    pub first_error: Option<String>,
}

/// `connections` connections each create an upload, then all `HEAD` their upload back to back
/// for `duration`.
pub async fn heads(endpoint: &Endpoint, connections: usize, duration: Duration) -> HeadReport {
    let ready = Arc::new(Barrier::new(connections + 1));
    let mut loops = JoinSet::new();
    for _ in 0..connections {
        let (endpoint, ready) = (endpoint.clone(), ready.clone());
        loops.spawn(async move {
            let set_up = async {
                let mut connection = endpoint.connect().await?;
                let upload = connection.create(1).await?;
                Ok::<_, TusError>((connection, upload))
            };
            let set_up = timeout(SET_UP_DEADLINE, set_up)
                .await
                .unwrap_or(Err(TusError::Timeout("connect and create")));
            ready.wait().await;
            let (mut connection, upload) = set_up?;
            let deadline = Instant::now() + duration;
            let mut requests = 0;
            while Instant::now() < deadline {
                connection.head(&upload).await?;
                requests += 1;
            }
            Ok::<u64, TusError>(requests)
        });
    }
    ready.wait().await;
    let started = Instant::now();
    let mut report = HeadReport::default();
    // Each loop ends by itself after `duration`; the margin covers one slow last request.
    let all = async {
        while let Some(outcome) = loops.join_next().await {
            match outcome.expect("HEAD task panicked") {
                Ok(requests) => report.requests += requests,
                Err(error) => {
                    report.errors += 1;
                    report.first_error.get_or_insert(error.to_string());
                }
            }
        }
    };
    if timeout(duration + Duration::from_secs(30), all)
        .await
        .is_err()
    {
        report
            .first_error
            .get_or_insert("HEAD loops did not end".into());
        report.errors += 1;
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}
