//! The S3 store of resumable: uploads in any S3-compatible object store (AWS S3, Garage, MinIO,
//! Ceph, R2), behind the same [`Store`] trait as the local-disk one, so that any node of a
//! fleet can take any request of any upload.
//!
//! # Layout in the bucket
//!
//! Every upload is an S3 multipart upload on `PREFIX/data/ID`, opened at its creation, plus a
//! few small objects (see `layout` for the keys):
//!
//! - `PREFIX/info/ID`, the record: the upload's info, the multipart upload's id, the part size
//!   chosen at creation and, once finished, the finished length. Replaced whole (a `PUT` is
//!   atomic), so readers see the old or the new record, never a mix.
//! - `PREFIX/tail/ID/…`, tail segments: the bytes that do not make a whole part yet. Each
//!   append writes one segment with the bytes it leaves over (never rewriting earlier ones, so
//!   a 256 KiB `PATCH` sends 256 KiB, not the whole tail); the segment's key names the part it
//!   belongs to, where in that part it starts, and the time of the write.
//! - `PREFIX/keys/DIGEST`, the simple protocol's key index (`DIGEST` hashes owner and client
//!   key), so [`Store::find_by_key`] works on any node.
//!
//! # Offset truth, from S3 alone
//!
//! The offset is the parts the newest tail segment vouches for plus the live tail. An append
//! uploads up to [`PARTS_IN_FLIGHT`] parts at once and writes its own segment (with the bytes
//! it leaves over, or empty) only once every one of them is acknowledged; the segment's name
//! says which part it belongs to, so it vouches for every part below that one. Parts at or
//! above the part the newest segment names never count, whatever `ListParts` shows. A
//! response reports an offset only once S3 has acknowledged every byte below it (the parts'
//! `UploadPart`, the segment's `PutObject`). Nothing is kept in the node's memory or disk
//! between requests, so after a node dies any other recovers the offset from one listing of
//! the tail. Every crash point leaves that sum equal to bytes stored, none counted twice:
//!
//! - before the append's segment is written: its parts vouch for nothing yet; the bytes of
//!   the append are lost, as a client that sent them and got no answer expects, and the
//!   parts it left (acknowledged ones, perhaps past a missing one) are overwritten by the
//!   append that sends those bytes again, or left out of the object by the finish;
//! - after the new segment, before the absorbed ones are deleted: those name a lower part
//!   and do not count; the next append or the finish deletes them;
//! - in the finish, after the tail went up as the last (short) part: the tail still counts
//!   and the part is uploaded again by the repeated finish; after
//!   `CompleteMultipartUpload`, before the record says so: the multipart upload is gone and
//!   the object is there, which is what finished means; the finish can be repeated at every
//!   point;
//! - in a concatenation, after some parts were copied: the target counts nothing (no segment
//!   vouches for them) and is not complete, so the service concatenates again, which copies
//!   every part anew and completes;
//! - in a creation, after the multipart upload was opened, or in a termination, after the
//!   record was deleted: no upload exists; [`Store::remove_leftovers`] aborts multipart
//!   uploads no record names and deletes objects of uploads without a record, once older than
//!   its minimum age.
//!
//! A bucket lifecycle rule that aborts incomplete multipart uploads must wait longer than the
//! service's expiry, or it removes uploads still in progress (their status then fails).
//!
//! A status costs two listings whatever the number of parts (the tail, and a `ListParts` of
//! one part that tells whether the multipart upload is still open); an append that ends
//! exactly on a part boundary writes an empty segment for that reason, and to record the
//! write time (S3's `LastModified` is the server's clock; expiry runs on the service's).
//!
//! # Parts
//!
//! Every part but the last has the upload's part size, chosen at creation from
//! `Upload-Length` so that no upload needs more than 10,000 parts (at least
//! [`DEFAULT_PART_SIZE`]; [`DEFERRED_PART_SIZE`] when the length is deferred, enough for
//! 320 GiB), or [`S3StoreConfig::part_size`] when set (raised if the length needs it). Small
//! `PATCH`es never make small parts: their bytes go to the tail until it makes a whole part,
//! which is then read back from the tail segments and uploaded. AWS refuses non-last parts
//! under 5 MiB: a part size below that works on Garage and MinIO only.
//!
//! # Memory
//!
//! A part being filled, and a checksummed chunk set aside until verified, live in a spool:
//! in memory while the budget shared by every upload of the store allows
//! ([`S3StoreConfig::buffer_budget`], default [`DEFAULT_BUFFER_BUDGET`]), in a temporary file
//! beyond it. Memory stays bounded whatever the number of uploads: an append holds the part it
//! fills and up to [`PARTS_IN_FLIGHT`] going up, and the store sends at most
//! [`PARTS_IN_FLIGHT_PER_STORE`] at once. A part an append fills from its start takes a whole
//! part of the budget ahead, waiting for it while other parts go up (up to
//! [`S3StoreConfig::budget_patience`], then it spills): under load the bodies take turns
//! rather than every part going through a file, which on 50 concurrent uploads halved the
//! node's CPU. Part buffers are kept for the next part (no page faults, no memory stranded in
//! the allocator). Bytes set aside by
//! [`Store::stage`] stay on the node (the contract lets a crash lose them): the stage, its
//! verification and the commit are one request on one node.
//!
//! # Finishing, reading, concatenating
//!
//! [`Store::finish`] uploads the tail as the last part and completes the multipart upload
//! (an upload smaller than one part is a single `PutObject` instead, and its multipart upload
//! is aborted); the object is then read with `Range`. S3 cannot read the parts of an open
//! multipart upload: [`Store::read`] of an unfinished upload serves the tail, finishes an
//! upload whose every byte is stored first, and is [`StoreError::Unsupported`] for bytes in the
//! parts of an upload still growing (the service only reads complete uploads).
//! [`Store::concatenate`] finishes the parts, then copies them server-side with
//! `UploadPartCopy` when every part but the last reaches S3's 5 MiB minimum (a last part under
//! it goes through the node: Garage refuses to copy from an object that small), and through
//! the node (streamed into parts, bounded memory) when not.
//!
//! # The client crate
//!
//! `aws-sdk-s3` (with `aws-config`): it has every operation needed (`CreateMultipartUpload`,
//! `UploadPart`, `UploadPartCopy`, `ListParts` with its markers, `Complete`/`Abort`, `Get` with
//! `Range`, `Put`, `Head`, `Delete`, `ListObjectsV2`, `ListMultipartUploads`), path-style
//! addressing, a custom endpoint and region, request checksums only "when required" (newer
//! SDKs add CRC32 checksums to every request by default, which some non-AWS stores refuse),
//! retries with backoff, and TLS through rustls (no OpenSSL). It is AWS's own and follows the
//! service. `object_store` hides the parts behind its own writer (no `ListParts`, no
//! `UploadPartCopy`), both of which this store is built on.
//!
//! Credentials come from the standard `AWS_*` variables; with a custom endpoint nothing else
//! is asked (no instance metadata service probing, which would hang where the network is
//! closed).

mod error;
mod layout;
mod spool;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream as S3Bytes;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use error::Kind;
use futures_util::stream::FuturesUnordered;
use futures_util::{StreamExt, TryStreamExt};
use layout::{Layout, ListedPart, Segment, SegmentName, Stored};
use resumable_core::store::client_key_digest;
use resumable_core::{
    Appended, BodyError, BodyStream, ByteStream, Capabilities, Clock, Length, Offset, Owner,
    Staged, StorageLocation, Store, StoreError, SystemClock, UploadId, UploadInfo, UploadStatus,
};
use serde::{Deserialize, Serialize};
use spool::{Budget, Sealed, Spool};
use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;

const MIB: u64 = 1024 * 1024;

