//! The store conformance kit: one check per item of [`Store`]'s `# Behavior` list, run against
//! every backend with [`store_conformance_tests!`](crate::store_conformance_tests).

use crate::model::{Length, Offset, Owner, UploadId, UploadInfo};
use crate::store::{BodyError, BodyStream, Listing, Store, StoreError};
use bytes::Bytes;
use futures_util::StreamExt;
use resumable_proto::Metadata;

/// Expands to one `#[tokio::test]` per conformance check, each on a fresh store made by
/// `$make`: a function of the store's clock (an `Arc<dyn Clock>`) returning a future of the
/// `Store` and a guard dropped after the check (a temporary directory to remove, or `()`).
/// The store must take its write times from that clock, as the service's expiry does:
/// the time checks stop the clock and require exactly its time.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@tests $make;
            new_upload_has_offset_zero,
            unknown_upload_is_not_found,
            append_stores_chunks_in_order,
            append_at_wrong_offset_writes_nothing,
            interrupted_body_keeps_received_bytes,
            resumed_append_continues_the_bytes,
            many_small_chunks_stay_in_order,
            update_replaces_info,
            terminate_removes_upload,
            read_returns_the_requested_range,
            client_keys_are_scoped_per_owner,
            finish_is_idempotent,
            empty_append_changes_nothing,
            staged_bytes_count_only_once_committed,
            discarded_bytes_leave_the_upload_unchanged,
            staging_and_committing_check_the_offset,
            concatenate_joins_parts_in_order,
            list_returns_every_upload,
            list_pages_visit_every_upload_once,
        );
        $crate::store_conformance_tests!(@clocked $make;
            writes_move_modified_at,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let clock = ::std::sync::Arc::new($crate::conformance::StoppedClock::default());
                let (store, _guard) = ($make)(clock as ::std::sync::Arc<dyn $crate::Clock>).await;
                $crate::conformance::$name(&store).await;
            }
        )*
    };
    (@clocked $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let clock = ::std::sync::Arc::new($crate::conformance::StoppedClock::default());
                let (store, _guard) =
                    ($make)(clock.clone() as ::std::sync::Arc<dyn $crate::Clock>).await;
                $crate::conformance::$name(&store, &clock).await;
            }
        )*
    };
}

/// A clock that stands still until a check sets it: a store's write times can then be
/// required exactly, not merely "recent", which any store passes without reading its clock.
pub struct StoppedClock {
    /// A std mutex: held for a copy, never across an await.
    now: std::sync::Mutex<std::time::SystemTime>,
}

impl Default for StoppedClock {
    /// Far from the real time (2040-01-01), so a store stamping real time cannot pass.
    fn default() -> Self {
        StoppedClock {
            now: std::sync::Mutex::new(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(2_208_988_800),
            ),
        }
    }
}

impl StoppedClock {
    /// Moves the clock `by` forward; it stays there.
    pub fn advance(&self, by: std::time::Duration) {
        *self.now.lock().unwrap_or_else(|poison| poison.into_inner()) += by;
    }
}

impl crate::Clock for StoppedClock {
    fn now(&self) -> std::time::SystemTime {
        *self.now.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

fn info(owner: &str, length: Length) -> UploadInfo {
    let mut metadata = Metadata::default();
    metadata
        .insert("filename", Some("отчёт 2026.pdf".as_bytes().to_vec()))
        .expect("valid key");
    UploadInfo {
        id: UploadId::random(),
        owner: Owner::new(owner),
        length,
        metadata,
        client_key: None,
        created_at: 1_700_000_000,
        concat: None,
        protocol: None,
        completion: None,
        repr_digest: None,
    }
}

fn body(chunks: Vec<Vec<u8>>) -> BodyStream {
    futures_util::stream::iter(chunks.into_iter().map(|chunk| Ok(Bytes::from(chunk)))).boxed()
}

fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn read_all(store: &dyn Store, id: &UploadId, end: u64) -> Vec<u8> {
    let mut stream = store.read(id, 0..end).await.expect("read");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("read chunk"));
    }
    bytes
}

async fn created(store: &dyn Store, length: Length) -> UploadInfo {
    let info = info("alice", length);
    store.create(&info).await.expect("create");
    info
}

