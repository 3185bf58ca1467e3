//! Exclusive access to an upload, with takeover: a second request for a held lock asks the holder
//! to let go (it stops reading its body, persists what it has and returns), then proceeds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Why a lock could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The holder did not let go in time.
    #[error("upload is busy: its lock was not released in time")]
    Timeout,
    /// The lock backend failed (e.g. Redis unreachable).
    #[error("lock backend: {0}")]
    Backend(String),
}

/// Proof of holding a lock; dropping it releases the lock.
pub struct LockGuard {
    takeover: CancellationToken,
    _release: Box<dyn Send + Sync>,
}

impl LockGuard {
    /// A guard that releases the lock when `release` is dropped, and reports takeover requests
    /// through `takeover`.
    pub fn new(takeover: CancellationToken, release: impl Send + Sync + 'static) -> Self {
        LockGuard {
            takeover,
            _release: Box::new(release),
        }
    }

    /// Resolves when another request asks for this lock.
    pub fn takeover_requested(&self) -> WaitForCancellationFutureOwned {
        self.takeover.clone().cancelled_owned()
    }
}

/// Grants exclusive access to a key (an upload id, or a simple-protocol client key).
///
/// # Behavior
///
/// - `lock` returns once no other guard for the key is alive.
/// - While a guard is alive, a new `lock` call for its key signals
///   [`LockGuard::takeover_requested`] on it, then waits for it to drop.
/// - When several requests wait, the newest one wins: each holder that still has a waiter behind it
///   is asked to let go as soon as it gets the lock.
/// - If the holder does not let go within the locker's timeout, `lock` fails with
///   [`LockError::Timeout`].
/// - `try_lock` returns a guard only if no guard for the key is alive; otherwise `None`, and
///   the holder is not disturbed. A `lock` call that starts while a `try_lock` guard is alive
///   asks it to let go like any other holder.
#[async_trait::async_trait]
pub trait Locker: Send + Sync + 'static {
    /// Takes the lock of `key`.
    async fn lock(&self, key: &str) -> Result<LockGuard, LockError>;

    /// Takes the lock of `key` if it is free, without asking anyone to let go. Lets a caller
    /// skip checks that only matter before interrupting someone else.
    async fn try_lock(&self, key: &str) -> Result<Option<LockGuard>, LockError>;
}

/// The in-process locker: one async mutex per key currently in use.
pub struct MemoryLocker {
    /// A std mutex: it is held only to look up or remove a slot, never across an await.
    slots: Arc<Mutex<HashMap<String, Arc<Slot>>>>,
    timeout: Duration,
}

#[derive(Default)]
struct Slot {
    mutex: Arc<tokio::sync::Mutex<()>>,
    holder: Mutex<Option<CancellationToken>>,
    waiting: AtomicUsize,
}

/// A reference to a slot that removes it from the map when the last reference goes.
struct SlotHandle {
    key: String,
    slot: Arc<Slot>,
    slots: Arc<Mutex<HashMap<String, Arc<Slot>>>>,
}

impl Drop for SlotHandle {
    fn drop(&mut self) {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // The map holds one reference and this handle another: nobody else uses the slot, and no
        // one can take a new reference while we hold the map's mutex.
        if Arc::strong_count(&self.slot) == 2 {
            slots.remove(&self.key);
        }
    }
}

/// What a [`MemoryLocker`] guard owns; field order makes the permit drop before the handle.
struct MemoryRelease {
    _permit: OwnedMutexGuard<()>,
    _handle: SlotHandle,
}

impl MemoryLocker {
    /// A locker whose `lock` gives up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        MemoryLocker {
            slots: Arc::default(),
            timeout,
        }
    }

    fn handle(&self, key: &str) -> SlotHandle {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let slot = slots.entry(key.to_owned()).or_default().clone();
        SlotHandle {
            key: key.to_owned(),
            slot,
            slots: self.slots.clone(),
        }
    }

    /// How many keys have a slot (held or awaited); for tests of cleanup.
    pub fn keys_in_use(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .len()
    }
}

fn lock_holder(slot: &Slot) -> std::sync::MutexGuard<'_, Option<CancellationToken>> {
    slot.holder
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

#[async_trait::async_trait]
impl Locker for MemoryLocker {
    async fn lock(&self, key: &str) -> Result<LockGuard, LockError> {
        let handle = self.handle(key);
        let slot = handle.slot.clone();
        slot.waiting.fetch_add(1, Ordering::SeqCst);
        if let Some(holder) = lock_holder(&slot).as_ref() {
            holder.cancel();
        }
        let acquired = tokio::time::timeout(self.timeout, slot.mutex.clone().lock_owned()).await;
        let still_waiting = slot.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        let permit = acquired.map_err(|_| LockError::Timeout)?;
        let takeover = CancellationToken::new();
        if still_waiting > 0 {
            takeover.cancel();
        }
        *lock_holder(&slot) = Some(takeover.clone());
        Ok(LockGuard::new(
            takeover,
            MemoryRelease {
                _permit: permit,
                _handle: handle,
            },
        ))
    }

