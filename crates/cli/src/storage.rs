//! Where `resumable serve` keeps uploads and how it locks them: the local disk with in-process
//! locks (the zero-config default), or, for a fleet, an S3 bucket with Redis locks.

use crate::Usage;
use anyhow::Context;
use clap::Args;
use resumable_core::{Clock, Locker, MemoryLocker, Store};
use resumable_fs::{FileStore, FileStoreConfig};
use resumable_redis::{RedisLocker, RedisLockerConfig};
use resumable_s3::{S3Store, S3StoreConfig};
use resumable_server::ready::Check;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The longest `--lock-lease`: a dead node keeps its uploads locked for at most this long.
const MAX_LEASE: Duration = Duration::from_secs(30);

/// Storage and locking flags.
#[derive(Debug, Args)]
pub(crate) struct StorageArgs {
    /// Keep uploads in an S3-compatible bucket instead of --data-dir: `s3://BUCKET/PREFIX`
    /// (the prefix may be empty). Credentials come from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY. Every node of a fleet names the same bucket and prefix, and the
    /// same --redis. --data-dir still holds what is the node's own: part buffers that spill and
    /// the hook outbox.
    #[arg(long, env = "RESUMABLE_STORE", value_name = "URL", value_parser = parse_store)]
    pub(crate) store: Option<S3Location>,

    /// The S3 endpoint, for stores other than AWS (`http://127.0.0.1:3900` for a local Garage,
    /// MinIO, Ceph, R2). Path-style addressing (`ENDPOINT/BUCKET/KEY`) is used with it.
    #[arg(long, env = "RESUMABLE_S3_ENDPOINT", value_name = "URL")]
    pub(crate) s3_endpoint: Option<String>,

    /// The region requests are signed for (Garage: `garage`, or what its s3_region says).
    /// Default: AWS_REGION, else us-east-1.
    #[arg(long, env = "RESUMABLE_S3_REGION", value_name = "REGION")]
    pub(crate) s3_region: Option<String>,

    /// The size of every S3 part but the last (at least 5MiB on AWS; raised for an upload whose
    /// length would need more than 10,000 parts). Default: chosen from each upload's length
    /// (at least 8 MiB; 32 MiB when the length is deferred).
    #[arg(long, env = "RESUMABLE_S3_PART_SIZE", value_name = "SIZE", value_parser = crate::options::parse_size)]
    pub(crate) s3_part_size: Option<u64>,

    /// Memory that all uploads' S3 part buffers may take together, whatever the number of
    /// uploads. Each upload in flight holds at most five parts (one filling, four going up); a
    /// node sends at most 16 at once. A body that fills a part waits up to 2 s for room in it,
    /// then spills the part to a file in --data-dir.
    #[arg(long, env = "RESUMABLE_S3_BUFFER", value_name = "SIZE", default_value = "128MiB", value_parser = crate::options::parse_size)]
    pub(crate) s3_buffer: u64,

    /// Send S3 parts with `UNSIGNED-PAYLOAD` instead of a SHA-256 of their bytes in the
    /// signature over a plain `http` endpoint too: less CPU on this node and on the store, but
    /// only TCP's checksum guards the bytes. Over `https` (AWS's endpoints, or an
    /// `https://` --s3-endpoint) parts are sent unsigned anyway: TLS guards them.
    #[arg(long, env = "RESUMABLE_S3_UNSIGNED_PAYLOAD")]
    pub(crate) s3_unsigned_payload: bool,

    /// Lock uploads in Redis (`redis://[user:password@]HOST:PORT[/DB]`) so that several nodes
    /// can serve the same uploads: a request on one node asks a request on another to let go.
    /// Without it, locks are in-process: one node only.
    #[arg(long, env = "RESUMABLE_REDIS", value_name = "URL")]
    pub(crate) redis: Option<String>,

    /// How long a Redis lock outlives its node's last renewal: the longest a node that died
    /// keeps its uploads locked (at most 30s). A holder stops writing a third of it before
    /// the lease could run out.
    #[arg(long, env = "RESUMABLE_LOCK_LEASE", value_name = "DURATION", default_value = "15s", value_parser = parse_lease)]
    pub(crate) lock_lease: Duration,
}

/// The bucket and key prefix of `--store s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Location {
    bucket: String,
    prefix: String,
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "s3://{}/{}", self.bucket, self.prefix)
    }
}

pub(crate) fn parse_store(value: &str) -> Result<S3Location, String> {
    let Some(rest) = value.strip_prefix("s3://") else {
        return Err(
            "expected s3://BUCKET/PREFIX (without --store, uploads go to --data-dir)".into(),
        );
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    // S3's bucket naming rules, the part every implementation shares.
    let valid = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b".-".contains(&byte)
        });
    if !valid {
        return Err(format!(
            "{bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, dots, hyphens)"
        ));
    }
    Ok(S3Location {
        bucket: bucket.to_owned(),
        prefix: prefix.trim_matches('/').to_owned(),
    })
}