/// `create` persists the info; a new upload's offset is 0.
pub async fn new_upload_has_offset_zero(store: &dyn Store) {
    let info = created(store, Length::Known(10)).await;
    let status = store.status(&info.id).await.expect("status");
    assert_eq!(status.offset, Offset(0));
    assert_eq!(status.info, info);
}

/// `status` of an unknown id is `NotFound`.
pub async fn unknown_upload_is_not_found(store: &dyn Store) {
    let result = store.status(&UploadId::random()).await;
    assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
}

/// `append` stores every chunk in order and returns the new offset.
pub async fn append_stores_chunks_in_order(store: &dyn Store) {
    let info = created(store, Length::Known(9)).await;
    let appended = store
        .append(
            &info.id,
            Offset(0),
            body(vec![b"abc".to_vec(), b"defghi".to_vec()]),
        )
        .await
        .expect("append");
    assert_eq!(appended.offset, Offset(9));
    assert_eq!(appended.interruption, None);
    assert_eq!(
        store.status(&info.id).await.expect("status").offset,
        Offset(9)
    );
    assert_eq!(read_all(store, &info.id, 9).await, b"abcdefghi");
}

/// `append` at an offset other than the stored count writes nothing.
pub async fn append_at_wrong_offset_writes_nothing(store: &dyn Store) {
    let info = created(store, Length::Known(10)).await;
    store
        .append(&info.id, Offset(0), body(vec![b"abc".to_vec()]))
        .await
        .expect("append");
    for wrong in [0, 2, 4, u64::MAX] {
        let result = store
            .append(&info.id, Offset(wrong), body(vec![b"zzz".to_vec()]))
            .await;
        assert!(
            matches!(
                result,
                Err(StoreError::OffsetMismatch { stored: Offset(3) })
            ),
            "{result:?}"
        );
    }
    assert_eq!(read_all(store, &info.id, 3).await, b"abc");
}

/// A failing body keeps every byte before the failure and reports the failure.
pub async fn interrupted_body_keeps_received_bytes(store: &dyn Store) {
    let info = created(store, Length::Known(100)).await;
    let failing = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"hello ")),
        Ok(Bytes::from_static(b"world")),
        Err(BodyError::Interrupted("connection reset".into())),
        Ok(Bytes::from_static(b"never")),
    ])
    .boxed();
    let appended = store
        .append(&info.id, Offset(0), failing)
        .await
        .expect("append");
    assert_eq!(appended.offset, Offset(11));
    assert_eq!(
        appended.interruption,
        Some(BodyError::Interrupted("connection reset".into()))
    );
    assert_eq!(
        store.status(&info.id).await.expect("status").offset,
        Offset(11)
    );
    assert_eq!(read_all(store, &info.id, 11).await, b"hello world");
}

/// A second append continues where the first stopped.
pub async fn resumed_append_continues_the_bytes(store: &dyn Store) {
    let data = pattern(5000, 7);
    let info = created(store, Length::Known(5000)).await;
    store
        .append(&info.id, Offset(0), body(vec![data[..1234].to_vec()]))
        .await
        .expect("first append");
    let appended = store
        .append(&info.id, Offset(1234), body(vec![data[1234..].to_vec()]))
        .await
        .expect("second append");
    assert_eq!(appended.offset, Offset(5000));
    assert_eq!(read_all(store, &info.id, 5000).await, data);
}

/// Thousands of tiny chunks arrive in order.
pub async fn many_small_chunks_stay_in_order(store: &dyn Store) {
    let data = pattern(3 * 4096 + 17, 3);
    let info = created(store, Length::Known(data.len() as u64)).await;
    let chunks: Vec<Vec<u8>> = data.chunks(3).map(<[u8]>::to_vec).collect();
    let appended = store
        .append(&info.id, Offset(0), body(chunks))
        .await
        .expect("append");
    assert_eq!(appended.offset, Offset(data.len() as u64));
    assert_eq!(read_all(store, &info.id, data.len() as u64).await, data);
}

/// `update` replaces the info.
pub async fn update_replaces_info(store: &dyn Store) {
    let mut info = created(store, Length::Deferred).await;
    store
        .append(&info.id, Offset(0), body(vec![b"abc".to_vec()]))
        .await
        .expect("append");
    info.length = Length::Known(3);
    store.update(&info).await.expect("update");
    let status = store.status(&info.id).await.expect("status");
    assert_eq!(status.info.length, Length::Known(3));
    assert_eq!(status.offset, Offset(3));
}

