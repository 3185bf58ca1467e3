//! The hook flags of `resumable serve`, and the delivery worker's life beside the server.

use anyhow::Context;
use clap::{Args, ValueEnum};
use resumable_core::{
    Clock, HookConfig, HookFailure, HookKinds, HookTransport, Hooks, Observer, UploadService,
};
use resumable_fs::FileOutbox;
use resumable_hooks::{CommandHook, HttpHook, secret_from_file_contents};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for the delivery worker to stop (it stops between two attempts;
/// an event being sent stays in the outbox and is sent again at the next start).
const WORKER_STOP: Duration = Duration::from_secs(5);

/// Hook flags (see README, "Hooks").
#[derive(Args, Debug)]
pub(crate) struct HookArgs {
    /// Send each hook event as an HTTP POST of JSON to this URL (plain http://). `pre-*` events
    /// wait for the answer: a 2xx with an empty body accepts; a JSON body
    /// `{"reject": {"status": 403, "message": "..."}}` refuses, `{"metadata": {"key": "value"}}`
    /// sets metadata (pre-create). `post-*` events are delivered at least once, across restarts:
    /// drop duplicates by the event's `id`.
    #[arg(long, env = "RESUMABLE_HOOK_URL")]
    hook_url: Option<String>,

    /// Run this program for each hook event instead of POSTing it: the JSON on its stdin, the
    /// answer on its stdout, a non-zero exit a failure.
    #[arg(long, env = "RESUMABLE_HOOK_COMMAND", conflicts_with = "hook_url")]
    hook_command: Option<PathBuf>,

    /// Sign each POST with the key in this file: `Resumable-Signature: sha256=<hex HMAC-SHA256
    /// of the body>` (trailing line breaks of the file are not part of the key).
    #[arg(long, env = "RESUMABLE_HOOK_SECRET_FILE")]
    hook_secret_file: Option<PathBuf>,

    /// The events sent, comma-separated (default: all): pre-create, post-create, post-receive,
    /// pre-finish, post-finish, post-terminate, post-expire. Events left out are neither sent
    /// nor waited for.
    #[arg(long, env = "RESUMABLE_HOOK_EVENTS", value_parser = parse_kinds)]
    hook_events: Option<HookKinds>,

    /// How long a pre-* hook (and each delivery attempt) may take before it counts as failed.
    #[arg(long, env = "RESUMABLE_HOOK_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    hook_timeout: Duration,

    /// What a pre-* hook that cannot answer (down, too slow, a bad answer) means. `refuse`
    /// (the default) answers 503 and nothing happens, so the client retries: a hook that
    /// enforces a policy (quotas, virus scans) must fail closed, or its outage would let
    /// everything in. `allow` goes on as if the hook had accepted.
    #[arg(
        long,
        env = "RESUMABLE_HOOK_FAILURE",
        default_value = "refuse",
        value_enum
    )]
    hook_failure: FailureArg,

    /// The longest wait between two attempts to deliver a post-* event (waits double from
    /// 100 ms up to this).
    #[arg(long, env = "RESUMABLE_HOOK_RETRY_MAX", default_value = "1m", value_parser = humantime::parse_duration)]
    hook_retry_max: Duration,
}

/// `--hook-failure`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum FailureArg {
    /// Answer 503: the client retries.
    Refuse,
    /// Go on as if the hook had accepted.
    Allow,
}

pub(crate) fn parse_kinds(text: &str) -> Result<HookKinds, String> {
    HookKinds::parse_list(text).map_err(|error| error.to_string())
}

/// The delivery worker, running.
pub(crate) struct Delivery {
    stop: CancellationToken,
    worker: JoinHandle<()>,
}

impl Delivery {
    /// Stops the worker (what it has not delivered stays in the outbox).
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(WORKER_STOP, self.worker)
            .await
            .is_err()
        {
            tracing::warn!("the hook delivery worker did not stop in time");
        }
    }
}

impl HookArgs {
    /// The hooks these flags configure, `None` without `--hook-url` or `--hook-command`; the
    /// outbox lives in `data_dir`, and `observer` hears how each call to the receiver ends.
    pub(crate) async fn hooks(
        &self,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn Observer>,
    ) -> anyhow::Result<Option<Arc<Hooks>>> {
        let transport: Arc<dyn HookTransport> = match (&self.hook_url, &self.hook_command) {
            (Some(url), _) => {
                let key = match &self.hook_secret_file {
                    Some(path) => {
                        let contents = std::fs::read(path).with_context(|| {
                            format!("cannot read the hook secret file {}", path.display())
                        })?;
                        Some(secret_from_file_contents(&contents)?)
                    }
                    None => None,
                };
                Arc::new(HttpHook::new(url, key, self.hook_timeout)?)
            }
            (None, Some(program)) => Arc::new(CommandHook::new(program)),
            (None, None) => return Ok(None),
        };
        let outbox = FileOutbox::open(data_dir)
            .await
            .with_context(|| format!("cannot open the hook outbox in {}", data_dir.display()))?;
        let config = HookConfig {
            kinds: self.hook_events.unwrap_or_else(HookKinds::all),
            timeout: self.hook_timeout,
            failure: match self.hook_failure {
                FailureArg::Refuse => HookFailure::Refuse,
                FailureArg::Allow => HookFailure::Allow,
            },
            retry_max: self.hook_retry_max,
            ..HookConfig::default()
        };
        let hooks = Hooks::new(config, transport, Arc::new(outbox), clock);
        Ok(Some(Arc::new(hooks.with_observer(observer))))
    }
}

/// Starts delivering the outbox (what a crash left in it first), and settles the uploads a
/// crash left owing their finish hooks.
pub(crate) fn start(hooks: Arc<Hooks>, service: Arc<UploadService>) -> Delivery {
    let stop = CancellationToken::new();
    let worker = tokio::spawn(hooks.deliver(stop.clone()));
    // In the background: the pre-finish calls may wait on a receiver that is down.
    tokio::spawn(async move {
        match service.settle_finishes().await {
            Ok(0) => {}
            Ok(settled) => tracing::info!(settled, "finish hooks owed from before a restart ran"),
            Err(error) => tracing::warn!(%error, "cannot look for uploads owing finish hooks"),
        }
    });
    Delivery { stop, worker }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resumable_core::HookKind;

    #[test]
    fn event_lists_parse() {
        let kinds = parse_kinds("post-create,post-finish").unwrap();
        assert!(kinds.contains(HookKind::PostFinish));
        assert!(!kinds.contains(HookKind::PreCreate));
        assert!(parse_kinds("post-create,on-finish").is_err());
    }
}