/// Part size of an upload of known length that fits 10,000 parts of it (up to 78 GiB).
pub const DEFAULT_PART_SIZE: u64 = 8 * MIB;
/// Part size of an upload whose length is deferred: 10,000 parts make 320 GiB.
pub const DEFERRED_PART_SIZE: u64 = 32 * MIB;
/// Memory all uploads' buffered bytes may take together before spools spill to files: 16
/// parts of the default size, as many as a node sends at once. With 50 concurrent 64 MiB
/// uploads the server peaked near 185 MiB RSS with it and sent every part from memory
/// (bench/RESULTS.md); 16 MiB spilled nearly every part and cost the node about 1.8 s of CPU
/// per GiB instead of 1.0.
pub const DEFAULT_BUFFER_BUDGET: usize = 128 * 1024 * 1024;
/// S3's limit on the parts of one multipart upload.
pub const MAX_PARTS: u32 = 10_000;
/// S3's smallest non-last part (AWS enforces it; Garage does not).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// S3's largest part, and the largest range one `UploadPartCopy` copies.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
/// How long a request may go unanswered (from its start to the first byte of the answer)
/// before it is given up and retried, by default: a store that stops answering makes requests
/// fail with 503 rather than hang. Requests that send bytes get more (see
/// [`S3StoreConfig::request_timeout`]).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The slowest link to the store a request that sends bytes is given time for.
const SLOWEST_UPLOAD_BYTES_PER_SECOND: u64 = 256 * 1024;

/// `base` plus the time `bytes` take at [`SLOWEST_UPLOAD_BYTES_PER_SECOND`].
fn transfer_timeout(base: Duration, bytes: u64) -> Duration {
    base + Duration::from_secs(bytes / SLOWEST_UPLOAD_BYTES_PER_SECOND)
}

/// Small requests (segment reads, deletions) one operation keeps in flight at once.
const CONCURRENT_REQUESTS: usize = 8;
/// Parts one append uploads at once: one at a time leaves the store idle between parts.
pub const PARTS_IN_FLIGHT: usize = 4;
/// Parts all appends of a store upload at once: past a few per core the store gains nothing,
/// and each costs this node a connection and its buffers.
pub const PARTS_IN_FLIGHT_PER_STORE: usize = 16;
/// How long an append waits for the budget to hold its next part in memory before it spills
/// that part to a file (see [`S3StoreConfig::budget_patience`]).
pub const DEFAULT_BUDGET_PATIENCE: Duration = Duration::from_secs(2);

/// Credentials given directly instead of through the `AWS_*` variables.
#[derive(Clone)]
pub struct S3Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .finish()
    }
}

/// Where a crash test stops the store dead, as a process killed at that point would be: the
/// operation fails there and does nothing more. For tests; `None` in any real configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Creation: the multipart upload is open, the record not written.
    AfterOpeningMultipart,
    /// Append: a part was acknowledged, the segment of the bytes after it not written.
    AfterPart,
    /// Append: the new segment was written, the segments it made obsolete not deleted.
    AfterSegment,
    /// Finish: the tail went up as the last part (or the whole object was put), not completed.
    AfterLastPart,
    /// Finish: the multipart upload was completed, the record not updated.
    AfterComplete,
    /// Finish: the record says finished, the tail segments are not deleted.
    AfterRecord,
    /// Concatenation: the first part was copied, not the others.
    AfterFirstCopy,
    /// Termination: the record was deleted, nothing else.
    AfterRemovingRecord,
}

/// Settings of an [`S3Store`].
#[derive(Clone)]
pub struct S3StoreConfig {
    /// The bucket, which must exist.
    pub bucket: String,
    /// Prepended to every key (`uploads` puts everything under `uploads/`); may be empty.
    pub prefix: String,
    /// A custom endpoint (`http://127.0.0.1:3900` for a local Garage); `None` for AWS.
    pub endpoint: Option<String>,
    /// The region to sign requests for (`garage`, `us-east-1`, …).
    pub region: String,
    /// Bucket in the path (`http://host/bucket/key`) rather than in the host name: what most
    /// non-AWS stores need.
    pub force_path_style: bool,
    /// Credentials; `None` reads the standard `AWS_*` variables (and, without an endpoint,
    /// the rest of AWS's default chain).
    pub credentials: Option<S3Credentials>,
    /// Part size of every upload (raised where an upload's length needs more than 10,000
    /// parts of it); `None` chooses from each upload's length (see the crate docs). At most
    /// 5 GiB; AWS refuses non-last parts under 5 MiB (Garage and MinIO take them).
    pub part_size: Option<u64>,
    /// Bytes of memory all uploads' buffers may take together before they spill to files: the
    /// store's memory for upload bytes whatever the number of uploads (each append holds at
    /// most the part it fills and four going up; a staged chunk holds its length).
    pub buffer_budget: usize,
    /// How long an append waits for the budget to hold its next part in memory (its body
    /// waiting meanwhile, parts going up giving budget back) before it spills the part to a
    /// file instead, [`DEFAULT_BUDGET_PATIENCE`] by default. Writing a part to a file and
    /// reading it back costs more than a short wait; the limit keeps bodies that hold memory
    /// long (slow clients) from holding the others up. A waiting append does not read its
    /// body, so it notices a takeover or a lost lock only once the wait is over.
    pub budget_patience: Duration,
    /// Where buffers spill.
    pub temp_dir: PathBuf,
    /// Whether each part's SigV4 signature covers a SHA-256 of its bytes. Off
    /// (`UNSIGNED-PAYLOAD`), neither this node nor the store hashes the bytes of a part, which
    /// on a small machine is a good share of the CPU an upload costs; over `https` TLS already
    /// guards the bytes, over plain `http` only TCP's checksum does. `None` (the default)
    /// signs them over plain `http` only, as botocore does: see [`signs_payloads`].
    pub sign_payloads: Option<bool>,
    /// How long a request may go unanswered (from its start to the first byte of the answer)
    /// before it is given up and retried, [`DEFAULT_REQUEST_TIMEOUT`] by default. A request
    /// that sends bytes gets that plus the time they take at 256 KiB/s.
    pub request_timeout: Duration,
    /// The time recorded as an upload's last write (the service's clock, so expiry agrees).
    pub clock: Arc<dyn Clock>,
    /// For crash tests only: where every operation stops dead.
    pub crash_at: Option<CrashPoint>,
}

impl S3StoreConfig {
    /// Defaults for everything but the bucket: AWS, `us-east-1`, no prefix, part sizes chosen
    /// per upload, a 128 MiB buffer budget, the system's temporary directory.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3StoreConfig {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            force_path_style: true,
            credentials: None,
            part_size: None,
            buffer_budget: DEFAULT_BUFFER_BUDGET,
            budget_patience: DEFAULT_BUDGET_PATIENCE,
            temp_dir: std::env::temp_dir(),
            sign_payloads: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            clock: Arc::new(SystemClock),
            crash_at: None,
        }
    }
}

/// Uploads stored in an S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    bucket: String,
    layout: Layout,
    part_size: Option<u64>,
    budget: Arc<Budget>,
    budget_patience: Duration,
    /// Parts going up at once over all uploads (each holds a connection and its buffers).
    part_slots: Arc<Semaphore>,
    request_timeout: Duration,
    sign_payloads: bool,
    clock: Arc<dyn Clock>,
    /// What `stage` set aside, per upload. A std mutex: held for a map operation, never across
    /// an await.
    staged: Mutex<HashMap<UploadId, Sealed>>,
    crash_at: Option<CrashPoint>,
}

/// What the record object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    info: UploadInfo,
    /// The multipart upload's id.
    multipart: String,
    part_size: u64,
    /// The creation's time on the store's clock (the last write until bytes come).
    created_nanos: u64,
    /// Set once the object is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finished: Option<Finished>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Finished {
    length: u64,
    modified_nanos: u64,
}

impl Record {
    /// The last write to an open upload: its newest segment's time, or its creation.
    fn modified_nanos(&self, stored: &Stored) -> u64 {
        stored.last_written.map_or(0, nanos).max(self.created_nanos)
    }
}

/// Where an upload's bytes are.
enum State {
    /// In the open multipart upload and the tail.
    Open(Stored),
    /// In the finished object.
    Finished(Finished),
}

/// Whether parts are signed with a SHA-256 of their bytes when the configuration does not say:
/// over a plain `http` endpoint only (AWS's own endpoints, the default, are `https`).
pub fn signs_payloads(endpoint: Option<&str>) -> bool {
    endpoint.is_some_and(|endpoint| {
        endpoint
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
    })
}