/// `terminate` removes the upload, its bytes and its client key (where keys are kept).
pub async fn terminate_removes_upload(store: &dyn Store) {
    let keys = store.capabilities().client_keys;
    let mut info = info("alice", Length::Known(3));
    info.client_key = keys.then(|| "photo.jpg-3-1".into());
    store.create(&info).await.expect("create");
    store
        .append(&info.id, Offset(0), body(vec![b"abc".to_vec()]))
        .await
        .expect("append");
    store.terminate(&info.id).await.expect("terminate");
    assert!(matches!(
        store.status(&info.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.read(&info.id, 0..3).await,
        Err(StoreError::NotFound)
    ));
    if keys {
        let key = store
            .find_by_key(&info.owner, "photo.jpg-3-1")
            .await
            .expect("find");
        assert_eq!(key, None);
    }
    assert!(matches!(
        store.terminate(&info.id).await,
        Err(StoreError::NotFound)
    ));
}

/// `read` returns exactly the requested range.
pub async fn read_returns_the_requested_range(store: &dyn Store) {
    let data = pattern(1000, 9);
    let info = created(store, Length::Known(1000)).await;
    store
        .append(&info.id, Offset(0), body(vec![data.clone()]))
        .await
        .expect("append");
    let mut stream = store.read(&info.id, 100..350).await.expect("read");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(bytes, data[100..350]);
}

/// `find_by_key` finds the owner's upload and nobody else's.
pub async fn client_keys_are_scoped_per_owner(store: &dyn Store) {
    if !store.capabilities().client_keys {
        return;
    }
    let mut alice = info("alice", Length::Deferred);
    alice.client_key = Some("../../etc/passwd".into());
    store.create(&alice).await.expect("create");
    let found = store
        .find_by_key(&Owner::new("alice"), "../../etc/passwd")
        .await
        .expect("find");
    assert_eq!(found, Some(alice.id.clone()));
    let stranger = store
        .find_by_key(&Owner::new("mallory"), "../../etc/passwd")
        .await
        .expect("find");
    assert_eq!(stranger, None);
    let other_key = store
        .find_by_key(&Owner::new("alice"), "../../etc/passwd2")
        .await
        .expect("find");
    assert_eq!(other_key, None);
}

/// `finish` may be called again on a finished upload.
pub async fn finish_is_idempotent(store: &dyn Store) {
    let info = created(store, Length::Known(2)).await;
    store
        .append(&info.id, Offset(0), body(vec![b"ok".to_vec()]))
        .await
        .expect("append");
    store.finish(&info.id).await.expect("finish");
    store.finish(&info.id).await.expect("finish again");
    assert_eq!(read_all(store, &info.id, 2).await, b"ok");
}

/// An empty body changes nothing.
pub async fn empty_append_changes_nothing(store: &dyn Store) {
    let info = created(store, Length::Known(2)).await;
    let appended = store
        .append(&info.id, Offset(0), body(Vec::new()))
        .await
        .expect("append");
    assert_eq!(appended.offset, Offset(0));
    assert_eq!(
        store.status(&info.id).await.expect("status").offset,
        Offset(0)
    );
}

/// `stage` sets bytes aside without counting them; `commit_staged` appends them.
pub async fn staged_bytes_count_only_once_committed(store: &dyn Store) {
    let info = created(store, Length::Known(10)).await;
    store
        .append(&info.id, Offset(0), body(vec![b"ab".to_vec()]))
        .await
        .expect("append");
    let staged = store
        .stage(
            &info.id,
            Offset(2),
            body(vec![b"cd".to_vec(), b"ef".to_vec()]),
        )
        .await
        .expect("stage");
    assert_eq!((staged.length, staged.interruption), (4, None));
    let status = store.status(&info.id).await.expect("status");
    assert_eq!(status.offset, Offset(2), "staged bytes do not count");
    assert_eq!(read_all(store, &info.id, 2).await, b"ab");
    let committed = store
        .commit_staged(&info.id, Offset(2))
        .await
        .expect("commit");
    assert_eq!(committed, Offset(6));
    assert_eq!(
        store.status(&info.id).await.expect("status").offset,
        Offset(6)
    );
    assert_eq!(read_all(store, &info.id, 6).await, b"abcdef");
    store
        .append(&info.id, Offset(6), body(vec![b"gh".to_vec()]))
        .await
        .expect("append after commit");
    assert_eq!(read_all(store, &info.id, 8).await, b"abcdefgh");
}

/// `discard_staged` drops what was set aside, an interrupted stage included; a new stage
/// replaces an earlier one.
pub async fn discarded_bytes_leave_the_upload_unchanged(store: &dyn Store) {
    let info = created(store, Length::Known(10)).await;
    let cut = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"xyz")),
        Err(BodyError::Interrupted("gone".into())),
    ])
    .boxed();
    let staged = store.stage(&info.id, Offset(0), cut).await.expect("stage");
    assert_eq!(staged.length, 3);
    assert!(staged.interruption.is_some());
    store.discard_staged(&info.id).await.expect("discard");
    assert_eq!(
        store.status(&info.id).await.expect("status").offset,
        Offset(0)
    );
    store
        .stage(&info.id, Offset(0), body(vec![b"first".to_vec()]))
        .await
        .expect("stage");
    store
        .stage(&info.id, Offset(0), body(vec![b"ok".to_vec()]))
        .await
        .expect("stage again");
    let committed = store
        .commit_staged(&info.id, Offset(0))
        .await
        .expect("commit");
    assert_eq!(committed, Offset(2));
    assert_eq!(read_all(store, &info.id, 2).await, b"ok");
}