fn parse_lease(value: &str) -> Result<Duration, String> {
    let lease = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if lease < Duration::from_secs(1) || lease > MAX_LEASE {
        return Err("must be between 1s and 30s".into());
    }
    Ok(lease)
}

/// The store, the locker, and what readiness checks besides them.
pub(crate) struct Storage {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) locker: Arc<dyn Locker>,
    /// The `/readyz` check of Redis, when locks are there (the store has its own probe).
    pub(crate) redis_check: Option<RedisAnswers>,
    /// For the start-up log line.
    pub(crate) description: String,
}

impl StorageArgs {
    /// Opens the store and the locker the flags name.
    pub(crate) async fn open(
        &self,
        data_dir: &Path,
        lock_timeout: Duration,
        direct_io: bool,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Storage> {
        let s3_only = self.s3_endpoint.is_some()
            || self.s3_region.is_some()
            || self.s3_part_size.is_some()
            || self.s3_unsigned_payload;
        if self.store.is_none() && s3_only {
            return Err(Usage(
                "--s3-endpoint, --s3-region, --s3-part-size and --s3-unsigned-payload need \
                 --store s3://BUCKET/PREFIX"
                    .into(),
            )
            .into());
        }
        let (store, description): (Arc<dyn Store>, String) = match &self.store {
            None => {
                let store = FileStore::open(FileStoreConfig {
                    root: data_dir.to_owned(),
                    lock_timeout,
                    clock: clock.clone(),
                    direct_io,
                })
                .await
                .with_context(|| format!("cannot use data directory {}", data_dir.display()))?;
                (Arc::new(store), format!("{}", data_dir.display()))
            }
            Some(location) => {
                let store = self.s3_store(location, data_dir, clock.clone()).await?;
                (Arc::new(store), location.to_string())
            }
        };
        let mut redis_check = None;
        let locker: Arc<dyn Locker> = match &self.redis {
            None => {
                if self.store.is_some() {
                    tracing::warn!(
                        "--store s3:// without --redis: locks are this node's own; run one node \
                         only, or give every node the same --redis"
                    );
                }
                Arc::new(MemoryLocker::new(lock_timeout))
            }
            Some(url) => {
                let mut config = RedisLockerConfig::new(url.clone());
                config.lease = self.lock_lease;
                config.wait_timeout = lock_timeout;
                let locker = RedisLocker::connect(config).await.map_err(|error| {
                    anyhow::anyhow!(
                        "cannot use Redis at {}: {error}",
                        crate::config::mask_url(url)
                    )
                })?;
                let locker = Arc::new(locker);
                redis_check = Some(RedisAnswers(locker.clone()));
                locker
            }
        };
        Ok(Storage {
            store,
            locker,
            redis_check,
            description,
        })
    }

    async fn s3_store(
        &self,
        location: &S3Location,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<S3Store> {
        let spill: PathBuf = data_dir.join("spill");
        std::fs::create_dir_all(&spill)
            .with_context(|| format!("cannot create {}", spill.display()))?;
        let mut config = S3StoreConfig::new(location.bucket.clone());
        config.prefix = location.prefix.clone();
        config.endpoint = self.s3_endpoint.clone();
        config.force_path_style = self.s3_endpoint.is_some();
        config.region = self
            .s3_region
            .clone()
            .or_else(|| {
                std::env::var("AWS_REGION")
                    .ok()
                    .filter(|region| !region.is_empty())
            })
            .unwrap_or_else(|| "us-east-1".into());
        config.part_size = self.s3_part_size;
        config.buffer_budget = usize::try_from(self.s3_buffer).unwrap_or(usize::MAX);
        config.temp_dir = spill;
        if self.s3_unsigned_payload {
            config.sign_payloads = Some(false);
        }
        config.clock = clock;
        S3Store::connect(config)
            .await
            .with_context(|| format!("cannot use {location}"))
    }
}

/// `/readyz`: Redis answers.
pub(crate) struct RedisAnswers(Arc<RedisLocker>);

#[async_trait::async_trait]
impl Check for RedisAnswers {
    fn name(&self) -> &str {
        "redis"
    }

    async fn check(&self) -> Result<(), String> {
        self.0
            .ping()
            .await
            .map_err(|error| format!("Redis does not answer: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_a_bucket_and_a_prefix() {
        let location = parse_store("s3://uploads/a/b/").unwrap();
        assert_eq!(location.bucket, "uploads");
        assert_eq!(location.prefix, "a/b");
        assert_eq!(parse_store("s3://uploads").unwrap().prefix, "");
        assert!(parse_store("/srv/uploads").is_err());
        assert!(parse_store("s3://Not_A_Bucket/x").is_err());
        assert!(parse_store("s3:///x").is_err());
    }

    #[test]
    fn leases_are_short() {
        assert_eq!(parse_lease("15s"), Ok(Duration::from_secs(15)));
        assert!(parse_lease("31s").is_err());
        assert!(parse_lease("100ms").is_err());
    }
}
