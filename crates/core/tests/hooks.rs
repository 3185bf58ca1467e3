//! Hooks in the service and the delivery worker, over the in-memory store, locker and outbox,
//! with a transport the test scripts (it fails, refuses, records).

use bytes::Bytes;
use futures_util::StreamExt;
use resumable_core::{
    Append, HookAnswer, HookCallError, HookConfig, HookEvent, HookKind, HookRejection,
    HookTransport, Hooks, Length, MemoryLocker, MemoryOutbox, MemoryStore, NewUpload, Offset,
    Outbox, Owner, Protocol, ServiceConfig, SystemClock, UploadError, UploadService,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Fails the first `failures` sends, refuses `pre-finish` when told to, records every send.
#[derive(Default)]
struct Scripted {
    failures: Mutex<u32>,
    refuse_finish: bool,
    sent: Mutex<Vec<HookEvent>>,
}

#[async_trait::async_trait]
impl HookTransport for Scripted {
    async fn send(&self, event: &HookEvent) -> Result<HookAnswer, HookCallError> {
        self.sent.lock().unwrap().push(event.clone());
        {
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(HookCallError::Status(500));
            }
        }
        if self.refuse_finish && event.kind == HookKind::PreFinish {
            return Ok(HookAnswer {
                reject: Some(HookRejection {
                    status: Some(460),
                    message: Some("not this one".into()),
                }),
                ..HookAnswer::default()
            });
        }
        Ok(HookAnswer::default())
    }
}

impl Scripted {
    fn kinds(&self) -> Vec<HookKind> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|event| event.kind)
            .collect()
    }
}

fn setup(transport: Arc<Scripted>) -> (Arc<UploadService>, Arc<Hooks>, Arc<MemoryOutbox>) {
    let outbox = Arc::new(MemoryOutbox::default());
    let config = HookConfig {
        retry_min: Duration::from_millis(1),
        retry_max: Duration::from_millis(5),
        ..HookConfig::default()
    };
    let hooks = Arc::new(Hooks::new(
        config,
        transport,
        outbox.clone(),
        Arc::new(SystemClock),
    ));
    let service = UploadService::new(
        Arc::new(MemoryStore::default()),
        Arc::new(MemoryLocker::new(Duration::from_secs(5))),
        Arc::new(SystemClock),
        ServiceConfig::default(),
    )
    .with_hooks(hooks.clone());
    (Arc::new(service), hooks, outbox)
}

fn new_upload(length: u64) -> NewUpload {
    NewUpload {
        owner: Owner::anonymous(),
        length: Length::Known(length),
        metadata: Default::default(),
        concat: None,
        protocol: Protocol::Tus,
        repr_digest: None,
        limits: Default::default(),
        creator: None,
    }
}

fn append(offset: u64, bytes: &'static [u8]) -> Append {
    Append {
        offset: Offset(offset),
        declared_length: None,
        content_length: Some(bytes.len() as u64),
        checksum: None,
        unannounced_trailer: None,
        ends_upload: false,
        limits: Default::default(),
        body: futures_util::stream::iter([Ok(Bytes::from_static(bytes))]).boxed(),
    }
}

async fn wait_until_empty(outbox: &MemoryOutbox) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !outbox.pending(1).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "outbox not drained");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn the_worker_retries_until_delivered_in_order_and_drains_the_outbox() {
    let transport = Arc::new(Scripted::default());
    let (service, hooks, outbox) = setup(transport.clone());
    let owner = Owner::anonymous();
    let id = service.create(new_upload(3)).await.unwrap().info.id;
    service
        .append(&owner, &id, append(0, b"abc"))
        .await
        .unwrap();
    // Recorded before the worker runs: what a restart finds.
    assert_eq!(outbox.pending(10).await.unwrap().len(), 3);
    *transport.failures.lock().unwrap() = 4;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(hooks.clone().deliver(stop.clone()));
    wait_until_empty(&outbox).await;
    stop.cancel();
    worker.await.unwrap();

    let delivered: Vec<HookKind> = transport
        .kinds()
        .into_iter()
        .filter(|kind| !kind.is_blocking())
        .collect();
    // Four failed attempts at post-create, then each once.
    let mut expected = vec![HookKind::PostCreate; 5];
    expected.extend([HookKind::PostReceive, HookKind::PostFinish]);
    assert_eq!(delivered, expected);
}

