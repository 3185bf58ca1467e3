//! Exclusive access to an upload, with takeover: a second request for a held lock asks the holder
//! to let go (it stops reading its body, persists what it has and returns), then proceeds.
//!
//! A backend hands out [`LockGuard`]s built over its own [`HeldLock`]; the guard carries what
//! every holder needs whatever the backend: the takeover request, the loss of the lock (a lease
//! that expired), a fencing token and an asynchronous release. The checks of the contract are in
//! [`crate::lock_conformance`], run on every backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Why a lock could not be taken or released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The holder did not let go in time.
    #[error("upload is busy: its lock was not released in time")]
    Timeout,
    /// The lock backend failed (e.g. Redis unreachable); nothing is known about the lock.
    #[error("lock backend: {0}")]
    Backend(String),
    /// The lock was no longer held when it was released: its lease ran out, or another holder
    /// took it over after that.
    #[error("the lock was lost before it was released")]
    Lost,
}

/// A backend's side of a held lock: what frees it.
///
/// Dropping it without [`HeldLock::release`] must free the lock too, without blocking: at once,
/// or in the background (best effort; a lease-based backend's lease runs out anyway).
#[async_trait::async_trait]
pub trait HeldLock: Send + Sync + 'static {
    /// Frees the lock; once this returns `Ok`, a `lock` or `try_lock` of the key on any node
    /// can take it without waiting.
    async fn release(self: Box<Self>) -> Result<(), LockError>;
}

/// Proof of holding a lock. Release it with [`LockGuard::release`] where the operation ends;
/// dropping it frees the lock too, in the background.
pub struct LockGuard {
    takeover: CancellationToken,
    /// Never cancelled for a backend whose locks cannot be lost.
    lost: CancellationToken,
    fence: u64,
    held: Box<dyn HeldLock>,
}

impl LockGuard {
    /// A guard over `held`, holding fencing token `fence`, that reports takeover requests
    /// through `takeover`.
    pub fn new(held: Box<dyn HeldLock>, fence: u64, takeover: CancellationToken) -> Self {
        LockGuard {
            takeover,
            lost: CancellationToken::new(),
            fence,
            held,
        }
    }

    /// The same guard reporting the loss of the lock through `lost` (for backends whose locks
    /// can be lost: leases).
    pub fn with_lost(mut self, lost: CancellationToken) -> Self {
        self.lost = lost;
        self
    }

    /// Resolves when another request asks for this lock.
    pub fn takeover_requested(&self) -> WaitForCancellationFutureOwned {
        self.takeover.clone().cancelled_owned()
    }

    /// Resolves when the lock is no longer held (a lease that ran out or could not be renewed,
    /// a backend gone): the holder must stop writing. Never resolves for a lock that cannot be
    /// lost, such as [`MemoryLocker`]'s.
    pub fn lost(&self) -> WaitForCancellationFutureOwned {
        self.lost.clone().cancelled_owned()
    }

    /// Whether [`LockGuard::lost`] has resolved.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// The fencing token: strictly greater for each new holder of the same key, on any node of
    /// the same backend. A store that records the highest token it has seen can refuse a
    /// write from a holder that lost its lock to a newer one.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Frees the lock now. [`LockError::Lost`] when it had been lost meanwhile.
    pub async fn release(self) -> Result<(), LockError> {
        self.held.release().await
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LockGuard")
            .field("fence", &self.fence)
            .field("takeover_requested", &self.takeover.is_cancelled())
            .field("lost", &self.lost.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// Grants exclusive access to a key (an upload id, or a simple-protocol client key), for the
/// lockers of one backend together (say, every node's Redis locker on one Redis).
///
/// # Behavior
///
/// - Mutual exclusion: at most one guard of a key is held at a time, across every locker of the
///   backend.
/// - `lock` returns once no other guard for the key is held.
/// - While a guard is held, a new `lock` call for its key, on any locker of the backend,
///   signals [`LockGuard::takeover_requested`] on it, then waits for it to be released.
/// - When several requests wait, the newest one wins: a guard granted while a newer `lock` call
///   for its key waits is asked to let go at once, and the newest request's guard is not asked
///   by the older ones.
/// - If the holder does not let go within the locker's timeout, `lock` fails with
///   [`LockError::Timeout`]; the holder keeps the lock.
/// - `try_lock` returns a guard only if no guard for the key is held and no `lock` call waits
///   for it; otherwise `None`, and the holder is not disturbed. A `lock` call that starts while
///   a `try_lock` guard is held asks it to let go like any other holder.
/// - Each new holder of a key gets a greater [`LockGuard::fence`] than every holder before it.
/// - Once [`LockGuard::release`] returns, the key is free at once, on every locker; a guard
///   dropped without it is freed soon after, without blocking the one who dropped it.
/// - Keys are independent: holding one never delays or disturbs another.
/// - A held guard is [`LockGuard::lost`] only when the backend can no longer vouch for it; a
///   backend that cannot reach its storage fails with [`LockError::Backend`] promptly rather
///   than waiting for it, and never grants a lock it cannot vouch for.
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
    /// The last fencing token handed out, for every key: one counter serves them all.
    fence: AtomicU64,
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
/// Dropping it frees the lock at once, so a release has nothing to wait for.
struct MemoryRelease {
    _permit: OwnedMutexGuard<()>,
    _handle: SlotHandle,
}

#[async_trait::async_trait]
impl HeldLock for MemoryRelease {
    async fn release(self: Box<Self>) -> Result<(), LockError> {
        drop(self);
        Ok(())
    }
}

impl MemoryLocker {
    /// A locker whose `lock` gives up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        MemoryLocker {
            slots: Arc::default(),
            timeout,
            fence: AtomicU64::new(0),
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

    fn guard(
        &self,
        permit: OwnedMutexGuard<()>,
        handle: SlotHandle,
        takeover: CancellationToken,
    ) -> LockGuard {
        let fence = self.fence.fetch_add(1, Ordering::SeqCst) + 1;
        let held = MemoryRelease {
            _permit: permit,
            _handle: handle,
        };
        LockGuard::new(Box::new(held), fence, takeover)
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
        Ok(self.guard(permit, handle, takeover))
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
        Ok(Some(self.guard(permit, handle, takeover)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::locker_conformance_tests!(|timeout| async move {
        let locker: Arc<dyn Locker> = Arc::new(MemoryLocker::new(timeout));
        Some((locker.clone(), locker, ()))
    });

    /// The map of slots holds only keys in use: held, awaited, or neither once all is done.
    #[tokio::test]
    async fn slots_go_once_nobody_uses_them() {
        let locker = Arc::new(MemoryLocker::new(Duration::from_millis(50)));
        let first = locker.lock("a").await.unwrap();
        let _other = locker.lock("b").await.unwrap();
        assert_eq!(locker.keys_in_use(), 2);
        // A waiter that times out leaves the held slot in place…
        assert_eq!(locker.lock("a").await.err(), Some(LockError::Timeout));
        assert_eq!(locker.keys_in_use(), 2);
        // …and one that is granted and released, like a dropped guard, takes it away.
        let waiter = tokio::spawn({
            let locker = locker.clone();
            async move { locker.lock("a").await.map(drop) }
        });
        first.takeover_requested().await;
        first.release().await.unwrap();
        waiter.await.unwrap().unwrap();
        assert!(locker.try_lock("a").await.unwrap().is_some());
        assert_eq!(locker.keys_in_use(), 1);
    }
}
