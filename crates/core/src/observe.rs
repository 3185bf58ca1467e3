//! What the service tells an [`Observer`] (metrics, say) about uploads and hooks.
//!
//! The [`Store`](crate::Store) and [`Locker`](crate::Locker) can be measured from outside by
//! wrapping them, but some steps look alike there: a client's termination and the expiry sweep
//! both end in `Store::terminate`, and `Store::finish` may be called again for an upload that
//! still owes its finish hooks. The service knows which step it takes, so it says so here. The
//! hooks say how each call to a receiver went, which a wrapped transport could not tell when
//! the hook timeout cuts the call.

use crate::hooks::{HookAnswer, HookCallError, HookKind};
use crate::model::Protocol;

/// A step in an upload's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UploadEvent {
    /// The store created it.
    Created,
    /// Its last byte is stored (an append that reached its length, a length declared equal to
    /// the bytes stored, an empty upload created, a final upload assembled). Counted once per
    /// upload, whatever the finish hooks answer afterwards.
    Completed,
    /// Its client removed it.
    Terminated,
    /// The expiry sweep (or a simple-protocol request finding its old upload expired) removed
    /// it.
    Expired,
}

impl UploadEvent {
    /// Every event.
    pub const ALL: [UploadEvent; 4] = [
        UploadEvent::Created,
        UploadEvent::Completed,
        UploadEvent::Terminated,
        UploadEvent::Expired,
    ];
}

/// How one call to a hook receiver ended (a `pre-*` call, or one delivery attempt of a
/// `post-*` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookOutcome {
    /// The receiver answered 2xx (for a `pre-*` event, whether it accepted or refused).
    Delivered,
    /// No connection, or it failed.
    Unreachable,
    /// It answered with another status.
    Status,
    /// Its answer was unreadable.
    BadAnswer,
    /// It did not answer within the hook timeout.
    Timeout,
}

impl HookOutcome {
    /// Every outcome.
    pub const ALL: [HookOutcome; 5] = [
        HookOutcome::Delivered,
        HookOutcome::Unreachable,
        HookOutcome::Status,
        HookOutcome::BadAnswer,
        HookOutcome::Timeout,
    ];

    /// The outcome of a transport's answer.
    pub fn of(sent: &Result<HookAnswer, HookCallError>) -> Self {
        match sent {
            Ok(_) => HookOutcome::Delivered,
            Err(HookCallError::Unreachable(_)) => HookOutcome::Unreachable,
            Err(HookCallError::Status(_)) => HookOutcome::Status,
            Err(HookCallError::BadAnswer(_)) => HookOutcome::BadAnswer,
            Err(HookCallError::Timeout(_)) => HookOutcome::Timeout,
        }
    }
}

/// Told of steps of uploads and of hook calls, synchronously, on the request's task: an
/// implementation must be quick (count, never wait). Every method defaults to nothing.
pub trait Observer: Send + Sync + 'static {
    /// `event` happened to an upload created by `protocol`.
    fn upload(&self, event: UploadEvent, protocol: Protocol) {
        let _ = (event, protocol);
    }

    /// A call to the hook receiver about a `kind` event ended with `outcome`.
    fn hook(&self, kind: HookKind, outcome: HookOutcome) {
        let _ = (kind, outcome);
    }
}

/// The observer that observes nothing: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}
