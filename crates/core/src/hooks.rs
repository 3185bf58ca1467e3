//! Hooks: the service tells a receiver what happens to uploads, and asks it before some steps.
//!
//! # Events
//!
//! - `pre-create` (before the store creates an upload): the receiver may refuse (a 4xx and a
//!   message for the client) or set metadata.
//! - `post-create`, `post-receive` (bytes stored; at most one per upload per
//!   [`HookConfig::progress_interval`], and always for the append that completes it),
//!   `post-finish`, `post-terminate`, `post-expire`.
//! - `pre-finish` (all bytes stored, before the upload counts as finished): the receiver may
//!   refuse; the upload is then failed ([`Completion::Failed`]) and the client told why.
//!
//! # Delivery
//!
//! `pre-*` events are calls: the request waits for the answer, at most
//! [`HookConfig::timeout`]; when the receiver cannot answer, [`HookFailure`] decides.
//!
//! `post-*` events are delivered at least once. Each is written to the [`Outbox`] before the
//! answer that acknowledges its change: for creation, termination and expiry just before the
//! store's change (a crash in between delivers an event about a change the client was never
//! told of and retries; it never loses one); for the finish, whose change is the last byte's
//! commit, the upload records that it still owes the finish hooks ([`Completion::Pending`])
//! until `post-finish` is in the outbox. One worker ([`Hooks::deliver`]) sends the outbox in
//! sequence order (FIFO: in order per upload), retrying each event with capped exponential
//! backoff until the receiver answers 2xx, across restarts. Event ids are derived from the
//! upload and the step (`ID-post-finish`), so an event sent twice, even by two processes
//! after a crash, has one id: receivers drop duplicates by id.

use crate::clock::Clock;
use crate::model::{Completion, Concat, Protocol, ReprDigest, UploadId, UploadInfo, UploadStatus};
use crate::observe::{HookOutcome, NoObserver, Observer};
use crate::outbox::{Outbox, OutboxError};
use crate::service::UploadError;
use crate::store::{StorageLocation, Store, StoreError};
use futures_util::StreamExt;
use resumable_proto::checksum::Digests;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What happened (or is about to) to an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookKind {
    /// Before creation; may refuse or set metadata.
    PreCreate,
    /// Created.
    PostCreate,
    /// Bytes stored (progress).
    PostReceive,
    /// Every byte stored, before the upload counts as finished; may refuse.
    PreFinish,
    /// Finished.
    PostFinish,
    /// Removed by its client.
    PostTerminate,
    /// Removed by the expiry sweep.
    PostExpire,
}

impl HookKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [HookKind; 7] = [
        HookKind::PreCreate,
        HookKind::PostCreate,
        HookKind::PostReceive,
        HookKind::PreFinish,
        HookKind::PostFinish,
        HookKind::PostTerminate,
        HookKind::PostExpire,
    ];

    /// The name in payloads and in `--hook-events`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::PreCreate => "pre-create",
            HookKind::PostCreate => "post-create",
            HookKind::PostReceive => "post-receive",
            HookKind::PreFinish => "pre-finish",
            HookKind::PostFinish => "post-finish",
            HookKind::PostTerminate => "post-terminate",
            HookKind::PostExpire => "post-expire",
        }
    }

    /// Whether the request waits for the receiver's answer (the `pre-*` events).
    pub fn is_blocking(self) -> bool {
        matches!(self, HookKind::PreCreate | HookKind::PreFinish)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The text names no hook event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown hook event {0:?} (known: pre-create, post-create, post-receive, pre-finish, post-finish, post-terminate, post-expire)"
)]
pub struct UnknownHookKind(pub String);

impl FromStr for HookKind {
    type Err = UnknownHookKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        HookKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownHookKind(text.to_owned()))
    }
}

/// A set of hook kinds: the events that are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookKinds(u8);

