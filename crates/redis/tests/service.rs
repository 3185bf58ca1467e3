//! The upload service over Redis lockers: two "nodes" (two services, one store, one Redis), as a
//! fleet runs them.

mod common;

use bytes::Bytes;
use futures_util::StreamExt;
use resumable_core::{
    Append, BodyError, BodyStream, Length, Limits, MemoryStore, NewUpload, Offset, Owner, Protocol,
    ServiceConfig, Store, SystemClock, UploadError, UploadService,
};
use resumable_proto::Metadata;
use resumable_redis::{RedisLocker, RedisLockerConfig};
use resumable_testkit::Redis;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::{Instant, timeout};

async fn node(server: &Redis, store: Arc<dyn Store>) -> Arc<UploadService> {
    let config = RedisLockerConfig {
        lease: Duration::from_secs(1),
        wait_timeout: Duration::from_secs(5),
        ..RedisLockerConfig::new(server.url())
    };
    let locker = RedisLocker::connect(config).await.expect("connect");
    Arc::new(UploadService::new(
        store,
        Arc::new(locker),
        Arc::new(SystemClock),
        ServiceConfig {
            expire_after: None,
            min_body_rate: None,
            ..ServiceConfig::default()
        },
    ))
}

async fn created(service: &UploadService) -> resumable_core::UploadId {
    let new = NewUpload {
        owner: Owner::new("alice"),
        length: Length::Known(100),
        metadata: Metadata::default(),
        concat: None,
        limits: Limits::default(),
        protocol: Protocol::Tus,
        repr_digest: None,
        creator: None,
    };
    service.create(new).await.expect("create").info.id
}

/// A body the test feeds chunk by chunk, and that stays open until dropped.
fn open_body() -> (UnboundedSender<Result<Bytes, BodyError>>, BodyStream) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        Some((receiver.recv().await?, receiver))
    });
    (sender, body.boxed())
}

fn append(body: BodyStream) -> Append {
    Append {
        offset: Offset(0),
        declared_length: None,
        content_length: None,
        checksum: None,
        unannounced_trailer: None,
        ends_upload: false,
        limits: Limits::default(),
        body,
    }
}

/// Waits until the store holds `bytes` of the upload (the append in flight has them).
async fn stored(store: &dyn Store, id: &resumable_core::UploadId, bytes: u64) {
    timeout(Duration::from_secs(5), async {
        while store.status(id).await.expect("status").offset < Offset(bytes) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the bytes never reached the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_on_node_b_stops_node_as_append_and_reports_what_it_persisted() {
    let Some(server) = common::redis() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let (node_a, node_b) = (
        node(&server, store.clone()).await,
        node(&server, store.clone()).await,
    );
    let id = created(&node_a).await;
    let (sender, body) = open_body();
    let streaming = tokio::spawn({
        let (node_a, id) = (node_a.clone(), id.clone());
        async move { node_a.append(&Owner::new("alice"), &id, append(body)).await }
    });
    sender
        .send(Ok(Bytes::from_static(b"hello ")))
        .expect("send");
    stored(&*store, &id, 6).await;
    // The client gave up on A (its request half-dead, its body still open) and asks B.
    let asked = Instant::now();
    let status = timeout(
        Duration::from_secs(5),
        node_b.status(&Owner::new("alice"), &id),
    )
    .await
    .expect("B's status hung")
    .expect("status");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(status.offset, Offset(6));
    let stopped = timeout(Duration::from_secs(5), streaming)
        .await
        .expect("A's append never stopped")
        .expect("task");
    assert!(
        matches!(
            stopped,
            Err(UploadError::Interrupted {
                stored: Offset(6),
                reason: BodyError::TakenOver
            })
        ),
        "{stopped:?}"
    );
    drop(sender);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_lease_is_lost_stops_and_keeps_its_bytes() {
    let Some(server) = common::redis() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let node_a = node(&server, store.clone()).await;
    let id = created(&node_a).await;
    let (sender, body) = open_body();
    let streaming = tokio::spawn({
        let (node_a, id) = (node_a.clone(), id.clone());
        async move { node_a.append(&Owner::new("alice"), &id, append(body)).await }
    });
    sender.send(Ok(Bytes::from_static(b"abc"))).expect("send");
    stored(&*store, &id, 3).await;
    // The lease goes from under the holder (as when it ran out during a network split).
    let lock = format!("resumable:lock:{id}");
    assert_eq!(server.cli(&["DEL", &lock]).expect("redis-cli"), "1");
    let stopped = timeout(Duration::from_secs(3), streaming)
        .await
        .expect("the append went on without its lock")
        .expect("task");
    assert!(
        matches!(
            stopped,
            Err(UploadError::Interrupted {
                stored: Offset(3),
                reason: BodyError::LockLost
            })
        ),
        "{stopped:?}"
    );
    // Bytes sent after the loss never reach the store.
    let _ = sender.send(Ok(Bytes::from_static(b"def")));
    let status = node_a
        .status(&Owner::new("alice"), &id)
        .await
        .expect("status");
    assert_eq!(status.offset, Offset(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_as_lock_unavailable_while_redis_is_down() {
    let Some(mut server) = common::redis() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let node_a = node(&server, store.clone()).await;
    let id = created(&node_a).await;
    server.stop();
    let status = timeout(
        Duration::from_secs(5),
        node_a.status(&Owner::new("alice"), &id),
    )
    .await
    .expect("status hung while Redis was down");
    assert!(
        matches!(status, Err(UploadError::LockUnavailable(_))),
        "{status:?}"
    );
    let (sender, body) = open_body();
    sender.send(Ok(Bytes::from_static(b"abc"))).expect("send");
    let appended = node_a.append(&Owner::new("alice"), &id, append(body)).await;
    assert!(
        matches!(appended, Err(UploadError::LockUnavailable(_))),
        "{appended:?}"
    );
    assert_eq!(store.status(&id).await.expect("status").offset, Offset(0));
}
