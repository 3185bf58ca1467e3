//! What only a lease-based locker can do wrong: renewals, losing a lease, Redis going away and
//! coming back, a node dying with its locks held. Each test runs its own redis-server.

mod common;

use resumable_core::{LockError, Locker};
use resumable_redis::{RedisLocker, RedisLockerConfig};
use resumable_testkit::Redis;
use std::time::Duration;
use tokio::time::{Instant, timeout};

const LEASE: Duration = Duration::from_secs(1);

fn config(server: &Redis) -> RedisLockerConfig {
    RedisLockerConfig {
        lease: LEASE,
        wait_timeout: Duration::from_secs(5),
        ..RedisLockerConfig::new(server.url())
    }
}

async fn nodes(server: &Redis) -> (RedisLocker, RedisLocker) {
    let first = RedisLocker::connect(config(server)).await.expect("connect");
    let second = RedisLocker::connect(config(server)).await.expect("connect");
    (first, second)
}

#[tokio::test]
async fn renewals_keep_a_lock_past_its_lease() {
    let Some(server) = common::redis() else {
        return;
    };
    let (first, second) = nodes(&server).await;
    let guard = first.lock("held").await.expect("lock");
    tokio::time::sleep(LEASE * 3).await;
    assert!(!guard.is_lost(), "a renewed lease was lost");
    assert!(second.try_lock("held").await.expect("try_lock").is_none());
    let ttl: i64 = server
        .cli(&["PTTL", "resumable:lock:held"])
        .expect("redis-cli")
        .parse()
        .expect("PTTL");
    assert!(ttl > 0, "the lock key has no lease: {ttl}");
    guard.release().await.expect("release");
    assert_eq!(
        server
            .cli(&["EXISTS", "resumable:lock:held"])
            .expect("redis-cli"),
        "0"
    );
}

#[tokio::test]
async fn a_stolen_lease_is_lost_and_the_thief_has_a_greater_fence() {
    let Some(server) = common::redis() else {
        return;
    };
    let (first, second) = nodes(&server).await;
    let guard = first.lock("stolen").await.expect("lock");
    // As if the lease had run out while the holder was cut off: the key goes, another takes it.
    assert_eq!(
        server
            .cli(&["DEL", "resumable:lock:stolen"])
            .expect("redis-cli"),
        "1"
    );
    let thief = second.try_lock("stolen").await.expect("try_lock");
    let thief = thief.expect("the deleted lock is free");
    assert!(thief.fence() > guard.fence());
    // The next renewal (a third of the lease) is refused.
    timeout(LEASE, guard.lost())
        .await
        .expect("the holder never learnt that its lease was gone");
    assert!(!thief.is_lost());
    assert_eq!(guard.release().await, Err(LockError::Lost));
    // The old holder's release did not free the thief's lock.
    assert!(first.try_lock("stolen").await.expect("try_lock").is_none());
    thief.release().await.expect("release");
}

#[tokio::test]
async fn redis_stopping_loses_the_locks_in_time_and_fails_lock_calls_quickly() {
    let Some(mut server) = common::redis() else {
        return;
    };
    let (first, _second) = nodes(&server).await;
    let guard = first.lock("down").await.expect("lock");
    let acquired = Instant::now();
    server.stop();
    // Lost a margin (a third of the lease) before the lease could expire: at most two thirds
    // of a lease after the last confirmed renewal.
    timeout(LEASE, guard.lost())
        .await
        .expect("no loss while Redis was down");
    assert!(acquired.elapsed() < LEASE, "{:?}", acquired.elapsed());
    let started = Instant::now();
    let locked = timeout(Duration::from_secs(5), first.lock("other")).await;
    let error = locked.expect("lock hung while Redis was down").err();
    assert!(
        matches!(&error, Some(LockError::Backend(message)) if message.starts_with("redis: ")),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let tried = timeout(Duration::from_secs(5), first.try_lock("other")).await;
    assert!(matches!(
        tried.expect("try_lock hung"),
        Err(LockError::Backend(_))
    ));
    assert!(matches!(guard.release().await, Err(LockError::Backend(_))));
}

#[tokio::test]
async fn locks_work_again_once_redis_is_back() {
    let Some(mut server) = common::redis() else {
        return;
    };
    let (first, second) = nodes(&server).await;
    server.stop();
    assert!(matches!(first.lock("k").await, Err(LockError::Backend(_))));
    server.start_again().expect("start redis-server again");
    let started = Instant::now();
    let guard = loop {
        match first.lock("k").await {
            Ok(guard) => break guard,
            Err(LockError::Backend(_)) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("no lock 5 s after Redis came back: {error}"),
        }
    };
    // Takeover across nodes works again too: the pub/sub connection resubscribed. The other
    // node's first call may still fail (503, which clients retry) until its connection is back.
    let waiter = tokio::spawn(async move {
        loop {
            match second.lock("k").await {
                Err(LockError::Backend(_)) if started.elapsed() < Duration::from_secs(5) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                locked => break locked.map(drop),
            }
        }
    });
    timeout(Duration::from_secs(5), guard.takeover_requested())
        .await
        .expect("no takeover request after Redis came back");
    guard.release().await.expect("release");
    timeout(Duration::from_secs(5), waiter)
        .await
        .expect("waiter")
        .expect("task")
        .expect("lock");
}

#[tokio::test]
async fn a_dead_nodes_locks_are_free_within_the_lease() {
    let Some(server) = common::redis() else {
        return;
    };
    let (first, second) = nodes(&server).await;
    let guard = first.lock("orphan").await.expect("lock");
    // The node dies: its guard is never released nor dropped, and its renewals stop.
    std::mem::forget(guard);
    drop(first);
    let died = Instant::now();
    assert!(second.try_lock("orphan").await.expect("try_lock").is_none());
    let guard = timeout(LEASE * 3, second.lock("orphan"))
        .await
        .expect("the dead node's lock was never freed")
        .expect("lock");
    assert!(
        died.elapsed() <= LEASE + Duration::from_millis(500),
        "{:?}",
        died.elapsed()
    );
    guard.release().await.expect("release");
}

#[tokio::test]
async fn a_dropped_locker_loses_its_guards() {
    let Some(server) = common::redis() else {
        return;
    };
    let (first, _second) = nodes(&server).await;
    let guard = first.lock("dropped").await.expect("lock");
    drop(first);
    timeout(Duration::from_secs(1), guard.lost())
        .await
        .expect("a guard outlived its locker's renewals");
}

#[tokio::test]
async fn a_bad_url_or_lease_is_refused_at_connect() {
    let refused = RedisLocker::connect(RedisLockerConfig::new("http://127.0.0.1:1")).await;
    assert!(matches!(refused, Err(LockError::Backend(_))));
    let nobody = RedisLocker::connect(RedisLockerConfig::new("redis://127.0.0.1:1")).await;
    assert!(matches!(nobody, Err(LockError::Backend(_))));
    let short = RedisLocker::connect(RedisLockerConfig {
        lease: Duration::from_millis(10),
        ..RedisLockerConfig::new("redis://127.0.0.1:1")
    })
    .await;
    assert!(matches!(short, Err(LockError::Backend(message)) if message.contains("lease")));
}