impl HookKinds {
    /// Every event.
    pub fn all() -> Self {
        HookKind::ALL.into_iter().collect()
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: HookKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// A comma-separated list such as `post-create,post-finish` (spaces allowed).
    pub fn parse_list(text: &str) -> Result<Self, UnknownHookKind> {
        text.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(HookKind::from_str)
            .collect()
    }
}

impl FromIterator<HookKind> for HookKinds {
    fn from_iter<I: IntoIterator<Item = HookKind>>(kinds: I) -> Self {
        HookKinds(kinds.into_iter().fold(0, |bits, kind| bits | kind.bit()))
    }
}

/// The upload as an event describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookUpload {
    /// Its id (also the last segment of its URL, `/files/ID`).
    pub id: UploadId,
    /// The principal it belongs to.
    pub owner: String,
    /// Its length; `null` while deferred.
    pub size: Option<u64>,
    /// Bytes durably stored.
    pub offset: u64,
    /// Its metadata, values as UTF-8 text (invalid sequences replaced; `null` for a key without
    /// a value). `metadata_encoded` has the exact bytes.
    pub metadata: BTreeMap<String, Option<String>>,
    /// The metadata in tus's `Upload-Metadata` encoding (values base64): lossless.
    pub metadata_encoded: String,
    /// The front-end that created it.
    pub protocol: Protocol,
    /// Where its bytes are kept, when the store can say.
    pub storage: Option<StorageLocation>,
    /// `partial` or `final` for concatenation, else `null`.
    pub concat: Option<String>,
}

/// One hook event: the JSON body a receiver gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookEvent {
    /// Unique per event, and the same each time that event is sent: drop duplicates by it.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: HookKind,
    /// When the event was made, seconds since the Unix epoch.
    pub time: u64,
    /// The upload.
    pub upload: HookUpload,
}

/// What a receiver answers to a blocking (`pre-*`) event: a 2xx with an empty body accepts;
/// a JSON body may refuse, or (for `pre-create`) set metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HookAnswer {
    /// Refuse the step.
    #[serde(default)]
    pub reject: Option<HookRejection>,
    /// Metadata to set (`pre-create` only): a value replaces the key's, `null` removes it.
    #[serde(default)]
    pub metadata: BTreeMap<String, Option<String>>,
}

/// A refusal in a [`HookAnswer`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HookRejection {
    /// The status for the client: 4xx; anything else (or none) is 403.
    #[serde(default)]
    pub status: Option<u16>,
    /// The message for the client.
    #[serde(default)]
    pub message: Option<String>,
}

/// The status a hook refusal is answered with: always a 4xx, since the refusal is about the
/// client's upload, not a fault of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalStatus(u16);

impl RefusalStatus {
    /// When the hook gives none, or one that is not a 4xx.
    pub const DEFAULT: RefusalStatus = RefusalStatus(403);

    /// `code` if it is a 4xx, else [`RefusalStatus::DEFAULT`].
    pub fn new(code: u16) -> Self {
        if (400..500).contains(&code) {
            RefusalStatus(code)
        } else {
            RefusalStatus::DEFAULT
        }
    }

    /// The status code.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// Why a receiver could not take an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookCallError {
    /// No connection, or it failed.
    #[error("hook receiver unreachable: {0}")]
    Unreachable(String),
    /// It answered with a status other than 2xx.
    #[error("hook receiver answered {0}")]
    Status(u16),
    /// Its answer is not a [`HookAnswer`].
    #[error("hook answer unreadable: {0}")]
    BadAnswer(String),
    /// It did not answer within the hook timeout.
    #[error("hook receiver did not answer within {0:?}")]
    Timeout(Duration),
}

/// How events reach a receiver (an HTTP POST, a command's stdin, …).
#[async_trait::async_trait]
pub trait HookTransport: Send + Sync + 'static {
    /// Sends one event and returns the receiver's answer (ignored for `post-*` events).
    async fn send(&self, event: &HookEvent) -> Result<HookAnswer, HookCallError>;
}

/// What a blocking hook's failure to answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookFailure {
    /// The step does not happen: the client is answered 503 and may retry.
    Refuse,
    /// The step happens as if the hook had accepted.
    Allow,
}