/// Staging and committing both refuse an offset other than the stored count.
pub async fn staging_and_committing_check_the_offset(store: &dyn Store) {
    let info = created(store, Length::Known(10)).await;
    store
        .append(&info.id, Offset(0), body(vec![b"abc".to_vec()]))
        .await
        .expect("append");
    let wrong = store
        .stage(&info.id, Offset(1), body(vec![b"zz".to_vec()]))
        .await;
    assert!(matches!(
        wrong,
        Err(StoreError::OffsetMismatch { stored: Offset(3) })
    ));
    store
        .stage(&info.id, Offset(3), body(vec![b"de".to_vec()]))
        .await
        .expect("stage");
    store
        .append(&info.id, Offset(3), body(vec![b"D".to_vec()]))
        .await
        .expect("another append first");
    let late = store.commit_staged(&info.id, Offset(3)).await;
    assert!(matches!(
        late,
        Err(StoreError::OffsetMismatch { stored: Offset(4) })
    ));
    assert_eq!(read_all(store, &info.id, 4).await, b"abcD");
}

/// `concatenate` makes the target the parts' bytes in order, and may be repeated.
pub async fn concatenate_joins_parts_in_order(store: &dyn Store) {
    let first = created(store, Length::Known(5)).await;
    let second = created(store, Length::Known(6)).await;
    store
        .append(&first.id, Offset(0), body(vec![b"hello".to_vec()]))
        .await
        .expect("append");
    store
        .append(&second.id, Offset(0), body(vec![b" world".to_vec()]))
        .await
        .expect("append");
    let target = created(store, Length::Known(11)).await;
    let parts = [first.id.clone(), second.id.clone()];
    store
        .concatenate(&target.id, &parts)
        .await
        .expect("concatenate");
    store
        .concatenate(&target.id, &parts)
        .await
        .expect("concatenate again");
    assert_eq!(
        store.status(&target.id).await.expect("status").offset,
        Offset(11)
    );
    assert_eq!(read_all(store, &target.id, 11).await, b"hello world");
    assert_eq!(read_all(store, &first.id, 5).await, b"hello");
}

/// Every id [`Listing`] visits, in pages of `page_size`, checking each page's size.
async fn walk(store: &dyn Store, page_size: usize) -> Vec<UploadId> {
    let mut pages = Listing::new(store, page_size);
    let mut ids = Vec::new();
    while let Some(page) = pages.next_page().await.expect("list") {
        assert!(
            page.len() <= page_size,
            "{} ids in a page of {page_size}",
            page.len()
        );
        ids.extend(page);
    }
    ids
}

