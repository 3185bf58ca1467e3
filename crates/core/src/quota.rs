//! Per-owner limits: the largest upload, the bytes an owner's uploads may hold together, and how
//! many unfinished uploads an owner may have at once.
//!
//! Usage is counted from the store itself (never from a counter that a crash or a second process
//! could leave wrong): the store's upload list, each upload's reserved size and whether it is
//! finished. What never changes about an upload (its owner, and its size once finished) is
//! remembered, so after the first count an owner's check reads only that owner's unfinished
//! uploads.

use crate::model::{Length, Owner, UploadId, UploadStatus};
use crate::service::LIST_PAGE_SIZE;
use crate::store::{Listing, Store, StoreError};
use std::collections::HashMap;
use std::sync::Mutex;

/// What a principal may do. `None` is no limit; [`Limits::narrowed`] combines the server's own
/// limits with a principal's (say, from its token).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The largest single upload, in bytes.
    pub max_size: Option<u64>,
    /// The bytes all of an owner's uploads may hold together (finished or not; an upload of
    /// known length reserves its whole length from its creation).
    pub quota_bytes: Option<u64>,
    /// The unfinished uploads an owner may have at once.
    pub quota_uploads: Option<u64>,
}

impl Limits {
    /// Each limit at the tighter of the two.
    pub fn narrowed(self, other: Limits) -> Limits {
        fn tighter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        Limits {
            max_size: tighter(self.max_size, other.max_size),
            quota_bytes: tighter(self.quota_bytes, other.quota_bytes),
            quota_uploads: tighter(self.quota_uploads, other.quota_uploads),
        }
    }

    /// Whether a quota applies (so usage must be counted).
    pub fn has_quota(&self) -> bool {
        self.quota_bytes.is_some() || self.quota_uploads.is_some()
    }
}

/// What an owner's uploads hold, as counted by [`UsageCounter::usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes reserved: each upload's length when known (a final's included: its bytes are stored
    /// apart from its parts'), else its stored bytes.
    pub bytes: u64,
    /// Unfinished uploads (finals waiting for their parts excepted: they take no bytes).
    pub in_progress: u64,
}

/// What never changes about an upload once seen: its owner, and its size once it is finished.
#[derive(Debug, Clone)]
struct Known {
    owner: Owner,
    finished: Option<u64>,
}

/// Counts an owner's usage from the store, remembering what cannot change.
#[derive(Debug, Default)]
pub(crate) struct UsageCounter {
    known: Mutex<HashMap<UploadId, Known>>,
}

impl UsageCounter {
    /// `owner`'s usage, leaving out the upload `except` (the one being checked).
    pub(crate) async fn usage(
        &self,
        store: &dyn Store,
        owner: &Owner,
        except: Option<&UploadId>,
    ) -> Result<Usage, StoreError> {
        let mut ids = Vec::new();
        let mut pages = Listing::new(store, LIST_PAGE_SIZE);
        while let Some(page) = pages.next_page().await? {
            ids.extend(page);
        }
        let mut usage = Usage::default();
        let mut unknown = Vec::new();
        {
            let mut known = self.lock();
            // Forget removed uploads, so the map does not grow forever.
            let listed: std::collections::HashSet<&UploadId> = ids.iter().collect();
            known.retain(|id, _| listed.contains(id));
            for id in &ids {
                if Some(id) == except {
                    continue;
                }
                match known.get(id) {
                    Some(seen) if &seen.owner != owner => {}
                    Some(Known {
                        finished: Some(size),
                        ..
                    }) => usage.bytes = usage.bytes.saturating_add(*size),
                    _ => unknown.push(id.clone()),
                }
            }
        }
        for id in unknown {
            let status = match store.status(&id).await {
                Ok(status) => status,
                // Removed since the list was read.
                Err(StoreError::NotFound) => continue,
                Err(error) => return Err(error),
            };
            self.count(&mut usage, owner, &id, &status);
        }
        Ok(usage)
    }

    fn count(&self, usage: &mut Usage, owner: &Owner, id: &UploadId, status: &UploadStatus) {
        let complete = status.is_complete();
        let reserved = match status.info.length {
            Length::Known(length) => length,
            Length::Deferred => status.offset.0,
        };
        let seen = Known {
            owner: status.info.owner.clone(),
            finished: complete.then_some(reserved),
        };
        self.lock().insert(id.clone(), seen);
        if &status.info.owner != owner {
            return;
        }
        usage.bytes = usage.bytes.saturating_add(reserved);
        if !complete && !status.info.is_final() {
            usage.in_progress += 1;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, Known>> {
        self.known
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_keeps_the_tighter_limit_of_each() {
        let server = Limits {
            max_size: Some(100),
            quota_bytes: None,
            quota_uploads: Some(5),
        };
        let token = Limits {
            max_size: Some(200),
            quota_bytes: Some(50),
            quota_uploads: Some(2),
        };
        assert_eq!(
            server.narrowed(token),
            Limits {
                max_size: Some(100),
                quota_bytes: Some(50),
                quota_uploads: Some(2),
            }
        );
        assert_eq!(server.narrowed(Limits::default()), server);
        assert!(!Limits::default().has_quota());
        assert!(token.has_quota());
    }
}