/// Settings of [`Hooks`].
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// The events sent; the others are neither sent nor waited for.
    pub kinds: HookKinds,
    /// How long a blocking hook (and each delivery attempt) may take.
    pub timeout: Duration,
    /// What a blocking hook's failure to answer means.
    pub failure: HookFailure,
    /// At most one `post-receive` per upload this often.
    pub progress_interval: Duration,
    /// The first retry delay of a failed delivery; it doubles each time, up to `retry_max`.
    pub retry_min: Duration,
    /// The longest delay between two attempts at one delivery.
    pub retry_max: Duration,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            kinds: HookKinds::all(),
            timeout: Duration::from_secs(5),
            failure: HookFailure::Refuse,
            progress_interval: Duration::from_secs(1),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// How many outbox entries the worker reads at a time.
const DELIVERY_BATCH: usize = 64;

/// The hooks of an [`crate::UploadService`] (see the module docs): the transport, the
/// outbox, and the delivery worker.
pub struct Hooks {
    config: HookConfig,
    transport: Arc<dyn HookTransport>,
    outbox: Arc<dyn Outbox>,
    clock: Arc<dyn Clock>,
    /// Wakes the delivery worker when an event is put.
    wake: Notify,
    /// When each upload last had a `post-receive`.
    progress: Mutex<HashMap<UploadId, Instant>>,
    /// Told how each call to the receiver ended (`with_observer`).
    observer: Arc<dyn Observer>,
}

/// A blocking hook's decision.
pub(crate) enum Verdict {
    Accept(HookAnswer),
    Refuse {
        status: RefusalStatus,
        message: String,
    },
    /// The hook could not answer and [`HookFailure::Refuse`] holds.
    Unavailable(String),
}

impl Verdict {
    /// The answer, or the error a refusal is answered with.
    fn accepted(self) -> Result<HookAnswer, UploadError> {
        match self {
            Verdict::Accept(answer) => Ok(answer),
            Verdict::Refuse { status, message } => {
                Err(UploadError::HookRefused { status, message })
            }
            Verdict::Unavailable(cause) => Err(UploadError::HookUnavailable(cause)),
        }
    }
}

impl Hooks {
    /// Hooks that send through `transport` and persist `post-*` events in `outbox`; `clock`
    /// stamps the events.
    pub fn new(
        config: HookConfig,
        transport: Arc<dyn HookTransport>,
        outbox: Arc<dyn Outbox>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Hooks {
            config,
            transport,
            outbox,
            clock,
            wake: Notify::new(),
            progress: Mutex::default(),
            observer: Arc::new(NoObserver),
        }
    }

    /// The same hooks telling `observer` how each call to the receiver ended.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The settings.
    pub fn config(&self) -> &HookConfig {
        &self.config
    }

    fn event(&self, kind: HookKind, status: &UploadStatus, store: &dyn Store) -> HookEvent {
        let info = &status.info;
        let id = match kind {
            // Not persisted, so nothing to deduplicate: a fresh id per call.
            HookKind::PreCreate | HookKind::PreFinish => UploadId::random().to_string(),
            // Progress at one offset is one event however often it is sent.
            HookKind::PostReceive => format!("{}-{kind}-{}", info.id, status.offset),
            _ => format!("{}-{kind}", info.id),
        };
        HookEvent {
            id,
            kind,
            time: self
                .clock
                .now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            upload: describe(info, status, store),
        }
    }

    /// Asks a blocking hook.
    async fn ask(&self, kind: HookKind, status: &UploadStatus, store: &dyn Store) -> Verdict {
        if !self.config.kinds.contains(kind) {
            return Verdict::Accept(HookAnswer::default());
        }
        let event = self.event(kind, status, store);
        let timeout = self.config.timeout;
        let sent = match tokio::time::timeout(timeout, self.transport.send(&event)).await {
            Ok(sent) => sent,
            Err(_) => Err(HookCallError::Timeout(timeout)),
        };
        self.observer.hook(kind, HookOutcome::of(&sent));
        match sent {
            Ok(HookAnswer {
                reject: Some(rejection),
                ..
            }) => Verdict::Refuse {
                status: rejection
                    .status
                    .map_or(RefusalStatus::DEFAULT, RefusalStatus::new),
                message: rejection
                    .message
                    .unwrap_or_else(|| format!("refused by the {kind} hook")),
            },
            Ok(answer) => Verdict::Accept(answer),
            Err(error) => {
                tracing::warn!(upload = %status.info.id, %kind, %error, "blocking hook failed");
                match self.config.failure {
                    HookFailure::Allow => Verdict::Accept(HookAnswer::default()),
                    HookFailure::Refuse => Verdict::Unavailable(error.to_string()),
                }
            }
        }
    }

