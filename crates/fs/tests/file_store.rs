//! The file store against the conformance kit, plus what only a disk store can promise.

use bytes::Bytes;
use futures_util::StreamExt;
use resumable_core::{
    BackendKind, BodyError, BodyStream, Length, Offset, Owner, Store, StoreError, UploadId,
    UploadInfo,
};
use resumable_fs::{FileStore, FileStoreConfig};
use std::path::PathBuf;
use std::time::Duration;

/// A store root that is removed when the returned guard drops (hold it for the whole test:
/// hundreds of runs otherwise pile up under `target/tmp`). Under the target dir, as before,
/// rather than /tmp (often tmpfs): direct I/O is exercised on the disk the build runs on.
fn fresh_root() -> (tempfile::TempDir, PathBuf) {
    let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("file-store");
    std::fs::create_dir_all(&directory).expect("file-store dir");
    let dir = tempfile::Builder::new()
        .prefix("store-")
        .tempdir_in(directory)
        .expect("temporary store root");
    let root = dir.path().to_path_buf();
    (dir, root)
}

async fn open(root: PathBuf, lock_timeout: Duration) -> FileStore {
    open_with(root, lock_timeout, true).await
}

async fn open_with(root: PathBuf, lock_timeout: Duration, direct_io: bool) -> FileStore {
    open_clocked(
        root,
        lock_timeout,
        direct_io,
        std::sync::Arc::new(resumable_core::SystemClock),
    )
    .await
}

async fn open_clocked(
    root: PathBuf,
    lock_timeout: Duration,
    direct_io: bool,
    clock: std::sync::Arc<dyn resumable_core::Clock>,
) -> FileStore {
    FileStore::open(FileStoreConfig {
        root,
        lock_timeout,
        clock,
        direct_io,
    })
    .await
    .expect("open store")
}

async fn fresh(
    clock: std::sync::Arc<dyn resumable_core::Clock>,
    direct_io: bool,
) -> (FileStore, tempfile::TempDir) {
    let (dir, root) = fresh_root();
    let store = open_clocked(root, Duration::from_secs(5), direct_io, clock).await;
    (store, dir)
}

mod conformance {
    resumable_core::store_conformance_tests!(|clock| super::fresh(clock, true));
}

/// The same contract with every byte written through the page cache (`--no-direct-io`).
mod conformance_buffered {
    resumable_core::store_conformance_tests!(|clock| super::fresh(clock, false));
}

fn info(length: Length) -> UploadInfo {
    UploadInfo {
        id: UploadId::random(),
        owner: Owner::anonymous(),
        length,
        metadata: Default::default(),
        client_key: Some("фото.jpg-5-1".into()),
        created_at: 1,
        concat: None,
        protocol: None,
        completion: None,
        repr_digest: None,
    }
}

