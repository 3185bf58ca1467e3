//! The upload engine of resumable: the model, the rules, and the contracts storage and locking
//! backends implement.
//!
//! Every protocol front-end (the seed's simple protocol, tus, the IETF draft) turns its requests
//! into calls on one [`UploadService`], so an upload is one thing whichever protocol touches it.
//!
//! # Layout
//!
//! - [`model`]: `UploadId`, `Offset`, `Length`, `Owner`, `UploadInfo`.
//! - [`store`]: the [`Store`] trait (with its `# Behavior` contract) and its error type.
//! - [`lock`]: the [`Locker`] trait with takeover, its [`LockGuard`] (lost, fence, release)
//!   over a backend's [`HeldLock`], and the in-process [`MemoryLocker`].
//! - [`lock_conformance`]: the checks every locker must pass, as a test-generating macro.
//! - [`clock`]: the injectable clock expiry runs on.
//! - [`quota`]: per-owner [`Limits`] (largest upload, bytes stored, uploads in progress).
//! - [`service`]: [`UploadService`], which enforces ownership, locking, offsets and limits.
//! - [`memory`]: an in-memory store.
//! - [`hooks`]: hook events, the transport and delivery worker contracts, [`Hooks`].
//! - [`observe`]: the [`Observer`] told of uploads' creation, completion and removal, and of
//!   hook calls (what metrics count).
//! - [`outbox`]: the [`Outbox`] trait `post-*` events are persisted in, and an in-memory one.
//! - [`conformance`]: the checks every store must pass, as a test-generating macro.
//! - `body`: the guard that cuts request bodies on takeover, stall, a rate below the minimum
//!   ([`MinRate`]) or overflow.
//! - `rate`: how many uploads each creator may create per minute.

mod body;
pub mod clock;
pub mod conformance;
pub mod hooks;
pub mod lock;
pub mod lock_conformance;
pub mod memory;
pub mod model;
pub mod observe;
pub mod outbox;
pub mod quota;
mod rate;
pub mod service;
pub mod store;

pub use body::MinRate;
pub use clock::{Clock, ManualClock, SystemClock};
pub use hooks::{
    HookAnswer, HookCallError, HookConfig, HookEvent, HookFailure, HookKind, HookKinds,
    HookRejection, HookTransport, HookUpload, Hooks, RefusalStatus,
};
pub use lock::{HeldLock, LockError, LockGuard, Locker, MemoryLocker};
pub use memory::MemoryStore;
pub use model::{
    Completion, Concat, ConcatPart, Length, Offset, Owner, Protocol, ReprDigest, UploadId,
    UploadInfo, UploadStatus,
};
pub use observe::{HookOutcome, NoObserver, Observer, UploadEvent};
pub use outbox::{MemoryOutbox, Outbox, OutboxEntry, OutboxError};
pub use quota::{Limits, Usage};
pub use service::{
    Append, ExpectedChecksum, ExpirySweep, NewConcat, NewUpload, ServiceConfig, TrailerChecksum,
    UnannouncedTrailer, UploadError, UploadService,
};
pub use store::{
    Appended, BackendError, BackendKind, BodyError, BodyStream, ByteStream, Capabilities, Listing,
    Staged, StorageLocation, Store, StoreError,
};

#[cfg(test)]
mod memory_store_conformance {
    crate::store_conformance_tests!(
        |clock| async move { (crate::MemoryStore::with_clock(clock), ()) }
    );
}
