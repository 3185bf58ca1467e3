//! The locker conformance kit: one check per item of [`Locker`]'s `# Behavior` list, run against
//! every backend with [`locker_conformance_tests!`](crate::locker_conformance_tests).
//!
//! Each check runs on two lockers of one backend, two "nodes": a distributed backend must keep
//! its promises between nodes as well as within one (the in-process locker is one node, and
//! passes the same instance twice).

use crate::lock::{LockError, LockGuard, Locker};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, timeout};

/// The wait timeout of the lockers most checks run on: long enough never to expire in a
/// passing check, so a hang fails it instead of a timeout passing it.
pub const WAIT: Duration = Duration::from_secs(10);

/// The wait timeout of the lockers the timeout check runs on.
pub const SHORT_WAIT: Duration = Duration::from_millis(400);

/// How long a freed key may take to be taken again after a guard was dropped without release:
/// far less than any lease, so a backend that only lets its lease run out fails.
pub const BACKGROUND_RELEASE: Duration = Duration::from_secs(2);

/// How long a check lets a wrong signal (a takeover nobody asked for, a loss) show before it
/// concludes none came: a few round trips to any backend.
pub const SETTLE: Duration = Duration::from_millis(150);

/// Two lockers of one backend (two "nodes"), and what must live as long as they do.
pub type Nodes<G> = (Arc<dyn Locker>, Arc<dyn Locker>, G);

/// Expands to one `#[tokio::test]` per conformance check. `$make` is a function of the wait
/// timeout (a `Duration`) returning a future of `Option<`[`Nodes`]`>`: two lockers sharing one
/// backend, with that timeout, and a guard dropped after the check (a server to stop, or `()`).
/// `None` skips the check: the backend is not available here (its maker says why, and fails
/// instead when the backend is required).
#[macro_export]
macro_rules! locker_conformance_tests {
    ($make:expr) => {
        $crate::locker_conformance_tests!(@tests $make, $crate::lock_conformance::WAIT;
            mutual_exclusion_under_contention,
            takeover_asks_the_holder_on_the_same_node,
            takeover_asks_the_holder_across_nodes,
            newest_waiter_wins,
            try_lock_takes_only_a_free_lock_and_disturbs_no_holder,
            try_lock_leaves_a_lock_with_waiters_to_them,
            fence_increases_with_each_holder,
            release_frees_at_once,
            drop_without_release_frees_the_lock,
            other_keys_are_independent,
            a_held_lock_is_not_lost,
        );
        $crate::locker_conformance_tests!(@tests $make, $crate::lock_conformance::SHORT_WAIT;
            a_holder_that_never_lets_go_times_out_the_waiter,
        );
    };
    (@tests $make:expr, $wait:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((first, second, _guard)) = ($make)($wait).await else {
                    return;
                };
                $crate::lock_conformance::$name(first, second).await;
            }
        )*
    };
}

/// Whether `future` is ready at its first poll.
fn is_ready<F: Future>(future: F) -> bool {
    let mut future = pin!(future);
    let mut context = Context::from_waker(std::task::Waker::noop());
    matches!(future.as_mut().poll(&mut context), Poll::Ready(_))
}

/// A key no other check uses, so checks may share a backend.
fn fresh_key(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4())
}

async fn lock(locker: &Arc<dyn Locker>, key: &str) -> LockGuard {
    timeout(WAIT, locker.lock(key))
        .await
        .expect("lock hung past its own timeout")
        .expect("lock")
}

async fn asked(guard: &LockGuard) {
    timeout(WAIT, guard.takeover_requested())
        .await
        .expect("the holder was never asked to let go");
}

/// A lock call running on its own task: it holds the guard until told to release it.
fn spawn_lock(locker: &Arc<dyn Locker>, key: &str) -> tokio::task::JoinHandle<LockGuard> {
    let locker = locker.clone();
    let key = key.to_owned();
    tokio::spawn(async move { lock(&locker, &key).await })
}