fn body(chunks: &[&'static [u8]]) -> BodyStream {
    let items: Vec<Result<Bytes, BodyError>> = chunks
        .iter()
        .map(|chunk| Ok(Bytes::from_static(chunk)))
        .collect();
    futures_util::stream::iter(items).boxed()
}

#[tokio::test]
async fn uploads_survive_reopening_the_store() {
    let (_dir, root) = fresh_root();
    let info = info(Length::Known(10));
    {
        let store = open(root.clone(), Duration::from_secs(5)).await;
        store.create(&info).await.unwrap();
        store
            .append(&info.id, Offset(0), body(&[b"hello"]))
            .await
            .unwrap();
    }
    let store = open(root, Duration::from_secs(5)).await;
    let status = store.status(&info.id).await.unwrap();
    assert_eq!(status.offset, Offset(5));
    assert_eq!(status.info, info);
    let found = store
        .find_by_key(&Owner::anonymous(), "фото.jpg-5-1")
        .await
        .unwrap();
    assert_eq!(found, Some(info.id.clone()));
}

#[tokio::test]
async fn no_temporary_files_are_left_behind() {
    let (_dir, root) = fresh_root();
    let store = open(root.clone(), Duration::from_secs(5)).await;
    let mut info = info(Length::Deferred);
    store.create(&info).await.unwrap();
    info.length = Length::Known(3);
    store.update(&info).await.unwrap();
    for directory in ["uploads", "keys"] {
        for entry in std::fs::read_dir(root.join(directory)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(!name.ends_with(".tmp"), "leftover {name}");
        }
    }
}

#[tokio::test]
async fn two_processes_never_interleave_their_appends() {
    let (_dir, root) = fresh_root();
    let data_path = {
        let root = root.clone();
        move |id: &UploadId| root.join("uploads").join(format!("{id}.bin"))
    };
    let first = open(root.clone(), Duration::from_secs(5)).await;
    // A second store on the same directory stands for a second server process.
    let second = open(root, Duration::from_secs(5)).await;
    let info = info(Length::Known(4 << 20));
    first.create(&info).await.unwrap();

    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, BodyError>>(1);
    let slow_body = tokio_stream_from(receiver);
    let id = info.id.clone();
    let in_flight = tokio::spawn(async move { first.append(&id, Offset(0), slow_body).await });
    // A chunk bigger than a batch is written at once, but not committed while the body goes on.
    let big = Bytes::from(vec![b'a'; 1 << 20]);
    sender.send(Ok(big.clone())).await.unwrap();
    let data = data_path(&info.id);
    while std::fs::metadata(&data).unwrap().len() < 1 << 20 {
        tokio::task::yield_now().await;
    }
    // The other process sees only what is committed, and appends there...
    assert_eq!(second.status(&info.id).await.unwrap().offset, Offset(0));
    let appended = second
        .append(&info.id, Offset(0), body(&[b"zzz"]))
        .await
        .unwrap();
    assert_eq!(appended.offset, Offset(3));
    // ...so the first one's next bytes would land in the wrong place: it stops instead.
    sender.send(Ok(Bytes::from_static(b"def"))).await.unwrap();
    drop(sender);
    let stopped = in_flight.await.unwrap();
    assert!(matches!(stopped, Err(StoreError::Locked)), "{stopped:?}");
    assert_eq!(second.status(&info.id).await.unwrap().offset, Offset(3));
    assert_eq!(read_all(&second, &info.id, 3).await, b"zzz");
}

#[tokio::test]
async fn an_append_overtaken_before_its_first_write_reports_the_new_offset() {
    let (_dir, root) = fresh_root();
    let first = open(root.clone(), Duration::from_secs(5)).await;
    let second = open(root, Duration::from_secs(5)).await;
    let info = info(Length::Known(100));
    first.create(&info).await.unwrap();

    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, BodyError>>(1);
    let id = info.id.clone();
    let in_flight = tokio::spawn(async move {
        first
            .append(&id, Offset(0), tokio_stream_from(receiver))
            .await
    });
    // The first append's bytes are still gathering in memory when the other process appends.
    sender.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
    let appended = second
        .append(&info.id, Offset(0), body(&[b"zzz"]))
        .await
        .unwrap();
    assert_eq!(appended.offset, Offset(3));
    drop(sender);
    let stopped = in_flight.await.unwrap();
    assert!(
        matches!(
            stopped,
            Err(StoreError::OffsetMismatch { stored: Offset(3) })
        ),
        "{stopped:?}"
    );
    assert_eq!(read_all(&second, &info.id, 3).await, b"zzz");
}

/// A slow client's bytes must not wait in memory for a batch to fill: ten thousand slow
/// clients would hold ten thousand batches, and a crash would lose what they sent.
#[tokio::test]
async fn a_slow_body_reaches_the_file_before_a_batch_fills() {
    let (_dir, root) = fresh_root();
    let store = open(root.clone(), Duration::from_secs(5)).await;
    let info = info(Length::Known(100));
    store.create(&info).await.unwrap();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, BodyError>>(1);
    let id = info.id.clone();
    let writer = store.clone();
    let in_flight = tokio::spawn(async move {
        writer
            .append(&id, Offset(0), tokio_stream_from(receiver))
            .await
    });
    sender.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let data = root.join("uploads").join(format!("{}.bin", info.id));
    while std::fs::metadata(&data).unwrap().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bytes never reached the file"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(sender);
    assert_eq!(in_flight.await.unwrap().unwrap().offset, Offset(3));
}

async fn read_all(store: &FileStore, id: &UploadId, length: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut stream = store.read(id, 0..length).await.unwrap();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    bytes
}

fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, BodyError>>,
) -> BodyStream {
    futures_util::stream::poll_fn(move |context| receiver.poll_recv(context)).boxed()
}

