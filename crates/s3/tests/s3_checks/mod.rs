//! Checks particular to the S3 store, run on every S3 server by [`s3_tests!`]: parts of the
//! configured size whatever the PATCH size, the offset recovered by another node after a crash
//! at every step, leftovers swept, bounded buffers.

#![allow(dead_code, unreachable_pub)]

use crate::common::{Bucket, Server};
use bytes::Bytes;
use futures_util::StreamExt;
use resumable_core::{BodyStream, Length, Offset, Owner, Store, StoreError, UploadId, UploadInfo};
use resumable_s3::{CrashPoint, S3Store};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

pub const MIB: usize = 1024 * 1024;
/// The smallest part a strict S3 takes.
pub const PART: u64 = 5 * MIB as u64;
/// A buffer budget of one part and a MiB.
const ONE_PART_BUDGET: usize = PART as usize + MIB;

/// One `#[tokio::test]` per check, on the server `$server()` returns.
macro_rules! s3_tests {
    ($server:path) => {
        s3_checks::s3_tests!(@each $server;
            small_patches_make_parts_of_the_configured_size,
            crash_after_a_part_counts_it_once,
            an_orphan_part_past_a_gap_never_counts,
            parts_uploaded_together_land_in_order,
            crash_after_the_segment_leaves_obsolete_segments_uncounted,
            crash_in_the_finish_after_the_last_part,
            crash_in_the_finish_of_a_small_upload,
            crash_after_completing,
            crash_after_recording_the_finish,
            crash_in_creation_leaves_a_multipart_upload_to_sweep,
            crash_in_termination_leaves_objects_to_sweep,
            crash_in_a_server_side_concatenation,
            concatenation_copies_large_parts_server_side,
            staged_chunks_spill_past_the_budget,
            uploads_are_listed_in_pages,
            parts_of_a_growing_upload_are_not_readable,
            probe_and_location,
            the_service_runs_every_extension_on_s3,
            concurrent_uploads_share_one_budget,
            bodies_wait_for_the_budget_instead_of_spilling,
            a_body_holding_the_budget_makes_others_spill_after_the_patience,
            a_part_takes_no_more_budget_than_the_upload_has_left,
            unsigned_parts_round_trip,
        );
    };
    (@each $server:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                s3_checks::$name($server()).await;
            }
        )*
    };
}
pub(crate) use s3_tests;

fn info(length: Length) -> UploadInfo {
    UploadInfo {
        id: UploadId::random(),
        owner: Owner::new("alice"),
        length,
        metadata: Default::default(),
        client_key: None,
        created_at: 1_700_000_000,
        concat: None,
        protocol: None,
        completion: None,
        repr_digest: None,
    }
}