    /// Persists a `post-*` event for delivery; its sequence, or `None` when the event is not
    /// sent.
    async fn record(
        &self,
        kind: HookKind,
        status: &UploadStatus,
        store: &dyn Store,
    ) -> Result<Option<u64>, OutboxError> {
        if !self.config.kinds.contains(kind) {
            return Ok(None);
        }
        let sequence = self.outbox.put(&self.event(kind, status, store)).await?;
        self.wake.notify_one();
        Ok(Some(sequence))
    }

    /// Takes back an event recorded for a change the store then failed to make. Best effort:
    /// the worker may have sent it already.
    async fn withdraw(&self, sequence: Option<u64>) {
        if let Some(sequence) = sequence
            && let Err(error) = self.outbox.remove(sequence).await
        {
            tracing::warn!(sequence, %error, "cannot withdraw a hook event");
        }
    }

    fn forget_progress(&self, id: &UploadId) {
        lock(&self.progress).remove(id);
    }

    /// `pre-create`, then `post-create` into the outbox, before the store creates `info`:
    /// applies the metadata the hook set and marks the upload as owing the finish hooks.
    /// Returns the `post-create` entry to withdraw if the creation fails.
    pub(crate) async fn before_create(
        &self,
        store: &dyn Store,
        status: &mut UploadStatus,
    ) -> Result<Option<u64>, UploadError> {
        let answer = self
            .ask(HookKind::PreCreate, status, store)
            .await
            .accepted()?;
        for (key, value) in answer.metadata {
            let Some(value) = value else {
                status.info.metadata.remove(&key);
                continue;
            };
            if let Err(error) = status.info.metadata.set(&key, Some(value.into_bytes())) {
                // The receiver's mistake, not the client's: the upload goes on without it.
                tracing::warn!(upload = %status.info.id, %error, "pre-create hook set unusable metadata");
            }
        }
        status.info.completion = Some(Completion::Pending);
        self.record(HookKind::PostCreate, status, store)
            .await
            .map_err(outbox_error)
    }

    /// After a failed creation: withdraws its `post-create`.
    pub(crate) async fn creation_failed(&self, sequence: Option<u64>) {
        self.withdraw(sequence).await;
    }

    /// `post-receive` after an append that stored bytes, rate-limited per upload (the append
    /// that completes the upload always sends one). Progress is advisory: an outbox failure
    /// is logged, not the append's.
    pub(crate) async fn received(&self, store: &dyn Store, status: &UploadStatus, stored: bool) {
        if !stored || !self.config.kinds.contains(HookKind::PostReceive) {
            return;
        }
        let now = Instant::now();
        let due = {
            let mut progress = lock(&self.progress);
            let last = progress.get(&status.info.id).copied();
            let due = status.is_complete()
                || last
                    .is_none_or(|last| now.duration_since(last) >= self.config.progress_interval);
            if due {
                progress.insert(status.info.id.clone(), now);
            }
            due
        };
        if due && let Err(error) = self.record(HookKind::PostReceive, status, store).await {
            tracing::warn!(upload = %status.info.id, %error, "post-receive not recorded");
        }
    }

    /// `post-terminate` or `post-expire`, before the store removes the upload. Returns the
    /// entry to withdraw if the removal fails.
    pub(crate) async fn before_removal(
        &self,
        store: &dyn Store,
        status: &UploadStatus,
        kind: HookKind,
    ) -> Result<Option<u64>, UploadError> {
        self.forget_progress(&status.info.id);
        self.record(kind, status, store).await.map_err(outbox_error)
    }

    /// After a failed removal: withdraws its event.
    pub(crate) async fn removal_failed(&self, sequence: Option<u64>) {
        self.withdraw(sequence).await;
    }