/// The part size of a new upload (see the crate docs).
pub fn part_size_for(length: Length, configured: Option<u64>) -> u64 {
    let chosen = configured.unwrap_or(match length {
        Length::Known(_) => DEFAULT_PART_SIZE,
        Length::Deferred => DEFERRED_PART_SIZE,
    });
    let needed = match length {
        Length::Known(length) => length.div_ceil(u64::from(MAX_PARTS)).div_ceil(MIB) * MIB,
        Length::Deferred => 0,
    };
    chosen.max(needed).clamp(1, MAX_PART_SIZE)
}

fn nanos(time: SystemTime) -> u64 {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

fn time_of(nanos: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// A configuration the store cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No bucket named.
    #[error("no S3 bucket given")]
    NoBucket,
    /// A part size outside what S3 takes.
    #[error(
        "part size {0} is outside 1 byte to 5 GiB (AWS also refuses non-last parts under 5 MiB)"
    )]
    PartSize(u64),
}

impl S3Store {
    /// A store on `config.bucket`. Asks nothing of S3 yet: [`Store::probe`] tells whether it
    /// answers.
    pub async fn connect(config: S3StoreConfig) -> Result<S3Store, ConfigError> {
        if config.bucket.is_empty() {
            return Err(ConfigError::NoBucket);
        }
        if let Some(size) = config
            .part_size
            .filter(|size| !(1..=MAX_PART_SIZE).contains(size))
        {
            return Err(ConfigError::PartSize(size));
        }
        use aws_config::BehaviorVersion;
        use aws_sdk_s3::config::{
            Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(config.request_timeout)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        loader = match (&config.credentials, &config.endpoint) {
            (Some(given), _) => loader.credentials_provider(Credentials::new(
                &given.access_key_id,
                &given.secret_access_key,
                None,
                None,
                "resumable",
            )),
            (None, Some(_)) => loader.credentials_provider(
                aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
            ),
            (None, None) => loader,
        };
        let shared = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Ok(S3Store {
            inner: Arc::new(Inner {
                client: Client::from_conf(s3),
                bucket: config.bucket,
                layout: Layout::new(&config.prefix),
                part_size: config.part_size,
                budget: Budget::new(config.buffer_budget, config.temp_dir),
                budget_patience: config.budget_patience,
                sign_payloads: config
                    .sign_payloads
                    .unwrap_or_else(|| signs_payloads(config.endpoint.as_deref())),
                part_slots: Arc::new(Semaphore::new(PARTS_IN_FLIGHT_PER_STORE)),
                request_timeout: config.request_timeout,
                clock: config.clock,
                staged: Mutex::default(),
                crash_at: config.crash_at,
            }),
        })
    }

    /// The ids of the uploads after `start_after`, ascending, at most `limit` of them.
    pub async fn list_page(
        &self,
        start_after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<UploadId>, StoreError> {
        self.inner.list_page(start_after, limit).await
    }

    /// Bytes of the buffer budget no upload holds (for tests and metrics).
    pub fn buffer_budget_available(&self) -> usize {
        self.inner.budget.available()
    }

    /// How many buffers went to a temporary file for want of budget (for tests and metrics).
    pub fn spilled_buffers(&self) -> u64 {
        self.inner.budget.spills()
    }

    /// The SDK client, for tests that look at what the store left in the bucket.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The key of the upload's object (its multipart upload's key).
    pub fn object_key(&self, id: &UploadId) -> String {
        self.inner.layout.data(id)
    }

    /// The multipart upload of an upload not finished yet.
    pub async fn multipart_upload_id(&self, id: &UploadId) -> Result<String, StoreError> {
        Ok(self.inner.record(id).await?.multipart)
    }
}

/// One listed object.
struct Listed {
    key: String,
    size: u64,
    last_modified: Option<SystemTime>,
}

impl Inner {
    /// A configuration override giving one request that sends `bytes` time for them.
    fn sending(&self, bytes: u64) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default().timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .read_timeout(transfer_timeout(self.request_timeout, bytes))
                .build(),
        )
    }

    fn crash(&self, at: CrashPoint) -> Result<(), StoreError> {
        if self.crash_at == Some(at) {
            return Err(error::backend(
                Kind::Failed,
                "crash test",
                format!("{at:?}"),
            ));
        }
        Ok(())
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let output = match sent {
            Ok(output) => output,
            Err(error) if error::is_missing(&error) => return Ok(None),
            Err(error) => return Err(error::s3(&format!("GetObject {key}"), error)),
        };
        let bytes = output.body.collect().await.map_err(|error| {
            error::backend(Kind::Unavailable, &format!("GetObject {key}"), error)
        })?;
        Ok(Some(bytes.into_bytes()))
    }