    async fn try_lock(&self, key: &str) -> Result<Option<LockGuard>, LockError> {
        let handle = self.handle(key);
        let slot = handle.slot.clone();
        if slot.waiting.load(Ordering::SeqCst) > 0 {
            return Ok(None);
        }
        let Ok(permit) = slot.mutex.clone().try_lock_owned() else {
            return Ok(None);
        };
        let takeover = CancellationToken::new();
        *lock_holder(&slot) = Some(takeover.clone());
        // A `lock` that began after the check above may have looked for a holder before this
        // one was recorded: it is waiting now, so ask at once (as `lock` does for its waiters).
        if slot.waiting.load(Ordering::SeqCst) > 0 {
            takeover.cancel();
        }
        Ok(Some(LockGuard::new(
            takeover,
            MemoryRelease {
                _permit: permit,
                _handle: handle,
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll};

    fn is_ready<F: Future>(future: F) -> bool {
        let mut future = pin!(future);
        let mut context = Context::from_waker(std::task::Waker::noop());
        matches!(future.as_mut().poll(&mut context), Poll::Ready(_))
    }

    #[tokio::test]
    async fn second_lock_asks_the_holder_to_let_go() {
        let locker = Arc::new(MemoryLocker::new(Duration::from_secs(5)));
        let first = locker.lock("a").await.unwrap();
        assert!(!is_ready(first.takeover_requested()));
        let waiter = tokio::spawn({
            let locker = locker.clone();
            async move { locker.lock("a").await.map(|_| ()) }
        });
        first.takeover_requested().await;
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(locker.keys_in_use(), 0);
    }

    #[tokio::test]
    async fn other_keys_are_independent() {
        let locker = MemoryLocker::new(Duration::from_secs(5));
        let a = locker.lock("a").await.unwrap();
        let b = locker.lock("b").await.unwrap();
        assert!(!is_ready(a.takeover_requested()));
        assert!(!is_ready(b.takeover_requested()));
        assert_eq!(locker.keys_in_use(), 2);
    }

    #[tokio::test]
    async fn a_holder_that_never_lets_go_times_out_the_waiter() {
        let locker = MemoryLocker::new(Duration::from_millis(20));
        let _stubborn = locker.lock("a").await.unwrap();
        assert_eq!(locker.lock("a").await.err(), Some(LockError::Timeout));
        assert_eq!(locker.keys_in_use(), 1);
    }

    #[tokio::test]
    async fn try_lock_takes_only_a_free_lock_and_disturbs_no_holder() {
        let locker = Arc::new(MemoryLocker::new(Duration::from_secs(5)));
        let first = locker
            .try_lock("a")
            .await
            .unwrap()
            .expect("the lock is free");
        assert!(locker.try_lock("a").await.unwrap().is_none());
        assert!(!is_ready(first.takeover_requested()));
        // A plain lock asks a try_lock holder to let go like any other.
        let waiter = tokio::spawn({
            let locker = locker.clone();
            async move { locker.lock("a").await.map(|_| ()) }
        });
        first.takeover_requested().await;
        drop(first);
        waiter.await.unwrap().unwrap();
        assert!(locker.try_lock("a").await.unwrap().is_some());
        assert_eq!(locker.keys_in_use(), 0);
    }

    #[tokio::test]
    async fn try_lock_leaves_a_lock_with_waiters_to_them() {
        let locker = Arc::new(MemoryLocker::new(Duration::from_secs(5)));
        let first = locker.lock("a").await.unwrap();
        let waiter = tokio::spawn({
            let locker = locker.clone();
            async move { locker.lock("a").await.map(|_| ()) }
        });
        first.takeover_requested().await;
        assert!(locker.try_lock("a").await.unwrap().is_none());
        drop(first);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_holder_with_a_waiter_behind_it_is_asked_at_once() {
        let locker = Arc::new(MemoryLocker::new(Duration::from_secs(5)));
        let first = locker.lock("a").await.unwrap();
        let spawn_lock = |locker: Arc<MemoryLocker>| {
            tokio::spawn(async move {
                let guard = locker.lock("a").await.unwrap();
                let asked = is_ready(guard.takeover_requested());
                drop(guard);
                asked
            })
        };
        let second = spawn_lock(locker.clone());
        // Both waiters must be queued before the holder lets go.
        while locker.slots.lock().unwrap()["a"]
            .waiting
            .load(Ordering::SeqCst)
            < 1
        {
            tokio::task::yield_now().await;
        }
        let third = spawn_lock(locker.clone());
        while locker.slots.lock().unwrap()["a"]
            .waiting
            .load(Ordering::SeqCst)
            < 2
        {
            tokio::task::yield_now().await;
        }
        drop(first);
        assert!(
            second.await.unwrap(),
            "the middle request must be told to let go"
        );
        assert!(!third.await.unwrap(), "the newest request keeps the lock");
    }
}
