//! A [`Locker`] for a fleet: every node's [`RedisLocker`] on one Redis shares the locks, so any
//! node can take any request of any upload, and a request on one node asks a holder on another
//! to let go.
//!
//! # Design
//!
//! - **A lease per lock.** The lock of key `K` is the Redis key `{prefix}lock:K`, set (`SET NX
//!   PX`) to a random token with the lease as its expiry. While the guard lives, a task renews
//!   the lease every third of it (compare the token, then `PEXPIRE`). A node that dies holds
//!   its uploads for at most one lease, 15 s by default.
//! - **Lost.** The holder writes only while its lease has more than a safety margin (a third of
//!   the lease) left: [`LockGuard::lost`] fires when a renewal is refused (the key expired or
//!   was taken), when no renewal was confirmed before that margin (Redis unreachable), or when
//!   the locker is dropped. The margin is the time a holder has to stop and persist what it has
//!   before anyone else can get the lock.
//! - **Fencing.** Each new holder gets a [`LockGuard::fence`] from one counter (`{prefix}fence`),
//!   drawn in the same script that takes the lock, and kept at least at the server's time in
//!   microseconds, so it keeps growing even across a Redis restart that lost the counter.
//! - **Takeover across nodes.** A `lock` that finds the key held publishes its ticket on
//!   `{prefix}release:K`. Each locker keeps one pub/sub connection (`PSUBSCRIBE`, resubscribed
//!   after a reconnect) and hands the message to its local holders of `K` that are older than
//!   the ticket; releasing publishes `{prefix}released:K`, which wakes the waiters at once. A slow
//!   poll (each second, or when the holder's lease runs out) covers lost messages.
//! - **Newest waiter wins**, as far as Redis can tell: `{prefix}wait:K` records the newest
//!   waiting ticket. A holder granted while a newer ticket waits is asked to let go at once,
//!   older waiters do not ask a newer holder, and `try_lock` leaves an awaited key alone.
//! - **Failures.** Every Redis call has a deadline (about a second): Redis unreachable makes
//!   `lock` and `try_lock` fail with [`LockError::Backend`] (the server answers 503) rather than
//!   hang, and never grants a lock. The connection reconnects by itself when Redis is back.
//!
//! # What fencing guarantees, and what it does not
//!
//! With one Redis that keeps its data, two holders of a key never overlap while each stops
//! writing when [`LockGuard::lost`] fires: the local deadline comes a margin before the lease
//! can expire in Redis (measured from before the renewal was sent, so network delays only
//! shorten it). It does not cover a holder that stalls longer than the margin between checking
//! and writing (a long GC-like pause, a disk that hangs), nor a Redis that loses its data (a
//! restart without persistence, a failover to a replica that had not received the lock): then
//! a second holder can get the lock while the first still writes. [`LockGuard::fence`] is for
//! stores that can check it (refuse a write with a lower token than the highest they have
//! seen); a store that cannot check it relies on the lease alone. Redis Cluster is not
//! supported: the scripts touch keys that share no hash slot.

mod local;
mod scripts;

use local::{HolderEntry, Local};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use resumable_core::lock::{HeldLock, LockError, LockGuard, Locker};
use scripts::Scripts;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Settings of a [`RedisLocker`].
#[derive(Debug, Clone)]
pub struct RedisLockerConfig {
    /// Where Redis listens: `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Put before every key and channel, so several deployments can share one Redis.
    pub key_prefix: String,
    /// How long a lock outlives its holder's last renewal: the longest a dead node keeps its
    /// uploads. At least a second.
    pub lease: Duration,
    /// How long `lock` waits for the holder to let go before [`LockError::Timeout`].
    pub wait_timeout: Duration,
    /// How long each Redis call may take (connecting included) before it fails: how quickly
    /// requests fail when Redis is unreachable.
    pub io_timeout: Duration,
}