    /// Delivers the outbox until `stop` is cancelled: events from before a restart first, then
    /// each new one as it is put; in sequence order, each retried with capped exponential
    /// backoff until the receiver takes it. Run one per outbox.
    pub async fn deliver(self: Arc<Self>, stop: CancellationToken) {
        let mut delay = self.config.retry_min;
        loop {
            let batch = tokio::select! {
                () = stop.cancelled() => return,
                batch = self.outbox.pending(DELIVERY_BATCH) => batch,
            };
            let entries = match batch {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the hook outbox");
                    if !pause(&stop, &mut delay, self.config.retry_max).await {
                        return;
                    }
                    continue;
                }
            };
            if entries.is_empty() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.wake.notified() => continue,
                }
            }
            for entry in entries {
                let mut attempts = 0u32;
                loop {
                    let timeout = self.config.timeout;
                    let sent = tokio::select! {
                        () = stop.cancelled() => return,
                        sent = tokio::time::timeout(timeout, self.transport.send(&entry.event)) => sent,
                    };
                    let sent = sent.unwrap_or(Err(HookCallError::Timeout(timeout)));
                    self.observer.hook(entry.event.kind, HookOutcome::of(&sent));
                    let Err(error) = sent else { break };
                    attempts += 1;
                    // Once, then every tenth attempt: a receiver down for long would flood the log.
                    if attempts == 1 || attempts.is_multiple_of(10) {
                        tracing::warn!(event = %entry.event.id, attempts, %error, "hook delivery failed; retrying");
                    }
                    if !pause(&stop, &mut delay, self.config.retry_max).await {
                        return;
                    }
                }
                delay = self.config.retry_min;
                tracing::debug!(event = %entry.event.id, "hook delivered");
                if let Err(error) = self.outbox.remove(entry.sequence).await {
                    // It stays, and will be sent again: at least once, not exactly once.
                    tracing::warn!(event = %entry.event.id, %error, "cannot remove a delivered hook event");
                }
            }
        }
    }
}

/// The finish of an upload whose every byte is stored, under its lock: the check of the digest
/// the client announced for the whole upload (which may fail it), `pre-finish` (which may too),
/// the store's finish, then `post-finish` into the outbox and the upload marked finished.
/// Without hooks, the digest check and the store's finish. An upload already finished or
/// failed is left as it is (a failed one answers its refusal).
pub(crate) async fn finish(
    store: &dyn Store,
    hooks: Option<&Hooks>,
    status: &mut UploadStatus,
) -> Result<(), UploadError> {
    let id = status.info.id.clone();
    if status.info.failure().is_some() {
        return Err(failed_error(&status.info));
    }
    if status.info.completion != Some(Completion::Finished) {
        check_repr_digest(store, status).await?;
    }
    let Some(hooks) = hooks else {
        store.finish(&id).await?;
        completed(status);
        return Ok(());
    };
    match &status.info.completion {
        Some(Completion::Finished) => return Ok(()),
        Some(Completion::Failed { .. }) => return Err(failed_error(&status.info)),
        Some(Completion::Pending) | None => {}
    }
    let verdict = hooks.ask(HookKind::PreFinish, status, store).await;
    if let Verdict::Refuse {
        status: code,
        message,
    } = &verdict
    {
        status.info.completion = Some(Completion::Failed {
            status: code.get(),
            reason: message.clone(),
        });
        store.update(&status.info).await?;
        hooks.forget_progress(&id);
        tracing::info!(upload = %id, reason = %message, "upload refused by the pre-finish hook");
    }
    verdict.accepted()?;
    store.finish(&id).await?;
    hooks
        .record(HookKind::PostFinish, status, store)
        .await
        .map_err(outbox_error)?;
    status.info.completion = Some(Completion::Finished);
    store.update(&status.info).await?;
    hooks.forget_progress(&id);
    completed(status);
    Ok(())
}

/// The lifecycle event of an upload finished: logged once, whichever way it completed (its
/// last byte, a zero length, a declared length, a final upload assembled, finish hooks owed
/// from before a restart).
fn completed(status: &UploadStatus) {
    tracing::info!(upload = %status.info.id, length = status.offset.0, "upload completed");
}