/// What a crash can leave: a data file or committed length without its info (creation or
/// removal cut short), a chunk set aside by an append cut short, the key file of an upload
/// whose removal was cut short, and half-written temporary files, in both directories.
/// Returns their paths.
fn plant_leftovers(root: &std::path::Path) -> Vec<PathBuf> {
    let leftovers = vec![
        root.join("uploads")
            .join(format!("{}.bin", UploadId::random())),
        root.join("uploads")
            .join(format!("{}.staged", UploadId::random())),
        root.join("uploads")
            .join(format!("{}.len", UploadId::random())),
        root.join("keys").join("0f".repeat(32)),
        root.join("uploads").join(format!(
            ".{}.info.{}.tmp",
            UploadId::random(),
            UploadId::random()
        )),
        root.join("keys")
            .join(format!(".abc.{}.tmp", UploadId::random())),
    ];
    for path in &leftovers {
        // A key file holds the id of its upload, here one that no longer exists.
        std::fs::write(path, UploadId::random().as_str()).unwrap();
    }
    leftovers
}

#[tokio::test]
async fn leftovers_of_a_crash_are_removed_and_uploads_kept() {
    let (_dir, root) = fresh_root();
    let store = open(root.clone(), Duration::from_secs(5)).await;
    let kept = info(Length::Known(5));
    store.create(&kept).await.unwrap();
    store
        .append(&kept.id, Offset(0), body(&[b"hello"]))
        .await
        .unwrap();
    let leftovers = plant_leftovers(&root);

    assert_eq!(store.remove_leftovers(Duration::ZERO).await.unwrap(), 6);

    for path in &leftovers {
        assert!(!path.exists(), "{} is still there", path.display());
    }
    let status = store.status(&kept.id).await.unwrap();
    assert_eq!(status.offset, Offset(5));
    let key = store
        .find_by_key(&kept.owner, kept.client_key.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(key, Some(kept.id));
}

#[tokio::test]
async fn leftovers_younger_than_the_minimum_age_are_kept() {
    let (_dir, root) = fresh_root();
    let store = open(root.clone(), Duration::from_secs(5)).await;
    let leftovers = plant_leftovers(&root);
    let removed = store
        .remove_leftovers(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(removed, 0);
    assert!(leftovers.iter().all(|path| path.exists()));
}

#[tokio::test]
async fn a_data_file_whose_info_cannot_be_looked_at_is_kept() {
    let (_dir, root) = fresh_root();
    let store = open(root.clone(), Duration::from_secs(5)).await;
    // Its info's name is one byte over the file system's limit: looking it up fails with an
    // error that is not "not found", which must not count as "no info".
    let data = root
        .join("uploads")
        .join(format!("{}.bin", "a".repeat(251)));
    std::fs::write(&data, b"maybe live").unwrap();
    assert_eq!(store.remove_leftovers(Duration::ZERO).await.unwrap(), 0);
    assert!(data.exists());
}

#[tokio::test]
async fn a_second_assembly_that_fails_leaves_the_final_upload_whole() {
    let (_dir, root) = fresh_root();
    let store = open(root.clone(), Duration::from_secs(5)).await;
    let (first, second, last) = (
        info(Length::Known(3)),
        info(Length::Known(2)),
        info(Length::Known(5)),
    );
    for (part, bytes) in [(&first, b"abc" as &'static [u8]), (&second, b"de")] {
        store.create(part).await.unwrap();
        store
            .append(&part.id, Offset(0), body(&[bytes]))
            .await
            .unwrap();
    }
    store.create(&last).await.unwrap();
    let parts = [first.id.clone(), second.id.clone()];
    store.concatenate(&last.id, &parts).await.unwrap();
    assert_eq!(read_all(&store, &last.id, 5).await, b"abcde");
    // Another process assembles it again, but a part's bytes have gone meanwhile.
    std::fs::remove_file(root.join("uploads").join(format!("{}.bin", second.id))).unwrap();
    assert!(store.concatenate(&last.id, &parts).await.is_err());
    assert_eq!(store.status(&last.id).await.unwrap().offset, Offset(5));
    assert_eq!(read_all(&store, &last.id, 5).await, b"abcde");
}

#[tokio::test]
async fn one_unreadable_info_does_not_stop_the_expiry_sweep() {
    use resumable_core::{ManualClock, MemoryLocker, NewUpload, ServiceConfig, UploadService};
    let (_dir, root) = fresh_root();
    let clock = std::sync::Arc::new(ManualClock::default());
    let store = std::sync::Arc::new(
        FileStore::open(FileStoreConfig {
            root: root.clone(),
            lock_timeout: Duration::from_secs(5),
            clock: clock.clone(),
            direct_io: true,
        })
        .await
        .expect("open store"),
    );
    let expire_after = Duration::from_secs(3600);
    let service = UploadService::new(
        store.clone(),
        std::sync::Arc::new(MemoryLocker::new(Duration::from_secs(5))),
        clock.clone(),
        ServiceConfig {
            expire_after: Some(expire_after),
            ..ServiceConfig::default()
        },
    );
    for _ in 0..30 {
        let new = NewUpload {
            owner: Owner::anonymous(),
            length: Length::Known(10),
            metadata: Default::default(),
            concat: None,
            limits: Default::default(),
            protocol: resumable_core::Protocol::Tus,
            repr_digest: None,
            creator: None,
        };
        service.create(new).await.unwrap();
    }
    // The first upload the sweep comes to has an info file nobody can read.
    let ids = store.list(None, usize::MAX).await.unwrap();
    let corrupt = ids[0].clone();
    std::fs::write(
        root.join("uploads").join(format!("{corrupt}.info")),
        b"{not json",
    )
    .unwrap();
    clock.advance(expire_after + Duration::from_secs(1));

    let sweep = service.remove_expired().await.unwrap();
    assert_eq!((sweep.removed, sweep.failed), (29, 1));
    assert_eq!(store.list(None, usize::MAX).await.unwrap(), vec![corrupt]);
    // The next sweep still counts it, and removes nothing else.
    let again = service.remove_expired().await.unwrap();
    assert_eq!((again.removed, again.failed), (0, 1));
}

#[tokio::test]
async fn a_missing_directory_is_unavailable_storage_not_a_missing_upload() {
    let (_dir, root) = fresh_root();
    let store = open(root.clone(), Duration::from_secs(5)).await;
    let existing = info(Length::Known(5));
    store.create(&existing).await.unwrap();
    assert!(matches!(
        store.status(&UploadId::random()).await,
        Err(StoreError::NotFound)
    ));

    std::fs::remove_dir_all(&root).unwrap();

    let unavailable = |result: Result<(), StoreError>| match result {
        Err(StoreError::Backend(cause)) if cause.kind() == BackendKind::Unavailable => {
            assert!(cause.is_temporary(), "{cause}");
            cause.to_string()
        }
        other => panic!("{other:?}"),
    };
    let cause = unavailable(store.create(&info(Length::Known(5))).await);
    assert!(cause.contains(&root.display().to_string()), "{cause}");
    unavailable(store.status(&existing.id).await.map(|_| ()));
    unavailable(store.status(&UploadId::random()).await.map(|_| ()));
    unavailable(store.finish(&existing.id).await);
    unavailable(store.terminate(&existing.id).await);
    let client_key = existing.client_key.as_deref().unwrap();
    unavailable(
        store
            .find_by_key(&existing.owner, client_key)
            .await
            .map(|_| ()),
    );
    unavailable(store.list(None, 10).await.map(|_| ()));
    unavailable(store.remove_leftovers(Duration::ZERO).await.map(|_| ()));
}

/// What a power cut leaves: a data file longer than what was committed (the kernel kept a
/// length whose bytes never reached the disk: zeros). They never count, and the next append
/// cuts them off before it writes.
#[tokio::test]
async fn bytes_past_the_committed_length_never_count() {
    let (_dir, root) = fresh_root();
    let store = open(root.clone(), Duration::from_secs(5)).await;
    let info = info(Length::Known(100));
    store.create(&info).await.unwrap();
    store
        .append(&info.id, Offset(0), body(&[b"abc"]))
        .await
        .unwrap();
    let data = root.join("uploads").join(format!("{}.bin", info.id));
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&data)
            .unwrap();
        file.write_all(&[0; 4093]).unwrap();
    }
    assert_eq!(store.status(&info.id).await.unwrap().offset, Offset(3));
    let reopened = open(root, Duration::from_secs(5)).await;
    assert_eq!(reopened.status(&info.id).await.unwrap().offset, Offset(3));
    let appended = reopened
        .append(&info.id, Offset(3), body(&[b"def"]))
        .await
        .unwrap();
    assert_eq!(appended.offset, Offset(6));
    assert_eq!(std::fs::read(&data).unwrap(), b"abcdef");
}