/// `list` returns every upload, and no terminated one.
pub async fn list_returns_every_upload(store: &dyn Store) {
    let kept = created(store, Length::Known(1)).await;
    let removed = created(store, Length::Known(1)).await;
    store.terminate(&removed.id).await.expect("terminate");
    let ids = store.list(None, 1000).await.expect("list");
    assert_eq!(ids, vec![kept.id.clone()]);
    assert_eq!(walk(store, 1000).await, vec![kept.id]);
}

/// `list` pages: ascending ids, strictly after `start_after`, at most `limit`, a short page
/// last; walking on from each page's last id visits every upload exactly once.
pub async fn list_pages_visit_every_upload_once(store: &dyn Store) {
    let mut expected = Vec::new();
    for _ in 0..7 {
        expected.push(created(store, Length::Known(1)).await.id);
    }
    let removed = expected.remove(3);
    store.terminate(&removed).await.expect("terminate");
    expected.sort_by(|one, other| one.as_str().cmp(other.as_str()));
    // 6 uploads: pages of 2 end with an empty one, pages of 4 and 5 with a short one.
    for page_size in [1, 2, 4, 5, 6, 100] {
        assert_eq!(
            walk(store, page_size).await,
            expected,
            "pages of {page_size}"
        );
    }
    let first = store.list(None, 2).await.expect("list");
    assert_eq!(first, expected[..2]);
    let after = store.list(Some(&expected[1]), 3).await.expect("list");
    assert_eq!(
        after,
        expected[2..5],
        "strictly after start_after, at most limit"
    );
    let last = store.list(Some(&expected[4]), 3).await.expect("list");
    assert_eq!(last, expected[5..], "a short page: the end");
    let past = store.list(Some(&expected[5]), 3).await.expect("list");
    assert!(past.is_empty(), "{past:?}");
    // start_after need not be an upload's: a removed one, or any id at all.
    let from_removed = store.list(Some(&removed), 100).await.expect("list");
    let later: Vec<UploadId> = expected
        .iter()
        .filter(|id| id.as_str() > removed.as_str())
        .cloned()
        .collect();
    assert_eq!(from_removed, later);
    let lowest: UploadId = "0".repeat(32).parse().expect("an id");
    assert_eq!(
        store.list(Some(&lowest), 100).await.expect("list"),
        expected
    );
    let highest: UploadId = "f".repeat(32).parse().expect("an id");
    assert!(
        store
            .list(Some(&highest), 100)
            .await
            .expect("list")
            .is_empty()
    );
}

/// `status` reports when bytes were last written, on the store's clock: the creation's time,
/// then each append's and commit's; a refused append moves nothing. Expiry
/// counts from this time, so "a period after the last write" rests on it.
pub async fn writes_move_modified_at(store: &dyn Store, clock: &StoppedClock) {
    use crate::Clock;
    let modified_at = async |id: &UploadId| store.status(id).await.expect("status").modified_at;
    // Whole seconds: every file system keeps them (some keep no finer times).
    let created_at = clock.now();
    let info = created(store, Length::Known(6)).await;
    assert_eq!(modified_at(&info.id).await, created_at, "creation's time");

    clock.advance(std::time::Duration::from_secs(3600));
    let appended_at = clock.now();
    let appended = store
        .append(&info.id, Offset(0), body(vec![b"abc".to_vec()]))
        .await
        .expect("append");
    assert_eq!(modified_at(&info.id).await, appended_at, "append's time");
    assert_eq!(
        appended.modified_at,
        Some(appended_at),
        "the append reports the time it recorded"
    );

    clock.advance(std::time::Duration::from_secs(60));
    let refused = store
        .append(&info.id, Offset(1), body(vec![b"zz".to_vec()]))
        .await;
    assert!(matches!(refused, Err(StoreError::OffsetMismatch { .. })));
    assert_eq!(
        modified_at(&info.id).await,
        appended_at,
        "a refused append wrote nothing"
    );

    clock.advance(std::time::Duration::from_secs(60));
    let committed_at = clock.now();
    store
        .stage(&info.id, Offset(3), body(vec![b"def".to_vec()]))
        .await
        .expect("stage");
    store
        .commit_staged(&info.id, Offset(3))
        .await
        .expect("commit");
    assert_eq!(modified_at(&info.id).await, committed_at, "commit's time");
}