impl RedisLockerConfig {
    /// The default settings for Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisLockerConfig {
            url: url.into(),
            key_prefix: "resumable:".into(),
            lease: Duration::from_secs(15),
            wait_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(1),
        }
    }
}

/// How often a waiter tries again without having heard that the key was released.
const POLL: Duration = Duration::from_secs(1);

/// How soon a renewal that failed (not refused) is tried again.
const RENEW_RETRY: Duration = Duration::from_millis(200);

/// The Redis locker; see the crate docs. Dropping it stops its renewals: its guards are lost.
pub struct RedisLocker {
    shared: Arc<Shared>,
}

/// What the locker, its guards and their renewal tasks share.
struct Shared {
    commands: ConnectionManager,
    scripts: Scripts,
    local: Arc<Local>,
    config: RedisLockerConfig,
    /// Cancelled when the locker is dropped: ends the pub/sub task and every renewal.
    closed: CancellationToken,
}

/// Names of one key's Redis keys and channels.
struct Names {
    lock: String,
    wait: String,
    fence: String,
    release: String,
    released: String,
}

impl Shared {
    fn names(&self, key: &str) -> Names {
        let prefix = &self.config.key_prefix;
        Names {
            lock: format!("{prefix}lock:{key}"),
            wait: format!("{prefix}wait:{key}"),
            fence: format!("{prefix}fence"),
            release: format!("{prefix}release:{key}"),
            released: format!("{prefix}released:{key}"),
        }
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs one Redis call within the I/O deadline.
    async fn call<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, LockError> {
        match tokio::time::timeout(self.config.io_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(LockError::Backend(format!("redis: {error}"))),
            Err(_) => Err(LockError::Backend(format!(
                "redis: no answer within {:?}",
                self.config.io_timeout
            ))),
        }
    }

    async fn attempt(
        &self,
        key: &str,
        token: &str,
        ticket: Option<u64>,
    ) -> Result<Attempt, LockError> {
        let names = self.names(key);
        let wait_ms = u64::try_from(self.config.wait_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut connection = self.commands.clone();
        let mut invocation = self.scripts.acquire.key(&names.lock);
        invocation
            .key(&names.wait)
            .key(&names.fence)
            .arg(token)
            .arg(self.lease_ms())
            .arg(ticket.map(|ticket| ticket.to_string()).unwrap_or_default())
            .arg(wait_ms.saturating_add(1000))
            .arg(&names.release);
        let reply: Vec<i64> = self.call(invocation.invoke_async(&mut connection)).await?;
        let number = |index: usize| {
            reply
                .get(index)
                .and_then(|value| u64::try_from(*value).ok())
                .ok_or_else(|| LockError::Backend(format!("redis: unexpected reply {reply:?}")))
        };
        if number(0)? == 1 {
            Ok(Attempt::Taken {
                ticket: number(1)?,
                fence: number(2)?,
                newer_waits: number(3)? == 1,
            })
        } else {
            // A negative PTTL (no expiry, or no key any more) says nothing useful: poll.
            let expires_in = reply.get(2).and_then(|value| u64::try_from(*value).ok());
            Ok(Attempt::Held {
                ticket: number(1)?,
                expires_in: expires_in.map(Duration::from_millis),
            })
        }
    }

    async fn try_acquire(&self, key: &str, token: &str) -> Result<Option<u64>, LockError> {
        let names = self.names(key);
        let mut connection = self.commands.clone();
        let mut invocation = self.scripts.try_acquire.key(&names.lock);
        invocation
            .key(&names.wait)
            .key(&names.fence)
            .arg(token)
            .arg(self.lease_ms());
        self.call(invocation.invoke_async(&mut connection)).await
    }

    async fn give_up(&self, key: &str, ticket: u64) -> Result<(), LockError> {
        let names = self.names(key);
        let mut connection = self.commands.clone();
        let mut invocation = self.scripts.give_up.key(&names.wait);
        invocation.arg(ticket.to_string());
        self.call(invocation.invoke_async::<i64>(&mut connection))
            .await
            .map(drop)
    }

    /// Whether the token still held the lease, which is now renewed.
    async fn renew(&self, lock: &str, token: &str) -> Result<bool, LockError> {
        let mut connection = self.commands.clone();
        let mut invocation = self.scripts.renew.key(lock);
        invocation.arg(token).arg(self.lease_ms());
        let renewed: i64 = self.call(invocation.invoke_async(&mut connection)).await?;
        Ok(renewed == 1)
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), LockError> {
        let names = self.names(key);
        let mut connection = self.commands.clone();
        let mut invocation = self.scripts.release.key(&names.lock);
        invocation.arg(token).arg(&names.released);
        let freed: i64 = self.call(invocation.invoke_async(&mut connection)).await?;
        if freed == 1 {
            Ok(())
        } else {
            Err(LockError::Lost)
        }
    }
}

enum Attempt {
    Taken {
        ticket: u64,
        fence: u64,
        newer_waits: bool,
    },
    Held {
        ticket: u64,
        expires_in: Option<Duration>,
    },
}

impl RedisLocker {
    /// Connects to Redis (commands, and the pub/sub connection that carries takeover requests).
    /// Fails when Redis cannot be reached now; once connected, the locker reconnects by itself.
    pub async fn connect(config: RedisLockerConfig) -> Result<RedisLocker, LockError> {
        if config.lease < Duration::from_secs(1) {
            return Err(LockError::Backend(format!(
                "the lease must be at least a second, not {:?}",
                config.lease
            )));
        }
        let backend = |error: redis::RedisError| LockError::Backend(format!("redis: {error}"));
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(backend)?;
        let settings = info.redis_settings().clone();
        let resp3 = info
            .clone()
            .set_redis_settings(settings.set_protocol(ProtocolVersion::RESP3));
        let commands_client = redis::Client::open(info).map_err(backend)?;
        let events_client = redis::Client::open(resp3).map_err(backend)?;
        // One quick retry: a request waits for a reconnection, and must fail within about a
        // second when Redis is gone; the next request tries again.
        let manager_config = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.io_timeout))
                .set_response_timeout(Some(config.io_timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(100))
        };
        let timeout = |error| LockError::Backend(format!("redis: {error}"));
        let commands = tokio::time::timeout(
            config.io_timeout * 3,
            commands_client.get_connection_manager_with_config(manager_config()),
        )
        .await
        .map_err(|_| timeout("connection timed out".to_owned()))?
        .map_err(backend)?;
        let (pushes, received) = tokio::sync::mpsc::unbounded_channel();
        let events_config = manager_config()
            .set_push_sender(pushes)
            .set_automatic_resubscription();
        let mut events = tokio::time::timeout(
            config.io_timeout * 3,
            events_client.get_connection_manager_with_config(events_config),
        )
        .await
        .map_err(|_| timeout("connection timed out".to_owned()))?
        .map_err(backend)?;
        let prefix = glob_escape(&config.key_prefix);
        let patterns = [format!("{prefix}release:*"), format!("{prefix}released:*")];
        tokio::time::timeout(config.io_timeout * 3, events.psubscribe(&patterns))
            .await
            .map_err(|_| timeout("subscription timed out".to_owned()))?
            .map_err(backend)?;
        let shared = Arc::new(Shared {
            commands,
            scripts: Scripts::new(),
            local: Arc::default(),
            config,
            closed: CancellationToken::new(),
        });
        tokio::spawn(dispatch(
            received,
            [events, shared.commands.clone()],
            shared.local.clone(),
            shared.config.key_prefix.clone(),
            shared.closed.clone(),
        ));
        Ok(RedisLocker { shared })
    }