/// Reads the whole upload back and compares it with the digest its creator announced; on a
/// mismatch the upload is failed (persisted, so it never finishes nor downloads). The bytes
/// are read from the store rather than digested as they arrive, since they arrive over many
/// requests, possibly on other processes, and a digest state would have to be persisted
/// between them.
async fn check_repr_digest(
    store: &dyn Store,
    status: &mut UploadStatus,
) -> Result<(), UploadError> {
    let Some(ReprDigest(expected)) = status.info.repr_digest.clone() else {
        return Ok(());
    };
    let mut digests = Digests::one(expected.algorithm);
    let mut bytes = store.read(&status.info.id, 0..status.offset.0).await?;
    while let Some(chunk) = bytes.next().await {
        digests.update(&chunk.map_err(StoreError::from_io)?);
    }
    if digests.finish(expected.algorithm) == Some(expected.digest) {
        return Ok(());
    }
    status.info.completion = Some(Completion::Failed {
        status: 400,
        reason: "its bytes do not match the Repr-Digest sent at its creation".into(),
    });
    store.update(&status.info).await?;
    tracing::info!(upload = %status.info.id, "upload failed: Repr-Digest mismatch");
    Err(failed_error(&status.info))
}

/// Whether a complete upload still owes its finish hooks (a crash, or a receiver that could
/// not answer, came between its last byte and them).
pub(crate) fn owes_finish(hooks: Option<&Hooks>, status: &UploadStatus) -> bool {
    hooks.is_some() && status.is_complete() && status.info.completion == Some(Completion::Pending)
}

/// What every request to a failed upload is answered: the hook's status and reason.
pub(crate) fn failed_error(info: &UploadInfo) -> UploadError {
    match info.failure() {
        Some((status, reason)) => UploadError::HookRefused {
            status: RefusalStatus::new(status),
            message: format!("the upload was refused: {reason}"),
        },
        None => UploadError::Internal("not a failed upload".into()),
    }
}

fn describe(info: &UploadInfo, status: &UploadStatus, store: &dyn Store) -> HookUpload {
    HookUpload {
        id: info.id.clone(),
        owner: info.owner.as_str().to_owned(),
        size: info.length.known(),
        offset: status.offset.0,
        metadata: info
            .metadata
            .entries()
            .iter()
            .map(|entry| {
                let value = entry
                    .value
                    .as_deref()
                    .map(|value| String::from_utf8_lossy(value).into_owned());
                (entry.key.clone(), value)
            })
            .collect(),
        metadata_encoded: info.metadata.encode_tus(),
        protocol: info.protocol(),
        storage: store.location(&info.id),
        concat: info.concat.as_ref().map(|concat| match concat {
            Concat::Partial => "partial".to_owned(),
            Concat::Final { .. } => "final".to_owned(),
        }),
    }
}

fn outbox_error(error: OutboxError) -> UploadError {
    match error {
        OutboxError::Io(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) =>
        {
            UploadError::StorageFull
        }
        other => UploadError::Internal(format!("hook outbox: {other}")),
    }
}

/// Waits `delay` (unless stopped: `false`), then doubles it up to `max`.
async fn pause(stop: &CancellationToken, delay: &mut Duration, max: Duration) -> bool {
    let wait = *delay;
    *delay = (*delay * 2).min(max);
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_filter() {
        let kinds = HookKinds::parse_list("post-finish, pre-create").unwrap();
        assert!(kinds.contains(HookKind::PostFinish));
        assert!(kinds.contains(HookKind::PreCreate));
        assert!(!kinds.contains(HookKind::PostCreate));
        assert!(HookKinds::parse_list("post-finish,finished").is_err());
        assert!(
            HookKind::ALL
                .iter()
                .all(|kind| HookKinds::all().contains(*kind))
        );
        for kind in HookKind::ALL {
            assert_eq!(kind.as_str().parse::<HookKind>().unwrap(), kind);
        }
    }

    #[test]
    fn refusals_are_always_4xx() {
        assert_eq!(RefusalStatus::new(422).get(), 422);
        assert_eq!(RefusalStatus::new(500).get(), 403);
        assert_eq!(RefusalStatus::new(200).get(), 403);
        assert_eq!(RefusalStatus::new(399).get(), 403);
    }
}