/// Bytes that differ at every position (a shifted or doubled byte shows).
pub fn pattern(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn body(bytes: &[u8], chunk: usize) -> BodyStream {
    let chunks: Vec<Result<Bytes, _>> = bytes
        .chunks(chunk.max(1))
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    futures_util::stream::iter(chunks).boxed()
}

async fn read_all(store: &S3Store, id: &UploadId, length: u64) -> Vec<u8> {
    read_all_range(store, id, 0..length).await
}

async fn offset(store: &S3Store, id: &UploadId) -> u64 {
    store.status(id).await.expect("status").offset.0
}

struct Fixture {
    bucket: Bucket,
    /// Another node: a store instance that shares nothing with the first but the bucket.
    store: S3Store,
}

impl Fixture {
    async fn new(server: Arc<Server>) -> Fixture {
        let bucket = Bucket::new(server).await;
        let store = bucket.store(Self::config_of(&bucket, None)).await;
        Fixture { bucket, store }
    }

    fn config_of(bucket: &Bucket, crash: Option<CrashPoint>) -> resumable_s3::S3StoreConfig {
        let mut config = bucket.config();
        config.part_size = Some(PART);
        config.crash_at = crash;
        config
    }

    /// Another node on the bucket, configured like the first but for what `adjust` changes.
    async fn node(&self, adjust: impl FnOnce(&mut resumable_s3::S3StoreConfig)) -> S3Store {
        let mut config = Self::config_of(&self.bucket, None);
        adjust(&mut config);
        self.bucket.store(config).await
    }

    /// A node whose buffer budget holds one part and a MiB, waiting up to `patience` for it.
    async fn one_part_budget(&self, patience: Duration) -> S3Store {
        self.node(|config| {
            config.buffer_budget = ONE_PART_BUDGET;
            config.budget_patience = patience;
        })
        .await
    }

    /// A node that dies at `crash`.
    async fn crashing(&self, crash: CrashPoint) -> S3Store {
        self.node(|config| config.crash_at = Some(crash)).await
    }

    async fn created(&self, length: u64) -> UploadInfo {
        let info = info(Length::Known(length));
        self.store.create(&info).await.expect("create");
        info
    }

    async fn append(&self, store: &S3Store, id: &UploadId, at: usize, bytes: &[u8]) -> u64 {
        let appended = store
            .append(id, Offset(at as u64), body(bytes, 64 * 1024))
            .await
            .expect("append");
        assert_eq!(appended.interruption, None);
        appended.offset.0
    }

    async fn parts(&self, id: &UploadId) -> Vec<i64> {
        let client = self.store.client();
        let listed = client
            .list_parts()
            .bucket(&self.bucket.name)
            .key(self.store.object_key(id))
            .upload_id(self.store.multipart_upload_id(id).await.expect("record"))
            .send()
            .await
            .expect("list parts");
        listed
            .parts()
            .iter()
            .map(|part| part.size().unwrap_or(-1))
            .collect()
    }

    async fn keys(&self) -> Vec<String> {
        let listed = self
            .store
            .client()
            .list_objects_v2()
            .bucket(&self.bucket.name)
            .send()
            .await
            .expect("list");
        listed
            .contents()
            .iter()
            .filter_map(|object| object.key().map(str::to_owned))
            .collect()
    }

    /// How many tail segments are in the bucket.
    async fn tails(&self) -> usize {
        let keys = self.keys().await;
        keys.iter().filter(|key| key.contains("/tail/")).count()
    }

    async fn multipart_uploads(&self) -> usize {
        let listed = self
            .store
            .client()
            .list_multipart_uploads()
            .bucket(&self.bucket.name)
            .send()
            .await
            .expect("list multipart uploads");
        listed.uploads().len()
    }

    /// A node that dies at `crash` while finishing `id`: its finish fails, and this node still
    /// counts all `length` bytes.
    async fn finish_dies_at(&self, crash: CrashPoint, id: &UploadId, length: usize) {
        let dying = self.crashing(crash).await;
        assert!(dying.finish(id).await.is_err());
        assert_eq!(offset(&self.store, id).await, length as u64);
    }

    /// How many files the bucket's nodes have spilled buffers to and not yet removed.
    fn spool_files(&self) -> usize {
        std::fs::read_dir(self.bucket.spill.path()).unwrap().count()
    }

    /// Finishes on this node and checks every byte against `data`.
    async fn finish_and_compare(&self, id: &UploadId, data: &[u8]) {
        self.store.finish(id).await.expect("finish");
        assert_eq!(offset(&self.store, id).await, data.len() as u64);
        let read = read_all(&self.store, id, data.len() as u64).await;
        assert!(
            read == data,
            "the finished object differs from what was sent"
        );
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// 256 KiB appends make 5 MiB parts (not 52 small ones), every offset is read back by another
/// node, and the upload completes (on the strict server too) with a `Range`-readable object.
pub async fn small_patches_make_parts_of_the_configured_size(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let data = pattern(13 * MIB + 12_345, 1);
    let info = fixture.created(data.len() as u64).await;
    let writer = fixture.node(|_| {}).await;
    let mut at = 0;
    for piece in data.chunks(256 * 1024) {
        let reached = fixture.append(&writer, &info.id, at, piece).await;
        at += piece.len();
        assert_eq!(reached, at as u64);
        assert_eq!(
            offset(&fixture.store, &info.id).await,
            at as u64,
            "another node agrees"
        );
    }
    assert_eq!(
        fixture.parts(&info.id).await,
        vec![PART as i64, PART as i64]
    );
    fixture.finish_and_compare(&info.id, &data).await;
    let bytes = read_all_range(&fixture.store, &info.id, 6_000_000..6_000_100).await;
    assert_eq!(bytes, data[6_000_000..6_000_100]);
    assert_eq!(fixture.tails().await, 0, "the finish removed the tail");
    assert_eq!(
        writer.buffer_budget_available(),
        resumable_s3::DEFAULT_BUFFER_BUDGET
    );
}

/// Crash after the part that absorbed the tail, before the segment of the bytes after it: no
/// segment vouches for the part yet, so the offset is the old tail (still in S3), none of the
/// tail's bytes counted twice, and the next append uploads the part again.
pub async fn crash_after_a_part_counts_it_once(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let data = pattern(8 * MIB, 2);
    let info = fixture.created(data.len() as u64).await;
    fixture
        .append(&fixture.store, &info.id, 0, &data[..3 * MIB])
        .await;
    let dying = fixture.crashing(CrashPoint::AfterPart).await;
    let result = dying
        .append(
            &info.id,
            Offset(3 * MIB as u64),
            body(&data[3 * MIB..6 * MIB], 64 * 1024),
        )
        .await;
    assert!(result.is_err(), "the crash stopped the append");
    assert_eq!(fixture.parts(&info.id).await, vec![PART as i64]);
    assert_eq!(offset(&fixture.store, &info.id).await, 3 * MIB as u64);
    let mismatch = fixture
        .store
        .append(&info.id, Offset(PART), body(b"x", 1))
        .await;
    assert!(matches!(
        mismatch,
        Err(StoreError::OffsetMismatch {
            stored: Offset(stored)
        }) if stored == 3 * MIB as u64
    ));
    fixture
        .append(&fixture.store, &info.id, 3 * MIB, &data[3 * MIB..])
        .await;
    fixture.finish_and_compare(&info.id, &data).await;
}

/// An append that dies with parts in flight can leave a part acknowledged past a missing one.
/// That orphan never counts: not when the append that sends the missing part again ends
/// inside the orphan's number (it would add bytes the append never reported), not in the
/// finished object.
pub async fn an_orphan_part_past_a_gap_never_counts(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let part = PART as usize;
    let data = pattern(4 * part, 12);
    let info = fixture.created(data.len() as u64).await;
    let half = part + part / 2;
    assert_eq!(
        fixture
            .append(&fixture.store, &info.id, 0, &data[..half])
            .await,
        half as u64
    );
    // What the dead append left: part 3 acknowledged, part 2 never was. Its bytes are not the
    // upload's (a part that differs shows in the object).
    let orphan = vec![0_u8; part];
    fixture
        .store
        .client()
        .upload_part()
        .bucket(&fixture.bucket.name)
        .key(fixture.store.object_key(&info.id))
        .upload_id(fixture.store.multipart_upload_id(&info.id).await.unwrap())
        .part_number(3)
        .body(orphan.into())
        .send()
        .await
        .expect("upload the orphan part");
    assert_eq!(offset(&fixture.store, &info.id).await, half as u64);
    let end = 2 * part + part / 2;
    assert_eq!(
        fixture
            .append(&fixture.store, &info.id, half, &data[half..end])
            .await,
        end as u64,
        "part 2 went up and the rest of the append is in the tail of part 3"
    );
    assert_eq!(
        offset(&fixture.store, &info.id).await,
        end as u64,
        "the orphan part 3 does not count"
    );
    fixture
        .append(&fixture.store, &info.id, end, &data[end..])
        .await;
    fixture.finish_and_compare(&info.id, &data).await;
}

/// Parts that go up together (an append keeps several in flight) each land in their place.
pub async fn parts_uploaded_together_land_in_order(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let data = pattern(9 * PART as usize + 17, 13);
    let info = fixture.created(data.len() as u64).await;
    assert_eq!(
        fixture.append(&fixture.store, &info.id, 0, &data).await,
        data.len() as u64
    );
    assert_eq!(fixture.parts(&info.id).await, vec![PART as i64; 9]);
    fixture.finish_and_compare(&info.id, &data).await;
}

/// Crash after the new segment, before deleting the ones the part absorbed: they do not count.
pub async fn crash_after_the_segment_leaves_obsolete_segments_uncounted(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let data = pattern(9 * MIB, 3);
    let info = fixture.created(data.len() as u64).await;
    fixture
        .append(&fixture.store, &info.id, 0, &data[..MIB])
        .await;
    fixture
        .append(&fixture.store, &info.id, MIB, &data[MIB..3 * MIB])
        .await;
    let dying = fixture.crashing(CrashPoint::AfterSegment).await;
    let result = dying
        .append(
            &info.id,
            Offset(3 * MIB as u64),
            body(&data[3 * MIB..6 * MIB], 64 * 1024),
        )
        .await;
    assert!(result.is_err());
    assert_eq!(
        fixture.tails().await,
        3,
        "two obsolete segments and the new one"
    );
    assert_eq!(offset(&fixture.store, &info.id).await, 6 * MIB as u64);
    fixture
        .append(&fixture.store, &info.id, 6 * MIB, &data[6 * MIB..7 * MIB])
        .await;
    assert_eq!(
        fixture.tails().await,
        2,
        "the next append deleted the obsolete ones"
    );
    fixture
        .append(&fixture.store, &info.id, 7 * MIB, &data[7 * MIB..])
        .await;
    fixture.finish_and_compare(&info.id, &data).await;
}

/// Crash in the finish after the tail went up as the last part: the tail still counts (no
/// segment vouches for the short part), nothing counts twice, and the finish can be repeated.
pub async fn crash_in_the_finish_after_the_last_part(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let data = pattern(7 * MIB + 5, 4);
    let id = complete_upload(&fixture, &data).await;
    fixture
        .finish_dies_at(CrashPoint::AfterLastPart, &id, data.len())
        .await;
    assert_eq!(fixture.parts(&id).await.len(), 2);
    fixture.finish_and_compare(&id, &data).await;
}

/// The same for an upload smaller than a part, which is put as one object.
pub async fn crash_in_the_finish_of_a_small_upload(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let data = pattern(1000, 5);
    let id = complete_upload(&fixture, &data).await;
    fixture
        .finish_dies_at(CrashPoint::AfterLastPart, &id, 1000)
        .await;
    fixture.finish_and_compare(&id, &data).await;
    assert_eq!(
        fixture.multipart_uploads().await,
        0,
        "its multipart upload was aborted"
    );
}

/// Crash after the completion, before the record says so: the object is the upload.
pub async fn crash_after_completing(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let data = pattern(6 * MIB, 6);
    let id = complete_upload(&fixture, &data).await;
    fixture
        .finish_dies_at(CrashPoint::AfterComplete, &id, data.len())
        .await;
    fixture.finish_and_compare(&id, &data).await;
}

/// Crash after the record says finished, before the tail is deleted: a repeated finish
/// deletes it.
pub async fn crash_after_recording_the_finish(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let data = pattern(6 * MIB, 7);
    let id = complete_upload(&fixture, &data).await;
    fixture
        .finish_dies_at(CrashPoint::AfterRecord, &id, data.len())
        .await;
    assert!(fixture.tails().await > 0);
    fixture.finish_and_compare(&id, &data).await;
    assert_eq!(fixture.tails().await, 0);
}

/// Crash in a creation after the multipart upload was opened: no upload exists, and the sweep
/// aborts the multipart upload.
pub async fn crash_in_creation_leaves_a_multipart_upload_to_sweep(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let kept = fixture.created(10).await;
    let dying = fixture.crashing(CrashPoint::AfterOpeningMultipart).await;
    let lost = info(Length::Known(10));
    assert!(dying.create(&lost).await.is_err());
    assert!(matches!(
        fixture.store.status(&lost.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(fixture.multipart_uploads().await, 2);
    if fixture.bucket.server.reports_initiated {
        let young = fixture
            .store
            .remove_leftovers(std::time::Duration::from_secs(3600))
            .await
            .expect("sweep");
        assert_eq!(young, 0, "too young to be a leftover");
    }
    let removed = fixture
        .store
        .remove_leftovers(std::time::Duration::ZERO)
        .await
        .expect("sweep");
    assert_eq!(removed, 1);
    assert_eq!(
        fixture.multipart_uploads().await,
        1,
        "the kept upload's is kept"
    );
    assert_eq!(offset(&fixture.store, &kept.id).await, 0);
}

/// Crash in a termination after the record went: the upload no longer exists, the sweep
/// removes the rest.
pub async fn crash_in_termination_leaves_objects_to_sweep(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let data = pattern(6 * MIB, 8);
    let mut doomed = info(Length::Known(data.len() as u64));
    doomed.client_key = Some("photo.jpg-1-2".into());
    fixture.store.create(&doomed).await.expect("create");
    fixture.append(&fixture.store, &doomed.id, 0, &data).await;
    let dying = fixture.crashing(CrashPoint::AfterRemovingRecord).await;
    assert!(dying.terminate(&doomed.id).await.is_err());
    assert!(matches!(
        fixture.store.status(&doomed.id).await,
        Err(StoreError::NotFound)
    ));
    let found = fixture
        .store
        .find_by_key(&doomed.owner, "photo.jpg-1-2")
        .await
        .expect("find");
    assert_eq!(found, None);
    let removed = fixture
        .store
        .remove_leftovers(std::time::Duration::ZERO)
        .await
        .expect("sweep");
    assert!(
        removed >= 3,
        "multipart upload, segment, key index: {removed}"
    );
    assert_eq!(fixture.keys().await, Vec::<String>::new());
    assert_eq!(fixture.multipart_uploads().await, 0);
}

/// An upload created for `data` and given all of it, not finished.
async fn complete_upload(fixture: &Fixture, data: &[u8]) -> UploadId {
    let info = fixture.created(data.len() as u64).await;
    fixture.append(&fixture.store, &info.id, 0, data).await;
    info.id
}

/// Crash in a server-side concatenation after its first copy: the target holds that copy (its
/// offset counts only bytes that are there) and is not complete; the concatenation repeated
/// gives the parts' bytes.
pub async fn crash_in_a_server_side_concatenation(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let first = pattern(PART as usize + 7, 9);
    let second = pattern(1234, 10);
    let parts = [
        complete_upload(&fixture, &first).await,
        complete_upload(&fixture, &second).await,
    ];
    let total = (first.len() + second.len()) as u64;
    let target = fixture.created(total).await;
    let dying = fixture.crashing(CrashPoint::AfterFirstCopy).await;
    assert!(dying.concatenate(&target.id, &parts).await.is_err());
    let partial = offset(&fixture.store, &target.id).await;
    assert!(partial == 0 || partial == first.len() as u64, "{partial}");
    fixture
        .store
        .concatenate(&target.id, &parts)
        .await
        .expect("concatenate");
    let expected = [first, second].concat();
    assert_eq!(
        sha(&read_all(&fixture.store, &target.id, total).await),
        sha(&expected)
    );
}

/// Parts of at least 5 MiB are copied with `UploadPartCopy` (the target's multipart upload
/// gets one part per source), the last may be small.
pub async fn concatenation_copies_large_parts_server_side(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let pieces = [
        pattern(PART as usize, 11),
        pattern(PART as usize + 1, 12),
        pattern(10, 13),
    ];
    let mut parts = Vec::new();
    for piece in &pieces {
        parts.push(complete_upload(&fixture, piece).await);
    }
    let expected = pieces.concat();
    let target = fixture.created(expected.len() as u64).await;
    fixture
        .store
        .concatenate(&target.id, &parts)
        .await
        .expect("concatenate");
    assert_eq!(
        offset(&fixture.store, &target.id).await,
        expected.len() as u64
    );
    let read = read_all(&fixture.store, &target.id, expected.len() as u64).await;
    assert_eq!(sha(&read), sha(&expected));
    let head = fixture
        .store
        .client()
        .head_object()
        .bucket(&fixture.bucket.name)
        .key(fixture.store.object_key(&target.id))
        .send()
        .await
        .expect("head");
    let e_tag = head.e_tag().unwrap_or_default().to_owned();
    assert!(
        e_tag.ends_with("-3\""),
        "a multipart object of 3 parts: {e_tag}"
    );
}

/// A chunk set aside past the budget goes to a file; the budget comes back; a discarded chunk
/// leaves the upload as it was.
pub async fn staged_chunks_spill_past_the_budget(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let store = fixture.node(|config| config.buffer_budget = MIB).await;
    let data = pattern(3 * MIB, 14);
    let info = fixture.created(data.len() as u64).await;
    let staged = store
        .stage(&info.id, Offset(0), body(&data, 64 * 1024))
        .await
        .expect("stage");
    assert_eq!(staged.length, data.len() as u64);
    assert_eq!(
        store.buffer_budget_available(),
        MIB,
        "spilled: no budget held"
    );
    store.discard_staged(&info.id).await.expect("discard");
    assert_eq!(offset(&store, &info.id).await, 0);
    store
        .stage(&info.id, Offset(0), body(&data, 64 * 1024))
        .await
        .expect("stage");
    let committed = store
        .commit_staged(&info.id, Offset(0))
        .await
        .expect("commit");
    assert_eq!(committed, Offset(data.len() as u64));
    assert_eq!(store.buffer_budget_available(), MIB);
    assert_eq!(fixture.spool_files(), 0, "spool files are removed");
    fixture.finish_and_compare(&info.id, &data).await;
}

/// `list_page` pages through the uploads in ascending order.
pub async fn uploads_are_listed_in_pages(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(fixture.created(1).await.id);
    }
    ids.sort();
    let first = fixture.store.list_page(None, 2).await.expect("page");
    assert_eq!(first, ids[..2]);
    let second = fixture
        .store
        .list_page(first.last(), 2)
        .await
        .expect("page");
    assert_eq!(second, ids[2..4]);
    let last = fixture
        .store
        .list_page(second.last(), 2)
        .await
        .expect("page");
    assert_eq!(last, ids[4..]);
    assert_eq!(fixture.store.list(None, 1000).await.expect("list"), ids);
}

/// S3 cannot read the parts of an open multipart upload: reading them before the upload is
/// complete says so; its tail reads.
pub async fn parts_of_a_growing_upload_are_not_readable(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let data = pattern(6 * MIB, 15);
    let info = fixture.created(10 * MIB as u64).await;
    fixture.append(&fixture.store, &info.id, 0, &data).await;
    let parts = fixture.store.read(&info.id, 0..10).await;
    assert!(matches!(parts, Err(StoreError::Unsupported)));
    let tail = read_all_range(&fixture.store, &info.id, PART..PART + 10).await;
    assert_eq!(tail, data[PART as usize..PART as usize + 10]);
}

async fn read_all_range(store: &S3Store, id: &UploadId, range: std::ops::Range<u64>) -> Vec<u8> {
    let mut stream = store.read(id, range).await.expect("read");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    bytes
}

/// `probe` answers for the bucket, and says unavailable for a bucket that is not there.
pub async fn probe_and_location(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    fixture.store.probe().await.expect("probe");
    let mut config = fixture.bucket.config();
    config.bucket = "no-such-bucket-here".into();
    let missing = fixture.bucket.store(config).await;
    let probed = missing.probe().await;
    assert!(
        matches!(probed, Err(StoreError::Backend(ref error)) if error.kind() == resumable_core::BackendKind::Unavailable),
        "{probed:?}"
    );
    let status = missing.status(&UploadId::random()).await;
    assert!(
        matches!(status, Err(StoreError::Backend(ref error)) if error.kind() == resumable_core::BackendKind::Unavailable),
        "no bucket is no storage, not no upload: {status:?}"
    );
    let mut bad = fixture.bucket.config();
    bad.part_size = Some(0);
    let refused = S3Store::connect(bad).await.err();
    assert_eq!(refused, Some(resumable_s3::ConfigError::PartSize(0)));
    let id = UploadId::random();
    let location = fixture.store.location(&id).expect("location");
    assert_eq!(location.kind, "s3");
    assert_eq!(
        location.path,
        format!("s3://{}/uploads/data/{id}", fixture.bucket.name)
    );
}

/// On the strict server, a multipart upload with a 1 MiB first part cannot complete.
pub async fn small_non_last_parts_are_refused(server: Arc<Server>) {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let fixture = Fixture::new(server).await;
    let client = fixture.store.client();
    let bucket = &fixture.bucket.name;
    let opened = client
        .create_multipart_upload()
        .bucket(bucket)
        .key("small")
        .send()
        .await
        .expect("open");
    let upload = opened.upload_id().expect("id");
    let mut completed = Vec::new();
    for number in 1..=2 {
        let part = client
            .upload_part()
            .bucket(bucket)
            .key("small")
            .upload_id(upload)
            .part_number(number)
            .body(ByteStream::from(pattern(MIB, number as u64)))
            .send()
            .await
            .expect("part");
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(part.e_tag().unwrap_or_default())
                .build(),
        );
    }
    let result = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key("small")
        .upload_id(upload)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await;
    let error = result.expect_err("a 1 MiB non-last part must be refused");
    use aws_sdk_s3::error::ProvideErrorMetadata;
    assert_eq!(error.code(), Some("EntityTooSmall"), "{error:?}");
}

/// The peak resident memory of this process (`VmHWM`), in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib / 1024)
}

/// `total` bytes in 256 KiB appends, with the part size `configured` (or the one chosen for the
/// length): the multipart upload ends with `total / part_size` parts of exactly that size (not
/// one per append), completes, and reads back with the same SHA-256. Bytes are generated as
/// they are sent, never held whole. Prints the time, parts and peak RSS.
pub async fn large_upload_in_small_patches(
    server: Arc<Server>,
    total: u64,
    configured: Option<u64>,
) {
    let part_size = resumable_s3::part_size_for(Length::Known(total), configured);
    const PATCH: u64 = 256 * 1024;
    let bucket = Bucket::new(server).await;
    let mut config = bucket.config();
    config.part_size = configured;
    let store = bucket.store(config.clone()).await;
    let info = info(Length::Known(total));
    store.create(&info).await.expect("create");
    let started = std::time::Instant::now();
    let mut sent = Sha256::new();
    let mut at = 0;
    while at < total {
        let length = PATCH.min(total - at);
        let piece = pattern(length as usize, at / PATCH);
        sent.update(&piece);
        let appended = store
            .append(&info.id, Offset(at), body(&piece, 64 * 1024))
            .await
            .expect("append");
        at += length;
        assert_eq!(appended.offset, Offset(at));
    }
    let appending = started.elapsed();
    let client = store.client();
    let mut sizes = Vec::new();
    let mut marker = String::from("0");
    loop {
        let page = client
            .list_parts()
            .bucket(&bucket.name)
            .key(store.object_key(&info.id))
            .upload_id(store.multipart_upload_id(&info.id).await.expect("record"))
            .part_number_marker(&marker)
            .send()
            .await
            .expect("list parts");
        sizes.extend(
            page.parts()
                .iter()
                .map(|part| part.size().unwrap_or(-1) as u64),
        );
        match page.next_part_number_marker() {
            Some(next) if page.is_truncated().unwrap_or(false) => marker = next.to_owned(),
            _ => break,
        }
    }
    assert_eq!(
        sizes.len() as u64,
        total / part_size,
        "one part per {part_size} bytes"
    );
    assert!(sizes.iter().all(|size| *size == part_size), "{sizes:?}");
    store.finish(&info.id).await.expect("finish");
    let finished = started.elapsed();
    let mut read = Sha256::new();
    let mut stream = store.read(&info.id, 0..total).await.expect("read");
    while let Some(chunk) = stream.next().await {
        read.update(chunk.expect("chunk"));
    }
    assert_eq!(hex::encode(read.finalize()), hex::encode(sent.finalize()));
    let _ = writeln_stderr(format!(
        "large upload: {} MiB in {} appends of 256 KiB, {} parts of {} MiB: appends {:.1} s \
         ({:.1} MiB/s), finish {:.1} s, peak RSS of the test process {} MiB",
        total / MIB as u64,
        total.div_ceil(PATCH),
        sizes.len(),
        part_size / MIB as u64,
        appending.as_secs_f64(),
        total as f64 / MIB as f64 / appending.as_secs_f64(),
        (finished - appending).as_secs_f64(),
        peak_rss_mib(),
    ));
}

fn writeln_stderr(line: String) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{line}")
}

/// A node: its own store instance, the fleet's locker (Redis in production).
fn service(
    store: &S3Store,
    locker: &Arc<resumable_core::MemoryLocker>,
    clock: Arc<resumable_core::ManualClock>,
) -> resumable_core::UploadService {
    let config = resumable_core::ServiceConfig {
        expire_after: Some(std::time::Duration::from_secs(3600)),
        min_body_rate: None,
        max_creations_per_minute: None,
        ..Default::default()
    };
    resumable_core::UploadService::new(Arc::new(store.clone()), locker.clone(), clock, config)
}

fn append_of(offset: u64, bytes: &[u8]) -> resumable_core::Append {
    resumable_core::Append {
        offset: Offset(offset),
        declared_length: None,
        content_length: Some(bytes.len() as u64),
        checksum: None,
        unannounced_trailer: None,
        ends_upload: false,
        limits: Default::default(),
        body: body(bytes, 1000),
    }
}

fn new_upload(
    length: Length,
    concat: Option<resumable_core::NewConcat>,
) -> resumable_core::NewUpload {
    resumable_core::NewUpload {
        owner: Owner::new("alice"),
        length,
        metadata: Default::default(),
        concat,
        limits: Default::default(),
        protocol: resumable_core::Protocol::Tus,
        repr_digest: None,
        creator: None,
    }
}

async fn download(service: &resumable_core::UploadService, id: &UploadId, length: u64) -> Vec<u8> {
    let owner = Owner::new("alice");
    let mut stream = service.read(&owner, id, 0..length).await.expect("download");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    bytes
}

/// The upload service on the S3 store, two nodes sharing only the bucket: the simple
/// protocol's key (found by the other node), a checksum failure discarding its chunk, a
/// concatenation of partial uploads, a download, termination and the expiry sweep.
pub async fn the_service_runs_every_extension_on_s3(server: Arc<Server>) {
    use resumable_core::{ExpectedChecksum, NewConcat, UploadError};
    use resumable_proto::checksum::{Checksum, ChecksumAlgorithm};
    let fixture = Fixture::new(server).await;
    let clock = Arc::new(resumable_core::ManualClock::default());
    let locker = Arc::new(resumable_core::MemoryLocker::new(
        std::time::Duration::from_secs(10),
    ));
    let with_clock = |config: &mut resumable_s3::S3StoreConfig| config.clock = clock.clone();
    let first = service(&fixture.node(with_clock).await, &locker, clock.clone());
    let second = service(&fixture.node(with_clock).await, &locker, clock.clone());
    let owner = Owner::new("alice");
    assert!(first.capabilities().stage && first.capabilities().concatenate);

    // The seed's protocol: a key, a first request cut short, the rest through another node.
    let data = pattern(6 * MIB + 100, 20);
    let key = "photo.jpg-6291556-1700000000";
    let id = first
        .open_by_key(
            &owner,
            key,
            Length::Known(data.len() as u64),
            Default::default(),
            None,
        )
        .await
        .expect("open");
    first
        .append(&owner, &id, append_of(0, &data[..4 * MIB]))
        .await
        .expect("first request");
    let again = second
        .open_by_key(
            &owner,
            key,
            Length::Known(data.len() as u64),
            Default::default(),
            None,
        )
        .await
        .expect("open on the other node");
    assert_eq!(again, id);
    let status = second.status(&owner, &id).await.expect("status");
    assert_eq!(status.offset, Offset(4 * MIB as u64));
    let done = second
        .append(&owner, &id, append_of(4 * MIB as u64, &data[4 * MIB..]))
        .await
        .expect("rest");
    assert!(done.is_complete());
    assert!(download(&first, &id, data.len() as u64).await == data);

    // Checksums: a chunk that does not match is discarded, a matching one counts.
    let upload = first
        .create(new_upload(Length::Known(10), None))
        .await
        .expect("create");
    let chunk = b"0123456789";
    let wrong = Checksum {
        algorithm: ChecksumAlgorithm::Sha1,
        digest: vec![0; 20],
    };
    let mut checked = append_of(0, chunk);
    checked.checksum = Some(ExpectedChecksum::Header(wrong));
    let refused = first.append(&owner, &upload.info.id, checked).await;
    assert!(
        matches!(refused, Err(UploadError::ChecksumMismatch { .. })),
        "{refused:?}"
    );
    assert_eq!(
        second
            .status(&owner, &upload.info.id)
            .await
            .expect("status")
            .offset,
        Offset(0)
    );
    let right = Checksum {
        algorithm: ChecksumAlgorithm::Sha1,
        digest: sha1::Sha1::digest(chunk).to_vec(),
    };
    let mut checked = append_of(0, chunk);
    checked.checksum = Some(ExpectedChecksum::Header(right));
    let counted = first
        .append(&owner, &upload.info.id, checked)
        .await
        .expect("append");
    assert_eq!(counted.offset, Offset(10));

    // Concatenation of partial uploads, one of them past the 5 MiB minimum.
    let pieces = [pattern(PART as usize + 3, 21), pattern(777, 22)];
    let mut parts = Vec::new();
    for piece in &pieces {
        let partial = first
            .create(new_upload(
                Length::Known(piece.len() as u64),
                Some(NewConcat::Partial),
            ))
            .await
            .expect("partial");
        first
            .append(&owner, &partial.info.id, append_of(0, piece))
            .await
            .expect("append");
        parts.push(resumable_core::ConcatPart {
            url: format!("/files/{}", partial.info.id),
            id: partial.info.id,
        });
    }
    let whole = pieces.concat();
    let final_upload = second
        .create(new_upload(Length::Deferred, Some(NewConcat::Final(parts))))
        .await
        .expect("final");
    assert!(final_upload.is_complete());
    assert!(download(&first, &final_upload.info.id, whole.len() as u64).await == whole);

    // Termination, and expiry of an upload nobody finished.
    first.terminate(&owner, &id).await.expect("terminate");
    assert!(matches!(
        second.status(&owner, &id).await,
        Err(UploadError::NotFound)
    ));
    let stale = first
        .create(new_upload(Length::Known(100), None))
        .await
        .expect("create");
    first
        .append(&owner, &stale.info.id, append_of(0, b"abc"))
        .await
        .expect("append");
    clock.advance(std::time::Duration::from_secs(2 * 3600));
    let swept = second.remove_expired().await.expect("sweep");
    assert!(swept.removed >= 1, "{swept:?}");
    assert!(matches!(
        fixture.store.status(&stale.info.id).await,
        Err(StoreError::NotFound)
    ));
}

/// Uploads appending at once draw on one budget: with room for one part in memory, the others
/// spill to files, every upload still ends with whole parts and its own bytes, and the budget
/// is whole again afterwards.
pub async fn concurrent_uploads_share_one_budget(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    // No waiting for the budget: what does not fit spills at once.
    let store = fixture.one_part_budget(Duration::ZERO).await;
    let length = 2 * PART as usize + 3 * MIB;
    let uploads = (0..4u64).map(|seed| {
        let store = store.clone();
        let fixture = &fixture;
        async move {
            let data = pattern(length, 100 + seed);
            let info = fixture.created(length as u64).await;
            for (index, piece) in data.chunks(MIB).enumerate() {
                fixture.append(&store, &info.id, index * MIB, piece).await;
            }
            assert_eq!(fixture.parts(&info.id).await, vec![PART as i64; 2]);
            fixture.finish_and_compare(&info.id, &data).await;
        }
    });
    futures_util::future::join_all(uploads).await;
    assert!(
        store.spilled_buffers() > 0,
        "four uploads do not fit one part's budget"
    );
    assert_eq!(store.buffer_budget_available(), ONE_PART_BUDGET);
    assert_eq!(fixture.spool_files(), 0);
}

/// Bodies that fill parts take turns on a budget of one part rather than spill: each waits
/// for a whole part of memory while the others' parts go up, and every upload ends with its
/// own bytes in whole parts.
pub async fn bodies_wait_for_the_budget_instead_of_spilling(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let store = fixture.one_part_budget(Duration::from_secs(60)).await;
    let length = 3 * PART as usize + MIB;
    let uploads = (0..3u64).map(|seed| {
        let store = store.clone();
        let fixture = &fixture;
        async move {
            let data = pattern(length, 200 + seed);
            let info = fixture.created(length as u64).await;
            assert_eq!(
                fixture.append(&store, &info.id, 0, &data).await,
                length as u64
            );
            assert_eq!(fixture.parts(&info.id).await, vec![PART as i64; 3]);
            fixture.finish_and_compare(&info.id, &data).await;
        }
    });
    futures_util::future::join_all(uploads).await;
    assert_eq!(store.spilled_buffers(), 0, "every part went up from memory");
    assert_eq!(store.buffer_budget_available(), ONE_PART_BUDGET);
}

/// Starts an append whose body sends one MiB and then nothing (a client gone quiet), and
/// waits until it holds a whole part of `store`'s budget.
async fn quiet_body_holding_a_part(
    fixture: &Fixture,
    store: &S3Store,
) -> tokio::task::JoinHandle<Result<resumable_core::Appended, StoreError>> {
    let quiet = fixture.created(2 * PART).await;
    let first = Bytes::from(pattern(MIB, 300));
    let silent: BodyStream = futures_util::stream::once(async move { Ok(first) })
        .chain(futures_util::stream::pending())
        .boxed();
    let before = store.buffer_budget_available();
    let holder = tokio::spawn({
        let store = store.clone();
        async move { store.append(&quiet.id, Offset(0), silent).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.buffer_budget_available() > before - PART as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the quiet body took no part"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder
}

/// A body that holds the budget (its part half filled, the client gone quiet) holds the others
/// up only for the patience: then they spill, and finish.
pub async fn a_body_holding_the_budget_makes_others_spill_after_the_patience(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let store = fixture.one_part_budget(Duration::from_millis(300)).await;
    let holder = quiet_body_holding_a_part(&fixture, &store).await;
    let data = pattern(2 * PART as usize, 301);
    let info = fixture.created(data.len() as u64).await;
    let appended = tokio::time::timeout(
        Duration::from_secs(60),
        fixture.append(&store, &info.id, 0, &data),
    )
    .await
    .expect("the body waits for the patience only");
    assert_eq!(appended, 2 * PART);
    assert!(
        store.spilled_buffers() >= 2,
        "both parts went through files"
    );
    fixture.finish_and_compare(&info.id, &data).await;
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    assert_eq!(store.buffer_budget_available(), ONE_PART_BUDGET);
    assert_eq!(fixture.spool_files(), 0);
}

/// The part that ends an upload takes only what is left of its length from the budget: an
/// upload smaller than a part goes to memory at once beside a body that holds all but one MiB
/// (however long the patience).
pub async fn a_part_takes_no_more_budget_than_the_upload_has_left(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let store = fixture.one_part_budget(Duration::from_secs(600)).await;
    let holder = quiet_body_holding_a_part(&fixture, &store).await;
    let data = pattern(MIB / 2, 302);
    let info = fixture.created(data.len() as u64).await;
    let appended = tokio::time::timeout(
        Duration::from_secs(60),
        fixture.append(&store, &info.id, 0, &data),
    )
    .await
    .expect("half a MiB fits the free MiB: no wait");
    assert_eq!(appended, data.len() as u64);
    assert_eq!(store.spilled_buffers(), 0);
    fixture.finish_and_compare(&info.id, &data).await;
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    assert_eq!(store.buffer_budget_available(), ONE_PART_BUDGET);
}

/// Parts sent as `UNSIGNED-PAYLOAD` (`sign_payloads: Some(false)`) are stored as parts, counted by
/// another node and complete into the same bytes.
pub async fn unsigned_parts_round_trip(server: Arc<Server>) {
    let fixture = Fixture::new(server).await;
    let data = pattern(2 * PART as usize + 12_345, 7);
    let info = fixture.created(data.len() as u64).await;
    let writer = fixture
        .node(|config| config.sign_payloads = Some(false))
        .await;
    let reached = fixture.append(&writer, &info.id, 0, &data).await;
    assert_eq!(reached, data.len() as u64);
    assert_eq!(offset(&fixture.store, &info.id).await, data.len() as u64);
    assert_eq!(
        fixture.parts(&info.id).await,
        vec![PART as i64, PART as i64]
    );
    fixture.finish_and_compare(&info.id, &data).await;
}
