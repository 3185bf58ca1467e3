//! What one node knows of its own holders and waiters, so the messages of the pub/sub
//! connection reach them: takeover requests the holders, "released" the waiters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The holders and waiters of this node, by key.
#[derive(Default)]
pub(crate) struct Local {
    /// A std mutex: held to look up or change an entry, never across an await.
    keys: Mutex<HashMap<String, KeyState>>,
}

#[derive(Default)]
struct KeyState {
    holders: Vec<Holder>,
    waiters: usize,
    /// Woken when the key is released anywhere.
    released: Arc<Notify>,
}

/// A holder of the key on this node, or a caller trying to become one: registered before its
/// attempt, so a takeover request that comes right after Redis granted the lock is not missed.
struct Holder {
    token: String,
    /// The holder's ticket once known: requests from older tickets do not ask it to let go.
    ticket: Option<u64>,
    /// The newest ticket that asked for the key since the holder registered.
    asked_by: u64,
    takeover: CancellationToken,
}

impl Local {
    fn with_keys<T>(&self, change: impl FnOnce(&mut HashMap<String, KeyState>) -> T) -> T {
        change(
            &mut self
                .keys
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    /// Registers a (would-be) holder of `key` with `token`.
    pub(crate) fn hold(self: &Arc<Self>, key: &str, token: &str) -> HolderEntry {
        let takeover = CancellationToken::new();
        self.with_keys(|keys| {
            keys.entry(key.to_owned())
                .or_default()
                .holders
                .push(Holder {
                    token: token.to_owned(),
                    ticket: None,
                    asked_by: 0,
                    takeover: takeover.clone(),
                });
        });
        HolderEntry {
            local: self.clone(),
            key: key.to_owned(),
            token: token.to_owned(),
            takeover,
        }
    }

    /// Registers a waiter of `key`: its notify wakes when the key is released.
    pub(crate) fn wait(self: &Arc<Self>, key: &str) -> WaiterEntry {
        let released = self.with_keys(|keys| {
            let state = keys.entry(key.to_owned()).or_default();
            state.waiters += 1;
            state.released.clone()
        });
        WaiterEntry {
            local: self.clone(),
            key: key.to_owned(),
            released,
        }
    }

    /// A `lock` call with `ticket` asked for `key`: every holder here with an older ticket is
    /// asked to let go (and one whose ticket is not known yet, once it is).
    pub(crate) fn takeover_requested(&self, key: &str, ticket: u64) {
        self.with_keys(|keys| {
            let Some(state) = keys.get_mut(key) else {
                return;
            };
            for holder in &mut state.holders {
                holder.asked_by = holder.asked_by.max(ticket);
                if holder.ticket.is_some_and(|mine| ticket > mine) {
                    holder.takeover.cancel();
                }
            }
        });
    }

    /// `key` was released somewhere: its waiters here try again now.
    pub(crate) fn released(&self, key: &str) {
        self.with_keys(|keys| {
            if let Some(state) = keys.get(key) {
                state.released.notify_waiters();
            }
        });
    }

    /// Wakes every waiter: messages may have been lost (the pub/sub connection dropped).
    pub(crate) fn wake_all(&self) {
        self.with_keys(|keys| {
            for state in keys.values() {
                state.released.notify_waiters();
            }
        });
    }

    fn remove_if_unused(keys: &mut HashMap<String, KeyState>, key: &str) {
        if keys
            .get(key)
            .is_some_and(|state| state.holders.is_empty() && state.waiters == 0)
        {
            keys.remove(key);
        }
    }
}

/// A registered holder; unregisters when dropped.
pub(crate) struct HolderEntry {
    local: Arc<Local>,
    key: String,
    token: String,
    takeover: CancellationToken,
}

impl HolderEntry {
    /// The holder now holds the key with `ticket`: asked to let go at once if a newer request
    /// came meanwhile.
    pub(crate) fn granted(&self, ticket: u64) {
        self.local.with_keys(|keys| {
            let Some(state) = keys.get_mut(&self.key) else {
                return;
            };
            for holder in &mut state.holders {
                if holder.token == self.token {
                    holder.ticket = Some(ticket);
                    if holder.asked_by > ticket {
                        holder.takeover.cancel();
                    }
                }
            }
        });
    }

    pub(crate) fn takeover(&self) -> &CancellationToken {
        &self.takeover
    }
}

impl Drop for HolderEntry {
    fn drop(&mut self) {
        self.local.with_keys(|keys| {
            if let Some(state) = keys.get_mut(&self.key) {
                state.holders.retain(|holder| holder.token != self.token);
            }
            Local::remove_if_unused(keys, &self.key);
        });
    }
}

/// A registered waiter; unregisters when dropped.
pub(crate) struct WaiterEntry {
    local: Arc<Local>,
    key: String,
    released: Arc<Notify>,
}

impl WaiterEntry {
    pub(crate) fn released(&self) -> &Notify {
        &self.released
    }
}

impl Drop for WaiterEntry {
    fn drop(&mut self) {
        self.local.with_keys(|keys| {
            if let Some(state) = keys.get_mut(&self.key) {
                state.waiters -= 1;
            }
            Local::remove_if_unused(keys, &self.key);
        });
    }
}