#[tokio::test]
async fn a_refused_finish_fails_the_upload_without_post_finish() {
    let transport = Arc::new(Scripted {
        refuse_finish: true,
        ..Scripted::default()
    });
    let (service, _hooks, outbox) = setup(transport.clone());
    let owner = Owner::anonymous();
    let id = service.create(new_upload(2)).await.unwrap().info.id;
    let refused = service.append(&owner, &id, append(0, b"no")).await;
    match refused {
        Err(UploadError::HookRefused { status, message }) => {
            assert_eq!(status.get(), 460);
            assert_eq!(message, "not this one");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let status = service.status(&owner, &id).await.unwrap();
    assert_eq!(status.offset, Offset(2));
    assert_eq!(status.info.failure(), Some((460, "not this one")));
    assert!(matches!(
        service.read(&owner, &id, 0..2).await,
        Err(UploadError::HookRefused { .. })
    ));
    let recorded: Vec<HookKind> = outbox
        .pending(10)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.event.kind)
        .collect();
    assert_eq!(recorded, [HookKind::PostCreate, HookKind::PostReceive]);
}

#[tokio::test]
async fn a_finish_whose_hook_is_down_waits_and_the_next_status_settles_it() {
    let transport = Arc::new(Scripted::default());
    let (service, _hooks, outbox) = setup(transport.clone());
    let owner = Owner::anonymous();
    let id = service.create(new_upload(2)).await.unwrap().info.id;
    // pre-create and post-* go through; the pre-finish call fails once.
    *transport.failures.lock().unwrap() = 1;
    let waiting = service.append(&owner, &id, append(0, b"ok")).await;
    assert!(
        matches!(waiting, Err(UploadError::HookUnavailable(_))),
        "{waiting:?}"
    );
    assert!(matches!(
        service.read(&owner, &id, 0..2).await,
        Err(UploadError::Incomplete)
    ));
    service.status(&owner, &id).await.unwrap();
    assert!(service.read(&owner, &id, 0..2).await.is_ok());
    let recorded: Vec<HookKind> = outbox
        .pending(10)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.event.kind)
        .collect();
    assert_eq!(
        recorded,
        [
            HookKind::PostCreate,
            HookKind::PostReceive,
            HookKind::PostFinish
        ]
    );
}

fn recorded_kinds(entries: Vec<resumable_core::OutboxEntry>) -> Vec<HookKind> {
    entries.into_iter().map(|entry| entry.event.kind).collect()
}

#[tokio::test]
async fn appends_that_do_not_complete_ask_no_finish_and_empty_ones_report_no_progress() {
    let transport = Arc::new(Scripted::default());
    let (service, _hooks, outbox) = setup(transport.clone());
    let owner = Owner::anonymous();
    let id = service.create(new_upload(4)).await.unwrap().info.id;
    service.append(&owner, &id, append(0, b"ab")).await.unwrap();
    service.append(&owner, &id, append(2, b"")).await.unwrap();
    assert!(!transport.kinds().contains(&HookKind::PreFinish));
    assert_eq!(
        recorded_kinds(outbox.pending(10).await.unwrap()),
        [HookKind::PostCreate, HookKind::PostReceive]
    );
}