    /// Whether Redis answers a `PING` within the I/O timeout (for readiness checks).
    pub async fn ping(&self) -> Result<(), LockError> {
        let mut connection = self.shared.commands.clone();
        let ping = redis::cmd("PING");
        match tokio::time::timeout(
            self.shared.config.io_timeout,
            ping.query_async::<String>(&mut connection),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(LockError::Backend(format!("redis: {error}"))),
            Err(_) => Err(LockError::Backend("redis: no answer in time".into())),
        }
    }

    fn guard(
        &self,
        key: &str,
        token: String,
        entry: HolderEntry,
        fence: u64,
        sent: Instant,
    ) -> LockGuard {
        let lost = CancellationToken::new();
        let renewal = tokio::spawn(renew(
            self.shared.clone(),
            self.shared.names(key).lock,
            token.clone(),
            sent,
            lost.clone(),
        ));
        let takeover = entry.takeover().clone();
        let held = RedisHeld {
            shared: self.shared.clone(),
            key: key.to_owned(),
            token,
            renewal,
            _entry: entry,
            released: false,
        };
        LockGuard::new(Box::new(held), fence, takeover).with_lost(lost)
    }
}

impl Drop for RedisLocker {
    fn drop(&mut self) {
        self.shared.closed.cancel();
    }
}