    async fn put(&self, key: &str, body: S3Bytes, length: u64) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(i64::try_from(length).unwrap_or(i64::MAX))
            .body(body)
            .customize()
            .config_override(self.sending(length))
            .send()
            .await
            .map_err(|error| error::s3(&format!("PutObject {key}"), error))?;
        Ok(())
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let length = bytes.len() as u64;
        self.put(key, S3Bytes::from(bytes), length).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error::is_missing(&error) => Ok(()),
            Err(error) => Err(error::s3(&format!("DeleteObject {key}"), error)),
        }
    }

    /// Deletes what correctness does not need deleted (obsolete segments): a failure is logged
    /// and left for a later append, finish or sweep.
    async fn delete_quietly(&self, keys: impl IntoIterator<Item = String>) {
        // Owned futures (a client clone is a reference count): borrowing futures in a
        // concurrent stream make the trait's futures lose `Send` under async-trait.
        let deletions: Vec<_> = keys
            .into_iter()
            .map(|key| {
                let (client, bucket) = (self.client.clone(), self.bucket.clone());
                async move {
                    let sent = client.delete_object().bucket(bucket).key(&key).send().await;
                    if let Err(error) = sent
                        && !error::is_missing(&error)
                    {
                        let error = error::s3(&format!("DeleteObject {key}"), error);
                        tracing::warn!(%key, %error, "could not delete an obsolete object");
                    }
                }
            })
            .collect();
        futures_util::stream::iter(deletions)
            .buffer_unordered(CONCURRENT_REQUESTS)
            .collect::<Vec<()>>()
            .await;
    }

    /// Objects under `prefix`, after `start_after`, ascending, at most `limit`.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<String>,
        limit: Option<usize>,
    ) -> Result<Vec<Listed>, StoreError> {
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let wanted = limit.map_or(1000, |limit| (limit - listed.len()).min(1000));
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .max_keys(i32::try_from(wanted).unwrap_or(1000));
            if let Some(token) = &token {
                request = request.continuation_token(token);
            } else if let Some(start_after) = &start_after {
                request = request.start_after(start_after);
            }
            let page = request
                .send()
                .await
                .map_err(|error| error::s3(&format!("ListObjectsV2 {prefix}"), error))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                listed.push(Listed {
                    key: key.to_owned(),
                    size: object
                        .size()
                        .and_then(|size| u64::try_from(size).ok())
                        .unwrap_or(0),
                    last_modified: object
                        .last_modified()
                        .and_then(|time| SystemTime::try_from(*time).ok()),
                });
            }
            token = page.next_continuation_token().map(str::to_owned);
            let full = limit.is_some_and(|limit| listed.len() >= limit);
            if full || !page.is_truncated().unwrap_or(false) || token.is_none() {
                return Ok(listed);
            }
        }
    }

    async fn list_page(
        &self,
        start_after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<UploadId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let records = self.layout.records();
        let after = start_after.map(|id| self.layout.record(id));
        let listed = self.list(&records, after, Some(limit)).await?;
        Ok(listed
            .iter()
            .filter_map(|object| self.layout.id_in(&records, &object.key))
            .collect())
    }

    async fn record(&self, id: &UploadId) -> Result<Record, StoreError> {
        let key = self.layout.record(id);
        let bytes = self.get_bytes(&key).await?.ok_or(StoreError::NotFound)?;
        serde_json::from_slice(&bytes)
            .map_err(|error| error::backend(Kind::Failed, &format!("decoding {key}"), error))
    }

    async fn put_record(&self, record: &Record) -> Result<(), StoreError> {
        let encoded = serde_json::to_vec(record)
            .map_err(|error| error::backend(Kind::Failed, "encoding a record", error))?;
        self.put_bytes(&self.layout.record(&record.info.id), encoded)
            .await
    }

    async fn segments(&self, id: &UploadId) -> Result<Vec<Segment>, StoreError> {
        let prefix = self.layout.tail(id);
        let listed = self.list(&prefix, None, None).await?;
        Ok(listed
            .into_iter()
            .filter_map(|object| {
                let name = SegmentName::parse(object.key.strip_prefix(&prefix)?)?;
                Some(Segment {
                    key: object.key,
                    name,
                    size: object.size,
                })
            })
            .collect())
    }

    /// The acknowledged parts, ascending; `None` when the multipart upload is gone.
    async fn parts(
        &self,
        id: &UploadId,
        multipart: &str,
    ) -> Result<Option<Vec<ListedPart>>, StoreError> {
        let key = self.layout.data(id);
        let mut parts = Vec::new();
        let mut marker = String::from("0");
        loop {
            let sent = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(multipart)
                .part_number_marker(&marker)
                .send()
                .await;
            let page = match sent {
                Ok(page) => page,
                Err(error) if error::is_missing(&error) => return Ok(None),
                Err(error) => return Err(error::s3(&format!("ListParts {key}"), error)),
            };
            for part in page.parts() {
                let number = part.part_number().and_then(|n| u32::try_from(n).ok());
                let size = part.size().and_then(|size| u64::try_from(size).ok());
                if let (Some(number), Some(size)) = (number, size) {
                    parts.push(ListedPart {
                        number,
                        size,
                        e_tag: part.e_tag().unwrap_or_default().to_owned(),
                    });
                }
            }
            match page.next_part_number_marker() {
                Some(next) if page.is_truncated().unwrap_or(false) && next != marker => {
                    marker = next.to_owned();
                }
                _ => return Ok(Some(parts)),
            }
        }
    }

    async fn object_length(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(
                head.content_length()
                    .and_then(|length| u64::try_from(length).ok())
                    .unwrap_or(0),
            )),
            Err(error) if error::is_missing(&error) => Ok(None),
            Err(error) => Err(error::s3(&format!("HeadObject {key}"), error)),
        }
    }

    /// Whether the multipart upload is still open (one `ListParts` of at most one part).
    async fn multipart_open(&self, id: &UploadId, multipart: &str) -> Result<bool, StoreError> {
        let key = self.layout.data(id);
        let sent = self
            .client
            .list_parts()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(multipart)
            .max_parts(1)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(error) if error::is_missing(&error) => Ok(false),
            Err(error) => Err(error::s3(&format!("ListParts {key}"), error)),
        }
    }

    async fn state(&self, id: &UploadId) -> Result<(Record, State), StoreError> {
        let record = self.record(id).await?;
        if let Some(finished) = record.finished {
            return Ok((record, State::Finished(finished)));
        }
        let stored = layout::settle(record.part_size, self.segments(id).await?);
        if self.multipart_open(id, &record.multipart).await? {
            return Ok((record, State::Open(stored)));
        }
        // Completed by a finish that stopped before recording it (or aborted behind our back,
        // when the object is not there either).
        let modified_nanos = record.modified_nanos(&stored);
        match self.object_length(&self.layout.data(id)).await? {
            Some(length) => Ok((
                record,
                State::Finished(Finished {
                    length,
                    modified_nanos,
                }),
            )),
            None => Err(error::backend(
                Kind::Failed,
                &format!("upload {id}"),
                "its multipart upload is gone and its object was never completed",
            )),
        }
    }

    /// A stream of the bytes `range` of the object at `key`.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<ByteStream, StoreError> {
        if range.is_empty() {
            return Ok(futures_util::stream::empty().boxed());
        }
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await;
        let output = match sent {
            Ok(output) => output,
            Err(error) if error::is_missing(&error) => return Err(StoreError::NotFound),
            Err(error) => return Err(error::s3(&format!("GetObject {key}"), error)),
        };
        let reader = output.body.into_async_read();
        Ok(tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024).boxed())
    }

    /// Appends the bytes of the tail segments to `spool`.
    /// Segments are fetched a few at a time (each is one small request: latency, not
    /// bandwidth, is what a part of many segments waits for), and kept in order.
    async fn gather(&self, tail: &[Segment], spool: &mut Spool) -> Result<(), StoreError> {
        let fetches: Vec<_> = tail
            .iter()
            .map(|segment| {
                let (client, bucket) = (self.client.clone(), self.bucket.clone());
                let key = segment.key.clone();
                async move {
                    let sent = client.get_object().bucket(bucket).key(&key).send().await;
                    let output =
                        sent.map_err(|error| error::s3(&format!("GetObject {key}"), error))?;
                    let bytes = output.body.collect().await.map_err(|error| {
                        error::backend(Kind::Unavailable, &format!("GetObject {key}"), error)
                    })?;
                    Ok::<_, StoreError>(bytes.into_bytes())
                }
            })
            .collect();
        let mut fetched = futures_util::stream::iter(fetches).buffered(CONCURRENT_REQUESTS);
        while let Some(bytes) = fetched.next().await {
            spool.push(&bytes?).await?;
        }
        Ok(())
    }

    async fn upload_part(
        &self,
        id: &UploadId,
        multipart: &str,
        number: u32,
        part: &Sealed,
    ) -> Result<String, StoreError> {
        let key = self.layout.data(id);
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(multipart)
            .part_number(i32::try_from(number).unwrap_or(i32::MAX))
            .content_length(i64::try_from(part.len()).unwrap_or(i64::MAX))
            .body(part.body().await?)
            .customize()
            .config_override(self.sending(part.len()));
        let sent = if self.sign_payloads {
            request.send().await
        } else {
            request.disable_payload_signing().send().await
        };
        let uploaded =
            sent.map_err(|error| error::s3(&format!("UploadPart {key} #{number}"), error))?;
        Ok(uploaded.e_tag().unwrap_or_default().to_owned())
    }

    async fn complete(
        &self,
        id: &UploadId,
        multipart: &str,
        parts: &[ListedPart],
    ) -> Result<(), StoreError> {
        let key = self.layout.data(id);
        let completed = parts
            .iter()
            .map(|part| {
                CompletedPart::builder()
                    .part_number(i32::try_from(part.number).unwrap_or(i32::MAX))
                    .e_tag(&part.e_tag)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(multipart)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|error| error::s3(&format!("CompleteMultipartUpload {key}"), error))?;
        Ok(())
    }

    async fn abort(&self, id: &UploadId, multipart: &str) -> Result<(), StoreError> {
        let key = self.layout.data(id);
        let sent = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .upload_id(multipart)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(error) if error::is_missing(&error) => Ok(()),
            Err(error) => Err(error::s3(&format!("AbortMultipartUpload {key}"), error)),
        }
    }

    async fn append(
        &self,
        id: &UploadId,
        offset: Offset,
        mut body: BodyStream,
    ) -> Result<Appended, StoreError> {
        let (record, state) = self.state(id).await?;
        let stored = match state {
            State::Finished(finished) => {
                return finished_append(finished.length, offset, body).await;
            }
            State::Open(stored) => stored,
        };
        if Offset(stored.offset()) != offset {
            return Err(StoreError::OffsetMismatch {
                stored: Offset(stored.offset()),
            });
        }
        let tail_bytes = stored.tail_bytes();
        let mut filling = Filling {
            store: self,
            id,
            record: &record,
            next_part: stored.parts + 1,
            tail_bytes,
            tail: stored.tail,
            obsolete: stored.obsolete,
            fresh: Spool::expecting(
                self.budget.clone(),
                usize::try_from(record.part_size - tail_bytes).unwrap_or(usize::MAX),
            ),
            first_part: stored.parts + 1,
            in_flight: FuturesUnordered::new(),
        };
        if tail_bytes == 0 {
            // A body that starts a part likely fills it (a small `PATCH` gives the unused
            // reservation back as soon as its segment is written).
            filling.fresh = filling.next_spool().await?;
        }
        let mut interruption = None;
        loop {
            // While parts go up, the body keeps arriving into the next one.
            let next = if filling.in_flight.is_empty() {
                Next::Chunk(body.next().await)
            } else {
                tokio::select! {
                    biased;
                    Some(settled) = filling.in_flight.next() => Next::Settled(settled),
                    chunk = body.next() => Next::Chunk(chunk),
                }
            };
            match next {
                Next::Settled(settled) => settled?,
                Next::Chunk(None) => break,
                Next::Chunk(Some(Ok(chunk))) => filling.push(&chunk).await?,
                Next::Chunk(Some(Err(error))) => {
                    interruption = Some(error);
                    break;
                }
            }
        }
        let (offset, modified_at) = filling.end().await?;
        Ok(Appended {
            offset: Offset(offset),
            interruption,
            modified_at,
        })
    }

    async fn finish(&self, id: &UploadId) -> Result<(), StoreError> {
        let (mut record, state) = self.state(id).await?;
        let finished = match state {
            State::Finished(finished) => finished,
            State::Open(stored) => self.complete_open(id, &record, stored).await?,
        };
        if record.finished.is_none() {
            record.finished = Some(finished);
            self.put_record(&record).await?;
            self.crash(CrashPoint::AfterRecord)?;
        }
        let segments = self.segments(id).await?;
        self.delete_quietly(segments.into_iter().map(|segment| segment.key))
            .await;
        Ok(())
    }

    /// Makes the object of an open upload: the tail as the last part, then the completion.
    async fn complete_open(
        &self,
        id: &UploadId,
        record: &Record,
        stored: Stored,
    ) -> Result<Finished, StoreError> {
        let finished = Finished {
            length: stored.offset(),
            modified_nanos: record.modified_nanos(&stored),
        };
        let mut tail = Spool::new(self.budget.clone());
        self.gather(&stored.tail, &mut tail).await?;
        let tail = tail.seal().await?;
        if stored.parts == 0 {
            // Smaller than a part: one object, no multipart completion.
            self.put(&self.layout.data(id), tail.body().await?, tail.len())
                .await?;
            self.crash(CrashPoint::AfterLastPart)?;
            self.abort(id, &record.multipart).await?;
            return Ok(finished);
        }
        if tail.len() > 0 {
            self.upload_part(id, &record.multipart, stored.parts + 1, &tail)
                .await?;
            self.crash(CrashPoint::AfterLastPart)?;
        }
        let last = stored.parts + u32::from(tail.len() > 0);
        let parts = self.parts(id, &record.multipart).await?.ok_or_else(|| {
            error::backend(
                Kind::Failed,
                &format!("upload {id}"),
                "multipart upload gone",
            )
        })?;
        // Orphans past the last part (left by an append that died with parts in flight) stay
        // out of the object.
        let parts: Vec<ListedPart> = parts
            .into_iter()
            .filter(|part| part.number <= last)
            .collect();
        let listed: u64 = parts.iter().map(|part| part.size).sum();
        if parts.len() != last as usize || listed != finished.length {
            return Err(error::backend(
                Kind::Failed,
                &format!("upload {id}"),
                format!(
                    "S3 lists {} parts of {listed} bytes where {last} parts of {} are stored",
                    parts.len(),
                    finished.length
                ),
            ));
        }
        self.complete(id, &record.multipart, &parts).await?;
        self.crash(CrashPoint::AfterComplete)?;
        Ok(finished)
    }

    async fn read(&self, id: &UploadId, range: Range<u64>) -> Result<ByteStream, StoreError> {
        let (record, state) = self.state(id).await?;
        let stored = match state {
            State::Finished(finished) => {
                return self.read_finished(id, finished.length, range).await;
            }
            State::Open(stored) => stored,
        };
        let end = range.end.min(stored.offset());
        let start = range.start.min(end);
        if start >= stored.parts_bytes {
            return Ok(self.read_tail(&stored, start..end));
        }
        if record.info.length.known() == Some(stored.offset()) {
            // Every byte is stored: the finish the service is about to ask for, now.
            self.finish(id).await?;
            return self.read_finished(id, stored.offset(), start..end).await;
        }
        Err(StoreError::Unsupported)
    }

    async fn read_finished(
        &self,
        id: &UploadId,
        length: u64,
        range: Range<u64>,
    ) -> Result<ByteStream, StoreError> {
        let end = range.end.min(length);
        let start = range.start.min(end);
        self.get_range(&self.layout.data(id), start..end).await
    }

    /// The bytes `range` (within the tail) of an open upload, segment after segment.
    fn read_tail(&self, stored: &Stored, range: Range<u64>) -> ByteStream {
        let mut pieces = Vec::new();
        let mut position = stored.parts_bytes;
        for segment in &stored.tail {
            let segment_range = position..position + segment.size;
            let from = range.start.max(segment_range.start);
            let to = range.end.min(segment_range.end);
            if from < to {
                pieces.push((segment.key.clone(), from - position..to - position));
            }
            position = segment_range.end;
        }
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        futures_util::stream::iter(pieces)
            .then(move |(key, range)| {
                let (client, bucket) = (client.clone(), bucket.clone());
                async move {
                    let output = client
                        .get_object()
                        .bucket(bucket)
                        .key(&key)
                        .range(format!("bytes={}-{}", range.start, range.end - 1))
                        .send()
                        .await
                        .map_err(|error| {
                            std::io::Error::other(format!(
                                "GetObject {key}: {}",
                                aws_sdk_s3::error::DisplayErrorContext(&error)
                            ))
                        })?;
                    let reader = output.body.into_async_read();
                    Ok::<_, std::io::Error>(tokio_util::io::ReaderStream::new(reader))
                }
            })
            .try_flatten()
            .boxed()
    }
}