#[tokio::test]
async fn settling_at_start_up_runs_the_finish_hooks_still_owed_once() {
    let transport = Arc::new(Scripted::default());
    let (service, _hooks, outbox) = setup(transport.clone());
    let owner = Owner::anonymous();
    let owed = service.create(new_upload(2)).await.unwrap().info.id;
    let unfinished = service.create(new_upload(5)).await.unwrap().info.id;
    service
        .append(&owner, &unfinished, append(0, b"x"))
        .await
        .unwrap();
    // The pre-finish call fails: the complete upload owes its finish.
    *transport.failures.lock().unwrap() = 1;
    let waiting = service.append(&owner, &owed, append(0, b"ok")).await;
    assert!(matches!(waiting, Err(UploadError::HookUnavailable(_))));

    assert_eq!(service.settle_finishes().await.unwrap(), 1);
    assert!(service.read(&owner, &owed, 0..2).await.is_ok());
    // Nothing is owed any more, and an unfinished upload never was.
    assert_eq!(service.settle_finishes().await.unwrap(), 0);
    let finishes = recorded_kinds(outbox.pending(20).await.unwrap())
        .into_iter()
        .filter(|kind| *kind == HookKind::PostFinish)
        .count();
    assert_eq!(finishes, 1);
}

/// Records how each call to the receiver ended.
#[derive(Default)]
struct Outcomes(Mutex<Vec<(HookKind, resumable_core::HookOutcome)>>);

impl resumable_core::Observer for Outcomes {
    fn hook(&self, kind: HookKind, outcome: resumable_core::HookOutcome) {
        self.0.lock().unwrap().push((kind, outcome));
    }
}

#[tokio::test]
async fn the_observer_hears_every_call_and_delivery_attempt() {
    use resumable_core::HookOutcome::{Delivered, Status, Timeout};
    /// Does not answer the first `post-create` attempt; fails the first `post-finish` one.
    #[derive(Default)]
    struct Flaky(Mutex<Vec<HookKind>>);
    #[async_trait::async_trait]
    impl HookTransport for Flaky {
        async fn send(&self, event: &HookEvent) -> Result<HookAnswer, HookCallError> {
            let first = {
                let mut seen = self.0.lock().unwrap();
                let first = !seen.contains(&event.kind);
                seen.push(event.kind);
                first
            };
            match event.kind {
                HookKind::PostCreate if first => std::future::pending().await,
                HookKind::PostFinish if first => Err(HookCallError::Status(502)),
                _ => Ok(HookAnswer::default()),
            }
        }
    }
    let outbox = Arc::new(MemoryOutbox::default());
    let outcomes = Arc::new(Outcomes::default());
    let config = HookConfig {
        timeout: Duration::from_millis(50),
        retry_min: Duration::from_millis(1),
        retry_max: Duration::from_millis(5),
        ..HookConfig::default()
    };
    let hooks = Arc::new(
        Hooks::new(
            config,
            Arc::new(Flaky::default()),
            outbox.clone(),
            Arc::new(SystemClock),
        )
        .with_observer(outcomes.clone()),
    );
    let service = UploadService::new(
        Arc::new(MemoryStore::default()),
        Arc::new(MemoryLocker::new(Duration::from_secs(5))),
        Arc::new(SystemClock),
        ServiceConfig::default(),
    )
    .with_hooks(hooks.clone());
    let owner = Owner::anonymous();
    let id = service.create(new_upload(2)).await.unwrap().info.id;
    service.append(&owner, &id, append(0, b"ok")).await.unwrap();
    assert_eq!(
        *outcomes.0.lock().unwrap(),
        [
            (HookKind::PreCreate, Delivered),
            (HookKind::PreFinish, Delivered)
        ]
    );
    let stop = CancellationToken::new();
    let worker = tokio::spawn(hooks.clone().deliver(stop.clone()));
    wait_until_empty(&outbox).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(
        outcomes.0.lock().unwrap()[2..],
        [
            (HookKind::PostCreate, Timeout),
            (HookKind::PostCreate, Delivered),
            (HookKind::PostReceive, Delivered),
            (HookKind::PostFinish, Status),
            (HookKind::PostFinish, Delivered)
        ]
    );
}