#[async_trait::async_trait]
impl Locker for RedisLocker {
    async fn lock(&self, key: &str) -> Result<LockGuard, LockError> {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.config.wait_timeout;
        let waiter = shared.local.wait(key);
        let mut ticket = None;
        loop {
            let released = waiter.released().notified();
            let mut released = std::pin::pin!(released);
            // Listening before the attempt: a release between the attempt and the wait wakes it.
            released.as_mut().enable();
            let token = uuid::Uuid::new_v4().simple().to_string();
            let entry = shared.local.hold(key, &token);
            let sent = Instant::now();
            // On failure, a waiter record left behind expires with the wait timeout: failing
            // now matters more than tidying a Redis that does not answer.
            match shared.attempt(key, &token, ticket).await? {
                Attempt::Taken {
                    ticket,
                    fence,
                    newer_waits,
                } => {
                    entry.granted(ticket);
                    if newer_waits {
                        entry.takeover().cancel();
                    }
                    return Ok(self.guard(key, token, entry, fence, sent));
                }
                Attempt::Held {
                    ticket: mine,
                    expires_in,
                } => {
                    drop(entry);
                    ticket = Some(mine);
                    let poll =
                        expires_in.map_or(POLL, |left| POLL.min(left + Duration::from_millis(5)));
                    tokio::select! {
                        () = &mut released => {}
                        () = tokio::time::sleep(poll) => {}
                        () = tokio::time::sleep_until(deadline) => {
                            // Best effort: the record expires with the wait timeout anyway.
                            let _ = shared.give_up(key, mine).await;
                            return Err(LockError::Timeout);
                        }
                    }
                }
            }
        }
    }

    async fn try_lock(&self, key: &str) -> Result<Option<LockGuard>, LockError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let entry = self.shared.local.hold(key, &token);
        let sent = Instant::now();
        let Some(fence) = self.shared.try_acquire(key, &token).await? else {
            return Ok(None);
        };
        // Its ticket is its fence: every `lock` call that starts after it is newer.
        entry.granted(fence);
        Ok(Some(self.guard(key, token, entry, fence, sent)))
    }
}

/// A held Redis lock: its renewal task, its registration on this node, and what frees it.
struct RedisHeld {
    shared: Arc<Shared>,
    key: String,
    token: String,
    renewal: tokio::task::JoinHandle<()>,
    /// Dropped with the guard: takeover requests stop reaching it.
    _entry: HolderEntry,
    released: bool,
}

#[async_trait::async_trait]
impl HeldLock for RedisHeld {
    async fn release(mut self: Box<Self>) -> Result<(), LockError> {
        self.renewal.abort();
        self.released = true;
        self.shared.release(&self.key, &self.token).await
    }
}