/// An append to a finished upload: only an empty one at its end is not refused.
async fn finished_append(
    length: u64,
    offset: Offset,
    mut body: BodyStream,
) -> Result<Appended, StoreError> {
    if offset != Offset(length) {
        return Err(StoreError::OffsetMismatch {
            stored: Offset(length),
        });
    }
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) if chunk.is_empty() => {}
            Ok(_) => {
                return Err(error::backend(
                    Kind::Failed,
                    "append",
                    "the upload is finished and takes no more bytes",
                ));
            }
            Err(interruption) => {
                return Ok(Appended {
                    offset,
                    interruption: Some(interruption),
                    modified_at: None,
                });
            }
        }
    }
    Ok(Appended {
        offset,
        interruption: None,
        modified_at: None,
    })
}

/// A part upload under way.
type InFlight<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// What an append waits for next.
enum Next {
    Settled(Result<(), StoreError>),
    Chunk(Option<Result<Bytes, BodyError>>),
}

/// An append under way: the part being filled, and up to [`PARTS_IN_FLIGHT`] full parts going
/// up at once (their bytes drawn from the budget like any spool's).
///
/// Parts may be acknowledged in any order; the append's segment, which vouches for every part
/// below the one it names, is written only once all of them are. An append that fails on S3
/// counts none of its parts (the client sends their bytes again); one whose body stops early
/// settles its parts first, so it counts every byte that arrived.
struct Filling<'a> {
    store: &'a Inner,
    id: &'a UploadId,
    record: &'a Record,
    /// The part being filled.
    next_part: u32,
    /// The live tail: the first bytes of `next_part`, in S3.
    tail: Vec<Segment>,
    tail_bytes: u64,
    /// Segments absorbed by parts: deleted once the append's own segment is written.
    obsolete: Vec<Segment>,
    /// Bytes of this append not in a part yet.
    fresh: Spool,
    /// The part the append began in.
    first_part: u32,
    /// Full parts going up.
    in_flight: FuturesUnordered<InFlight<'a>>,
}