/// Many tasks on both nodes take the same lock over and over: no two ever hold it together,
/// and each holder's fence is above the one before it.
pub async fn mutual_exclusion_under_contention(first: Arc<dyn Locker>, second: Arc<dyn Locker>) {
    const TASKS: usize = 12;
    const ROUNDS: usize = 8;
    let key = fresh_key("contended");
    let holders = Arc::new(AtomicUsize::new(0));
    let last_fence = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let locker = if task % 2 == 0 { &first } else { &second }.clone();
        let (key, holders, last_fence) = (key.clone(), holders.clone(), last_fence.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let guard = lock(&locker, &key).await;
                assert_eq!(
                    holders.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                let before = last_fence.swap(guard.fence(), Ordering::SeqCst);
                assert!(
                    guard.fence() > before,
                    "fence {} after {before}",
                    guard.fence()
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                guard.release().await.expect("release");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
}

async fn takeover_asks_the_holder(holder_node: Arc<dyn Locker>, waiter_node: Arc<dyn Locker>) {
    let key = fresh_key("takeover");
    let holder = lock(&holder_node, &key).await;
    assert!(!is_ready(holder.takeover_requested()));
    let waiter = spawn_lock(&waiter_node, &key);
    asked(&holder).await;
    assert!(!waiter.is_finished(), "granted while the holder holds");
    holder.release().await.expect("release");
    let granted = timeout(WAIT, waiter).await.expect("waiter").expect("task");
    assert!(!is_ready(granted.takeover_requested()));
    granted.release().await.expect("release");
}

/// A second `lock` asks the holder to let go, and gets the lock once it does.
pub async fn takeover_asks_the_holder_on_the_same_node(
    first: Arc<dyn Locker>,
    _second: Arc<dyn Locker>,
) {
    takeover_asks_the_holder(first.clone(), first).await;
}

/// A `lock` on one node asks the holder on the other node to let go.
pub async fn takeover_asks_the_holder_across_nodes(
    first: Arc<dyn Locker>,
    second: Arc<dyn Locker>,
) {
    takeover_asks_the_holder(first.clone(), second.clone()).await;
    takeover_asks_the_holder(second, first).await;
}

/// Of two waiters, the newer one ends up holding the lock undisturbed; the older one, granted
/// while the newer one waits, is asked to let go.
pub async fn newest_waiter_wins(first: Arc<dyn Locker>, second: Arc<dyn Locker>) {
    let key = fresh_key("newest");
    let holder = lock(&first, &key).await;
    let newest_done = Arc::new(AtomicBool::new(false));
    let older = {
        let (locker, key, newest_done) = (second.clone(), key.clone(), newest_done.clone());
        tokio::spawn(async move {
            let guard = lock(&locker, &key).await;
            if !newest_done.load(Ordering::SeqCst) {
                // The newest request still waits (it cannot hold the lock while this does).
                asked(&guard).await;
            }
            guard.release().await.expect("release");
        })
    };
    asked(&holder).await;
    let newest = {
        let (locker, key, newest_done) = (first.clone(), key.clone(), newest_done.clone());
        tokio::spawn(async move {
            let guard = lock(&locker, &key).await;
            assert!(
                !is_ready(guard.takeover_requested()),
                "the newest request was asked to let go when granted"
            );
            // The older request, still waiting or not, must not ask it either.
            tokio::time::sleep(SETTLE).await;
            assert!(
                !is_ready(guard.takeover_requested()),
                "an older request asked the newest one to let go"
            );
            newest_done.store(true, Ordering::SeqCst);
            guard.release().await.expect("release");
        })
    };
    // Lets the newest request queue behind the holder, so the older one is usually granted
    // while it waits; the check holds whichever way the race goes.
    tokio::time::sleep(SETTLE).await;
    holder.release().await.expect("release");
    timeout(WAIT, newest).await.expect("newest").expect("task");
    timeout(WAIT, older).await.expect("older").expect("task");
}

/// A holder that ignores the request keeps the lock, and the waiter fails with `Timeout`.
pub async fn a_holder_that_never_lets_go_times_out_the_waiter(
    first: Arc<dyn Locker>,
    second: Arc<dyn Locker>,
) {
    let key = fresh_key("stubborn");
    let stubborn = lock(&first, &key).await;
    let started = Instant::now();
    let result = timeout(SHORT_WAIT + WAIT, second.lock(&key)).await;
    let elapsed = started.elapsed();
    assert_eq!(result.expect("hung").err(), Some(LockError::Timeout));
    assert!(
        elapsed >= SHORT_WAIT.mul_f32(0.9),
        "gave up after {elapsed:?}, before its timeout"
    );
    assert!(is_ready(stubborn.takeover_requested()));
    assert!(first.try_lock(&key).await.expect("try_lock").is_none());
    assert!(second.try_lock(&key).await.expect("try_lock").is_none());
    stubborn.release().await.expect("release");
}

/// `try_lock` takes a free lock, returns `None` for a held one without asking its holder, and
/// its guard is asked to let go by a later `lock` like any other.
pub async fn try_lock_takes_only_a_free_lock_and_disturbs_no_holder(
    first: Arc<dyn Locker>,
    second: Arc<dyn Locker>,
) {
    let key = fresh_key("try");
    let holder = first
        .try_lock(&key)
        .await
        .expect("try_lock")
        .expect("the lock is free");
    assert!(first.try_lock(&key).await.expect("try_lock").is_none());
    assert!(second.try_lock(&key).await.expect("try_lock").is_none());
    tokio::time::sleep(SETTLE).await;
    assert!(
        !is_ready(holder.takeover_requested()),
        "try_lock disturbed the holder"
    );
    let waiter = spawn_lock(&second, &key);
    asked(&holder).await;
    holder.release().await.expect("release");
    let granted = timeout(WAIT, waiter).await.expect("waiter").expect("task");
    granted.release().await.expect("release");
    let again = second.try_lock(&key).await.expect("try_lock");
    assert!(again.is_some(), "a released lock is free for try_lock");
}

/// `try_lock` does not take a lock that a `lock` call waits for.
pub async fn try_lock_leaves_a_lock_with_waiters_to_them(
    first: Arc<dyn Locker>,
    second: Arc<dyn Locker>,
) {
    let key = fresh_key("waited");
    let holder = lock(&first, &key).await;
    let waiter = spawn_lock(&second, &key);
    asked(&holder).await;
    assert!(first.try_lock(&key).await.expect("try_lock").is_none());
    assert!(second.try_lock(&key).await.expect("try_lock").is_none());
    holder.release().await.expect("release");
    let granted = timeout(WAIT, waiter).await.expect("waiter").expect("task");
    granted.release().await.expect("release");
}

/// Every new holder, whichever node and however it got the lock, has a greater fence.
pub async fn fence_increases_with_each_holder(first: Arc<dyn Locker>, second: Arc<dyn Locker>) {
    let key = fresh_key("fence");
    let mut fences = Vec::new();
    let guard = lock(&first, &key).await;
    fences.push(guard.fence());
    guard.release().await.expect("release");
    let guard = lock(&second, &key).await;
    fences.push(guard.fence());
    drop(guard);
    let guard = timeout(WAIT, async {
        loop {
            if let Some(guard) = first.try_lock(&key).await.expect("try_lock") {
                break guard;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a dropped guard frees its lock");
    fences.push(guard.fence());
    let waiter = spawn_lock(&second, &key);
    asked(&guard).await;
    guard.release().await.expect("release");
    let guard = timeout(WAIT, waiter).await.expect("waiter").expect("task");
    fences.push(guard.fence());
    guard.release().await.expect("release");
    assert!(
        fences.windows(2).all(|pair| pair[0] < pair[1]),
        "fences {fences:?}"
    );
}

/// After `release` returns, the other node takes the key without waiting.
pub async fn release_frees_at_once(first: Arc<dyn Locker>, second: Arc<dyn Locker>) {
    let key = fresh_key("release");
    let guard = lock(&first, &key).await;
    guard.release().await.expect("release");
    let again = second.try_lock(&key).await.expect("try_lock");
    assert!(again.is_some(), "still held after release returned");
    assert!(first.try_lock(&key).await.expect("try_lock").is_none());
}

/// A guard dropped without `release` frees its lock soon: for a waiter, and for a new caller.
pub async fn drop_without_release_frees_the_lock(first: Arc<dyn Locker>, second: Arc<dyn Locker>) {
    let key = fresh_key("dropped");
    let guard = lock(&first, &key).await;
    let waiter = spawn_lock(&second, &key);
    asked(&guard).await;
    drop(guard);
    let granted = timeout(BACKGROUND_RELEASE, waiter)
        .await
        .expect("a waiter got a dropped lock only after its lease")
        .expect("task");
    drop(granted);
    let again = timeout(BACKGROUND_RELEASE, first.lock(&key))
        .await
        .expect("a dropped lock is free soon")
        .expect("lock");
    again.release().await.expect("release");
}

/// Holding one key neither delays nor disturbs another.
pub async fn other_keys_are_independent(first: Arc<dyn Locker>, second: Arc<dyn Locker>) {
    let (a, b, c) = (fresh_key("a"), fresh_key("b"), fresh_key("c"));
    let on_a = lock(&first, &a).await;
    let on_b = timeout(SETTLE * 10, second.lock(&b))
        .await
        .expect("another key waited")
        .expect("lock");
    let on_c = first.try_lock(&c).await.expect("try_lock");
    assert!(on_c.is_some(), "another key's try_lock failed");
    tokio::time::sleep(SETTLE).await;
    assert!(!is_ready(on_a.takeover_requested()));
    assert!(!is_ready(on_b.takeover_requested()));
    on_a.release().await.expect("release");
    on_b.release().await.expect("release");
}

/// A guard held a while, with the backend up, is not lost, and releases cleanly.
pub async fn a_held_lock_is_not_lost(first: Arc<dyn Locker>, second: Arc<dyn Locker>) {
    let key = fresh_key("held");
    let guard = lock(&first, &key).await;
    tokio::time::sleep(SETTLE).await;
    assert!(!guard.is_lost());
    assert!(!is_ready(guard.lost()));
    assert!(second.try_lock(&key).await.expect("try_lock").is_none());
    assert_eq!(guard.release().await, Ok(()));
}