impl Drop for RedisHeld {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.released {
            return;
        }
        // Dropped without `release`: free it in the background; if that cannot run, the lease
        // runs out.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (shared, key, token) = (
            self.shared.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            if let Err(error) = shared.release(&key, &token).await {
                tracing::debug!(%error, "releasing a dropped lock failed");
            }
        });
    }
}

/// Keeps a lease alive until its guard goes; fires `lost` when it cannot vouch for it any more.
/// `sent` is when the acquiring call left: the lease runs at most from then.
async fn renew(
    shared: Arc<Shared>,
    lock: String,
    token: String,
    sent: Instant,
    lost: CancellationToken,
) {
    let period = shared.config.lease / 3;
    // The holder stops writing a margin (one period) before the lease can expire in Redis.
    let usable = shared.config.lease - period;
    let mut deadline = sent + usable;
    let mut next = sent + period;
    loop {
        tokio::select! {
            () = shared.closed.cancelled() => break,
            () = tokio::time::sleep_until(next.min(deadline)) => {}
        }
        if Instant::now() >= deadline {
            tracing::warn!(lock, "lock lost: no renewal confirmed in time");
            break;
        }
        let attempt = Instant::now();
        let renewal = tokio::time::timeout_at(deadline, shared.renew(&lock, &token)).await;
        match renewal {
            Ok(Ok(true)) => {
                deadline = attempt + usable;
                next = attempt + period;
            }
            Ok(Ok(false)) => {
                tracing::warn!(lock, "lock lost: its lease expired or was taken");
                break;
            }
            Ok(Err(error)) => {
                tracing::debug!(lock, %error, "lease renewal failed; retrying");
                next = Instant::now() + RENEW_RETRY;
            }
            // Past the deadline: the loop says so.
            Err(_) => {}
        }
    }
    lost.cancel();
}

/// Hands the pub/sub messages to this node's holders and waiters, and keeps both connections
/// up: a ping each poll, because a manager reconnects (and resubscribes) only on a failed call,
/// so without it the first request after Redis came back would fail.
async fn dispatch(
    mut received: tokio::sync::mpsc::UnboundedReceiver<PushInfo>,
    mut connections: [ConnectionManager; 2],
    local: Arc<Local>,
    prefix: String,
    closed: CancellationToken,
) {
    let release = format!("{prefix}release:");
    let released = format!("{prefix}released:");
    let mut ping = tokio::time::interval(POLL);
    loop {
        let push = tokio::select! {
            () = closed.cancelled() => return,
            push = received.recv() => push,
            _ = ping.tick() => {
                for connection in &mut connections {
                    let ping = redis::cmd("PING");
                    match tokio::time::timeout(POLL, ping.query_async::<String>(connection)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => tracing::debug!(%error, "redis connection down"),
                        Err(_) => tracing::debug!("redis ping timed out"),
                    }
                }
                continue;
            }
        };
        let Some(push) = push else { return };
        match push.kind {
            PushKind::PMessage => {
                let text = |index: usize| match push.data.get(index) {
                    Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes).ok(),
                    Some(Value::SimpleString(text)) => Some(text.as_str()),
                    _ => None,
                };
                let (Some(channel), Some(payload)) = (text(1), text(2)) else {
                    continue;
                };
                if let Some(key) = channel.strip_prefix(&released) {
                    local.released(key);
                } else if let Some(key) = channel.strip_prefix(&release)
                    && let Ok(ticket) = payload.parse::<u64>()
                {
                    local.takeover_requested(key, ticket);
                }
            }
            // Messages may have been lost meanwhile: waiters look again.
            PushKind::Disconnection | PushKind::PSubscribe => local.wake_all(),
            _ => {}
        }
    }
}

/// `text` as a literal in a Redis glob pattern.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_literal_in_patterns() {
        assert_eq!(glob_escape("app[1]*:"), r"app\[1\]\*:");
        assert_eq!(glob_escape("resumable:"), "resumable:");
    }
}