impl Filling<'_> {
    fn part_size(&self) -> u64 {
        self.record.part_size
    }

    async fn push(&mut self, mut chunk: &[u8]) -> Result<(), StoreError> {
        while !chunk.is_empty() {
            let room = self.part_size() - self.tail_bytes - self.fresh.len();
            let take = usize::try_from(room).unwrap_or(usize::MAX).min(chunk.len());
            self.fresh.push(&chunk[..take]).await?;
            chunk = &chunk[take..];
            if self.tail_bytes + self.fresh.len() == self.part_size() {
                self.start_part().await?;
            }
        }
        Ok(())
    }

    /// Waits for every part going up.
    async fn settle(&mut self) -> Result<(), StoreError> {
        while let Some(settled) = self.in_flight.next().await {
            settled?;
        }
        Ok(())
    }

    /// Starts uploading the full part (the tail read back from S3, then this append's bytes),
    /// once fewer than [`PARTS_IN_FLIGHT`] are going up.
    async fn start_part(&mut self) -> Result<(), StoreError> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            if let Some(settled) = self.in_flight.next().await {
                settled?;
            }
        }
        if self.next_part > MAX_PARTS {
            return Err(error::backend(
                Kind::Failed,
                &format!("upload {}", self.id),
                "it needs more than 10,000 parts of its part size",
            ));
        }
        let fresh = std::mem::replace(&mut self.fresh, Spool::new(self.store.budget.clone()));
        let part = if self.tail.is_empty() {
            fresh.seal().await?
        } else {
            let whole = usize::try_from(self.part_size()).unwrap_or(usize::MAX);
            let mut part = Spool::expecting(self.store.budget.clone(), whole);
            self.store.gather(&self.tail, &mut part).await?;
            let mut fresh = fresh.seal().await?.stream().await?;
            while let Some(chunk) = fresh.next().await {
                let chunk = chunk.map_err(|error| error::local("reading a spool file", error))?;
                part.push(&chunk).await?;
            }
            part.seal().await?
        };
        // The store's parts in flight are capped too; this append's own keep going meanwhile
        // (they give slots back only when polled).
        let slot = loop {
            tokio::select! {
                slot = self.store.part_slots.clone().acquire_owned() => {
                    break slot.map_err(|_| {
                        error::backend(Kind::Failed, "uploading a part", "the store is closed")
                    })?;
                }
                Some(settled) = self.in_flight.next(), if !self.in_flight.is_empty() => settled?,
            }
        };
        let (store, id, multipart, number) =
            (self.store, self.id, &self.record.multipart, self.next_part);
        self.in_flight.push(Box::pin(async move {
            let _slot = slot;
            store.upload_part(id, multipart, number, &part).await?;
            store.crash(CrashPoint::AfterPart)
        }));
        // Obsolete once the append's segment vouches for the part.
        self.obsolete.append(&mut self.tail);
        self.tail_bytes = 0;
        self.next_part += 1;
        self.fresh = self.next_spool().await?;
        Ok(())
    }

    /// The spool for a part this append fills from its start (`next_part`): as much memory as
    /// the part can hold (a whole part, or what is left of the upload's length) taken from the
    /// budget ahead, waiting for it up to [`S3StoreConfig::budget_patience`] (the body waits
    /// meanwhile; this append's parts going up keep being polled and give budget back), else
    /// one that spills once the budget is short.
    async fn next_spool(&mut self) -> Result<Spool, StoreError> {
        let budget = self.store.budget.clone();
        let start = u64::from(self.next_part - 1) * self.part_size();
        let room = match self.record.info.length {
            Length::Known(length) => length.saturating_sub(start).min(self.part_size()),
            Length::Deferred => self.part_size(),
        };
        let whole = usize::try_from(room).unwrap_or(usize::MAX);
        if whole == 0 {
            // The upload's last byte is in: nothing more to hold.
            return Ok(Spool::new(budget));
        }
        if whole > budget.total() {
            return Ok(Spool::expecting(budget, whole));
        }
        let reserve = budget.reserve(whole);
        let patience = tokio::time::sleep(self.store.budget_patience);
        tokio::pin!(reserve, patience);
        loop {
            tokio::select! {
                // Free budget is taken even when there is no patience.
                biased;
                reservation = &mut reserve => {
                    return Ok(match reservation {
                        Some(reservation) => Spool::reserved(budget.clone(), reservation),
                        None => Spool::expecting(budget.clone(), whole),
                    });
                }
                () = &mut patience => return Ok(Spool::expecting(budget.clone(), whole)),
                Some(settled) = self.in_flight.next(), if !self.in_flight.is_empty() => settled?,
            }
        }
    }

    /// Waits for the parts, then writes the bytes left over as a new tail segment (an empty
    /// one after a part, vouching for the parts and recording the time), then deletes what
    /// the parts made obsolete. Returns the offset and the write time.
    async fn end(mut self) -> Result<(u64, Option<SystemTime>), StoreError> {
        self.settle().await?;
        // Every part below `next_part` is whole and, once settled, acknowledged.
        let parts_bytes = u64::from(self.next_part - 1) * self.part_size();
        let offset = parts_bytes + self.tail_bytes + self.fresh.len();
        if self.fresh.is_empty() && self.next_part == self.first_part {
            return Ok((offset, None));
        }
        let now = self.store.clock.now();
        let name = SegmentName {
            part: self.next_part,
            start: self.tail_bytes,
            written_nanos: nanos(now),
        };
        let key = self.store.layout.segment(self.id, &name);
        let fresh = self.fresh.seal().await?;
        self.store
            .put(&key, fresh.body().await?, fresh.len())
            .await?;
        self.store.crash(CrashPoint::AfterSegment)?;
        let obsolete = self
            .obsolete
            .into_iter()
            .filter(|segment| segment.name.part < self.next_part)
            .map(|segment| segment.key);
        self.store.delete_quietly(obsolete).await;
        Ok((offset, Some(now)))
    }
}

#[async_trait]
impl Store for S3Store {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            terminate: true,
            read: true,
            stage: true,
            concatenate: true,
            list: true,
            client_keys: true,
        }
    }

    async fn create(&self, info: &UploadInfo) -> Result<(), StoreError> {
        let inner = &self.inner;
        let key = inner.layout.data(&info.id);
        let opened = inner
            .client
            .create_multipart_upload()
            .bucket(&inner.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|error| error::s3(&format!("CreateMultipartUpload {key}"), error))?;
        let multipart = opened.upload_id().unwrap_or_default().to_owned();
        inner.crash(CrashPoint::AfterOpeningMultipart)?;
        let record = Record {
            info: info.clone(),
            multipart,
            part_size: part_size_for(info.length, inner.part_size),
            created_nanos: nanos(inner.clock.now()),
            finished: None,
        };
        inner.put_record(&record).await?;
        if let Some(client_key) = &info.client_key {
            let index = inner
                .layout
                .key_index(&client_key_digest(&info.owner, client_key));
            inner
                .put_bytes(&index, info.id.to_string().into_bytes())
                .await?;
        }
        Ok(())
    }

    async fn status(&self, id: &UploadId) -> Result<UploadStatus, StoreError> {
        let (record, state) = self.inner.state(id).await?;
        let (offset, modified_nanos) = match state {
            State::Finished(finished) => (finished.length, finished.modified_nanos),
            State::Open(stored) => (stored.offset(), record.modified_nanos(&stored)),
        };
        Ok(UploadStatus {
            info: record.info,
            offset: Offset(offset),
            modified_at: time_of(modified_nanos),
        })
    }

    async fn append(
        &self,
        id: &UploadId,
        offset: Offset,
        body: BodyStream,
    ) -> Result<Appended, StoreError> {
        self.inner.append(id, offset, body).await
    }

    async fn update(&self, info: &UploadInfo) -> Result<(), StoreError> {
        let mut record = self.inner.record(&info.id).await?;
        record.info = info.clone();
        self.inner.put_record(&record).await
    }

    async fn finish(&self, id: &UploadId) -> Result<(), StoreError> {
        self.inner.finish(id).await
    }

    async fn terminate(&self, id: &UploadId) -> Result<(), StoreError> {
        let inner = &self.inner;
        let record = inner.record(id).await?;
        // The record first: without it the upload no longer exists, whatever happens next
        // (what a crash leaves, `remove_leftovers` removes).
        inner.delete(&inner.layout.record(id)).await?;
        inner.crash(CrashPoint::AfterRemovingRecord)?;
        self.inner.staged_remove(id);
        inner.abort(id, &record.multipart).await?;
        inner.delete(&inner.layout.data(id)).await?;
        let segments = inner.segments(id).await?;
        for segment in segments {
            inner.delete(&segment.key).await?;
        }
        if let Some(client_key) = &record.info.client_key {
            let index = inner
                .layout
                .key_index(&client_key_digest(&record.info.owner, client_key));
            if inner.get_bytes(&index).await?.as_deref() == Some(id.as_str().as_bytes()) {
                inner.delete(&index).await?;
            }
        }
        Ok(())
    }

    async fn read(&self, id: &UploadId, range: Range<u64>) -> Result<ByteStream, StoreError> {
        self.inner.read(id, range).await
    }

    async fn find_by_key(
        &self,
        owner: &Owner,
        client_key: &str,
    ) -> Result<Option<UploadId>, StoreError> {
        let inner = &self.inner;
        let index = inner
            .layout
            .key_index(&client_key_digest(owner, client_key));
        let Some(stored) = inner.get_bytes(&index).await? else {
            return Ok(None);
        };
        let Some(id) = std::str::from_utf8(&stored)
            .ok()
            .and_then(|text| text.parse::<UploadId>().ok())
        else {
            return Ok(None);
        };
        match inner.record(&id).await {
            Ok(record) if &record.info.owner == owner => Ok(Some(id)),
            Ok(_) | Err(StoreError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn stage(
        &self,
        id: &UploadId,
        offset: Offset,
        mut body: BodyStream,
    ) -> Result<Staged, StoreError> {
        let stored = self.status(id).await?.offset;
        if stored != offset {
            return Err(StoreError::OffsetMismatch { stored });
        }
        self.inner.staged_remove(id);
        let mut spool = Spool::new(self.inner.budget.clone());
        let mut interruption = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => spool.push(&chunk).await?,
                Err(error) => {
                    interruption = Some(error);
                    break;
                }
            }
        }
        let sealed = spool.seal().await?;
        let length = sealed.len();
        self.inner
            .staged
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(id.clone(), sealed);
        Ok(Staged {
            length,
            interruption,
        })
    }

    async fn commit_staged(&self, id: &UploadId, offset: Offset) -> Result<Offset, StoreError> {
        let Some(staged) = self.inner.staged_remove(id) else {
            // Nothing set aside: nothing to append, at the right offset only.
            let stored = self.status(id).await?.offset;
            if stored != offset {
                return Err(StoreError::OffsetMismatch { stored });
            }
            return Ok(stored);
        };
        let body = staged
            .stream()
            .await?
            .map(|chunk| chunk.map_err(|error| BodyError::Interrupted(error.to_string())))
            .boxed();
        let appended = self.inner.append(id, offset, body).await?;
        match appended.interruption {
            None => Ok(appended.offset),
            Some(error) => Err(error::backend(
                Kind::Failed,
                "reading a staged chunk back",
                error,
            )),
        }
    }

    async fn discard_staged(&self, id: &UploadId) -> Result<(), StoreError> {
        self.inner.staged_remove(id);
        Ok(())
    }

    async fn concatenate(&self, target: &UploadId, parts: &[UploadId]) -> Result<(), StoreError> {
        self.inner.concatenate(target, parts).await
    }

    async fn list(
        &self,
        start_after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<UploadId>, StoreError> {
        self.list_page(start_after, limit).await
    }

    async fn remove_leftovers(&self, min_age: Duration) -> Result<usize, StoreError> {
        self.inner.remove_leftovers(min_age).await
    }

    async fn probe(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let context = format!("HeadBucket {}", inner.bucket);
        match inner
            .client
            .head_bucket()
            .bucket(&inner.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // No bucket: every upload is affected, as when S3 is down.
            Err(error) if error::is_missing(&error) => Err(error::backend(
                Kind::Unavailable,
                &context,
                "the bucket does not exist",
            )),
            Err(error) => Err(error::s3(&context, error)),
        }
    }

    fn location(&self, id: &UploadId) -> Option<StorageLocation> {
        Some(StorageLocation {
            kind: "s3".into(),
            path: format!("s3://{}/{}", self.inner.bucket, self.inner.layout.data(id)),
        })
    }
}

impl Inner {
    fn staged_remove(&self, id: &UploadId) -> Option<Sealed> {
        self.staged
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(id)
    }

    /// The length of a part upload's object, finishing it first.
    async fn finished_length(&self, id: &UploadId) -> Result<u64, StoreError> {
        self.finish(id).await?;
        match self.state(id).await? {
            (_, State::Finished(finished)) => Ok(finished.length),
            (_, State::Open(_)) => Err(error::backend(
                Kind::Failed,
                &format!("upload {id}"),
                "not finished after its finish",
            )),
        }
    }

    async fn concatenate(&self, target: &UploadId, parts: &[UploadId]) -> Result<(), StoreError> {
        let mut record = self.record(target).await?;
        if record.finished.is_some() {
            // Assembled by an earlier call: the parts are complete, so are its bytes.
            return Ok(());
        }
        let mut sources = Vec::with_capacity(parts.len());
        for part in parts {
            sources.push((part.clone(), self.finished_length(part).await?));
        }
        let length: u64 = sources.iter().map(|(_, length)| length).sum();
        let copyable = sources
            .iter()
            .rev()
            .skip(1)
            .all(|(_, length)| *length >= MIN_PART_SIZE);
        let assembled = if length == 0 {
            self.put(&self.layout.data(target), S3Bytes::from_static(b""), 0)
                .await
                .map(|()| None)
        } else if copyable {
            self.copy_parts(target, &record, &sources).await.map(Some)
        } else {
            self.copy_through(target, &record, &sources).await
        };
        match assembled {
            Ok(Some(parts)) => self.complete(target, &record.multipart, &parts).await?,
            Ok(None) => self.abort(target, &record.multipart).await?,
            Err(error) => {
                // Completed by an earlier call that stopped before recording it.
                if self.object_length(&self.layout.data(target)).await? != Some(length)
                    || self.parts(target, &record.multipart).await?.is_some()
                {
                    return Err(error);
                }
            }
        }
        record.finished = Some(Finished {
            length,
            modified_nanos: nanos(self.clock.now()),
        });
        self.put_record(&record).await
    }

    /// Server-side copies of every part's object, in ranges S3 accepts.
    async fn copy_parts(
        &self,
        target: &UploadId,
        record: &Record,
        sources: &[(UploadId, u64)],
    ) -> Result<Vec<ListedPart>, StoreError> {
        let key = self.layout.data(target);
        let mut parts = Vec::new();
        for (source, length) in sources {
            if *length == 0 {
                continue;
            }
            let number = u32::try_from(parts.len() + 1).unwrap_or(u32::MAX);
            if *length < MIN_PART_SIZE {
                // Only the last can be this small. Garage refuses to copy from an object under
                // 5 MiB even as the last part: its few bytes go through this node.
                let mut spool = Spool::new(self.budget.clone());
                let mut bytes = self
                    .get_range(&self.layout.data(source), 0..*length)
                    .await?;
                while let Some(chunk) = bytes.next().await {
                    let chunk = chunk.map_err(|error| {
                        error::backend(
                            Kind::Unavailable,
                            &format!("reading upload {source}"),
                            error,
                        )
                    })?;
                    spool.push(&chunk).await?;
                }
                let sealed = spool.seal().await?;
                let e_tag = self
                    .upload_part(target, &record.multipart, number, &sealed)
                    .await?;
                let part = ListedPart {
                    number,
                    size: *length,
                    e_tag,
                };
                parts.push(part);
                continue;
            }
            let pieces = length.div_ceil(MAX_PART_SIZE).max(1);
            let piece = length.div_ceil(pieces);
            let mut start = 0;
            while start < *length {
                let end = (start + piece).min(*length);
                let number = u32::try_from(parts.len() + 1).unwrap_or(u32::MAX);
                let copied = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(&key)
                    .upload_id(&record.multipart)
                    .part_number(i32::try_from(number).unwrap_or(i32::MAX))
                    .copy_source(format!("{}/{}", self.bucket, self.layout.data(source)))
                    .copy_source_range(format!("bytes={}-{}", start, end - 1))
                    .customize()
                    .config_override(self.sending(end - start))
                    .send()
                    .await
                    .map_err(|error| {
                        error::s3(&format!("UploadPartCopy {key} #{number}"), error)
                    })?;
                let e_tag = copied
                    .copy_part_result()
                    .and_then(|result| result.e_tag())
                    .unwrap_or_default()
                    .to_owned();
                parts.push(ListedPart {
                    number,
                    size: end - start,
                    e_tag,
                });
                self.crash(CrashPoint::AfterFirstCopy)?;
                start = end;
            }
        }
        Ok(parts)
    }

    /// The parts' bytes streamed through this node into parts of the target's part size;
    /// `None` when they make less than one part (then put as one object).
    async fn copy_through(
        &self,
        target: &UploadId,
        record: &Record,
        sources: &[(UploadId, u64)],
    ) -> Result<Option<Vec<ListedPart>>, StoreError> {
        let part_size = record.part_size.max(MIN_PART_SIZE);
        let mut spool = Spool::new(self.budget.clone());
        let mut number = 0;
        for (source, length) in sources {
            let mut bytes = self
                .get_range(&self.layout.data(source), 0..*length)
                .await?;
            while let Some(chunk) = bytes.next().await {
                let mut chunk = chunk.map_err(|error| {
                    error::backend(
                        Kind::Unavailable,
                        &format!("reading upload {source}"),
                        error,
                    )
                })?;
                while !chunk.is_empty() {
                    let room = usize::try_from(part_size - spool.len()).unwrap_or(usize::MAX);
                    let piece = chunk.split_to(room.min(chunk.len()));
                    spool.push(&piece).await?;
                    if spool.len() == part_size {
                        number += 1;
                        let full = std::mem::replace(&mut spool, Spool::new(self.budget.clone()));
                        let sealed = full.seal().await?;
                        self.upload_part(target, &record.multipart, number, &sealed)
                            .await?;
                        self.crash(CrashPoint::AfterFirstCopy)?;
                    }
                }
            }
        }
        let rest = spool.seal().await?;
        if number == 0 {
            self.put(&self.layout.data(target), rest.body().await?, rest.len())
                .await?;
            return Ok(None);
        }
        if rest.len() > 0 {
            number += 1;
            self.upload_part(target, &record.multipart, number, &rest)
                .await?;
        }
        let parts = self
            .parts(target, &record.multipart)
            .await?
            .unwrap_or_default();
        Ok(Some(
            parts
                .into_iter()
                .filter(|part| part.number <= number)
                .collect(),
        ))
    }

    async fn remove_leftovers(&self, min_age: Duration) -> Result<usize, StoreError> {
        let cutoff = SystemTime::now()
            .checked_sub(min_age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let old = |time: Option<SystemTime>| time.is_some_and(|time| time <= cutoff);
        let mut known: HashMap<UploadId, Option<String>> = HashMap::new();
        let mut removed = 0;
        // Multipart uploads no record names: a creation or a termination a crash cut short.
        let data_prefix = self.layout.data_prefix();
        let mut key_marker: Option<String> = None;
        let mut upload_marker: Option<String> = None;
        loop {
            let mut request = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&data_prefix);
            if let Some(marker) = &key_marker {
                request = request.key_marker(marker);
            }
            if let Some(marker) = &upload_marker {
                request = request.upload_id_marker(marker);
            }
            let page = request
                .send()
                .await
                .map_err(|error| error::s3("ListMultipartUploads", error))?;
            for upload in page.uploads() {
                let (Some(key), Some(multipart)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let Some(id) = self.layout.id_in(&data_prefix, key) else {
                    continue;
                };
                let initiated = upload
                    .initiated()
                    .and_then(|time| SystemTime::try_from(*time).ok());
                if !old(initiated) {
                    continue;
                }
                let named = self.named_multipart(&mut known, &id).await?;
                if named.as_deref() != Some(multipart) {
                    tracing::info!(upload = %id, "aborting a multipart upload no upload owns");
                    self.abort(&id, multipart).await?;
                    removed += 1;
                }
            }
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        // Objects of uploads whose record is gone.
        for prefix in [self.layout.tails(), data_prefix] {
            for object in self.list(&prefix, None, None).await? {
                let Some(id) = self.layout.id_in(&prefix, &object.key) else {
                    continue;
                };
                if old(object.last_modified)
                    && self.named_multipart(&mut known, &id).await?.is_none()
                {
                    tracing::info!(key = %object.key, "removing a crash's leftover");
                    self.delete(&object.key).await?;
                    removed += 1;
                }
            }
        }
        // Key indexes naming no upload.
        let indexes = self.layout.key_indexes();
        for object in self.list(&indexes, None, None).await? {
            if !old(object.last_modified) {
                continue;
            }
            let named = self.get_bytes(&object.key).await?;
            let id = named
                .as_deref()
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .and_then(|text| text.parse::<UploadId>().ok());
            let orphan = match id {
                Some(id) => self.named_multipart(&mut known, &id).await?.is_none(),
                None => true,
            };
            if orphan {
                self.delete(&object.key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The multipart upload an upload's record names; `None` when there is no record.
    async fn named_multipart(
        &self,
        known: &mut HashMap<UploadId, Option<String>>,
        id: &UploadId,
    ) -> Result<Option<String>, StoreError> {
        if let Some(named) = known.get(id) {
            return Ok(named.clone());
        }
        let named = match self.record(id).await {
            Ok(record) => Some(record.multipart),
            Err(StoreError::NotFound) => None,
            Err(error) => return Err(error),
        };
        known.insert(id.clone(), named.clone());
        Ok(named)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_that_send_bytes_get_time_for_them() {
        let base = DEFAULT_REQUEST_TIMEOUT;
        assert_eq!(transfer_timeout(base, 0), base);
        assert_eq!(
            transfer_timeout(base, 8 * MIB),
            base + Duration::from_secs(32)
        );
    }

    #[test]
    fn parts_are_signed_by_default_over_plain_http_only() {
        assert!(signs_payloads(Some("http://127.0.0.1:3900")));
        assert!(signs_payloads(Some("HTTP://garage:3900")));
        assert!(!signs_payloads(Some("https://s3.example.com")));
        assert!(!signs_payloads(None), "AWS's endpoints are https");
    }

    #[test]
    fn part_sizes_fit_ten_thousand_parts() {
        assert_eq!(part_size_for(Length::Known(10), None), DEFAULT_PART_SIZE);
        assert_eq!(part_size_for(Length::Deferred, None), DEFERRED_PART_SIZE);
        let huge = 1024 * 1024 * MIB; // 1 TiB
        let size = part_size_for(Length::Known(huge), None);
        assert!(huge.div_ceil(size) <= u64::from(MAX_PARTS), "{size}");
        assert_eq!(size % MIB, 0, "whole MiBs");
        assert_eq!(part_size_for(Length::Known(10), Some(5 * MIB)), 5 * MIB);
        assert_eq!(part_size_for(Length::Deferred, Some(MIB)), MIB);
        let raised = part_size_for(Length::Known(100 * 1024 * MIB), Some(5 * MIB));
        assert!(
            raised > 5 * MIB,
            "an override too small for the length is raised"
        );
        assert_eq!(part_size_for(Length::Known(u64::MAX), None), MAX_PART_SIZE);
    }

    #[test]
    fn records_round_trip() {
        let record = Record {
            info: UploadInfo {
                id: UploadId::random(),
                owner: Owner::new("alice"),
                length: Length::Deferred,
                metadata: Default::default(),
                client_key: None,
                created_at: 1,
                concat: None,
                protocol: None,
                completion: None,
                repr_digest: None,
            },
            multipart: "abc".into(),
            part_size: 5,
            created_nanos: 7,
            finished: Some(Finished {
                length: 3,
                modified_nanos: 9,
            }),
        };
        let text = serde_json::to_vec(&record).unwrap();
        let back: Record = serde_json::from_slice(&text).unwrap();
        assert_eq!(back.info, record.info);
        assert_eq!(back.finished.map(|finished| finished.length), Some(3));
    }
}
