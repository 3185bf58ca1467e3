//! The upload service's rules, over the in-memory store and locker.

use bytes::Bytes;
use futures_util::StreamExt;
use resumable_core::{
    Append, BodyError, BodyStream, Length, Limits, MemoryLocker, MemoryStore, NewUpload, Offset,
    Owner, ServiceConfig, SystemClock, UploadError, UploadService,
};
use resumable_proto::Metadata;
use std::sync::Arc;
use std::time::Duration;

fn service(max_size: Option<u64>) -> Arc<UploadService> {
    Arc::new(UploadService::new(
        Arc::new(MemoryStore::default()),
        Arc::new(MemoryLocker::new(Duration::from_secs(5))),
        Arc::new(SystemClock),
        ServiceConfig {
            max_size,
            body_idle_timeout: Duration::from_secs(5),
            expire_after: None,
            ..ServiceConfig::default()
        },
    ))
}

fn new_upload(owner: &str, length: Length) -> NewUpload {
    NewUpload {
        owner: Owner::new(owner),
        length,
        metadata: Metadata::default(),
        concat: None,
        limits: Limits::default(),
        protocol: resumable_core::Protocol::Tus,
        repr_digest: None,
        creator: None,
    }
}

fn body(bytes: &'static [u8]) -> BodyStream {
    futures_util::stream::iter([Ok(Bytes::from_static(bytes))]).boxed()
}

fn append(offset: u64, bytes: &'static [u8]) -> Append {
    Append {
        offset: Offset(offset),
        declared_length: None,
        content_length: Some(bytes.len() as u64),
        checksum: None,
        unannounced_trailer: None,
        ends_upload: false,
        limits: Limits::default(),
        body: body(bytes),
    }
}

#[tokio::test]
async fn uploads_are_invisible_to_other_owners() {
    let service = service(None);
    let alice = Owner::new("alice");
    let mallory = Owner::new("mallory");
    let id = service
        .create(new_upload("alice", Length::Known(3)))
        .await
        .unwrap()
        .info
        .id;
    assert!(matches!(
        service.status(&mallory, &id).await,
        Err(UploadError::NotFound)
    ));
    let theft = service.append(&mallory, &id, append(0, b"bad")).await;
    assert!(matches!(theft, Err(UploadError::NotFound)));
    assert!(matches!(
        service.terminate(&mallory, &id).await,
        Err(UploadError::NotFound)
    ));
    assert!(matches!(
        service.read(&mallory, &id, 0..3).await,
        Err(UploadError::NotFound)
    ));
    assert_eq!(service.status(&alice, &id).await.unwrap().offset, Offset(0));
}

#[tokio::test]
async fn client_keys_are_scoped_per_owner() {
    let service = service(None);
    let alice = Owner::new("alice");
    let bob = Owner::new("bob");
    let for_alice = service
        .open_by_key(
            &alice,
            "a.txt-3-1",
            Length::Deferred,
            Limits::default(),
            None,
        )
        .await
        .unwrap();
    let for_bob = service
        .open_by_key(&bob, "a.txt-3-1", Length::Deferred, Limits::default(), None)
        .await
        .unwrap();
    assert_ne!(for_alice, for_bob);
    let again = service
        .open_by_key(
            &alice,
            "a.txt-3-1",
            Length::Deferred,
            Limits::default(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(again, for_alice);
}

#[tokio::test]
async fn simultaneous_first_requests_for_a_key_make_one_upload() {
    let service = service(None);
    let openers: Vec<_> = (0..8)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                service
                    .open_by_key(
                        &Owner::anonymous(),
                        "same-1-1",
                        Length::Known(1),
                        Limits::default(),
                        None,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for opener in openers {
        ids.push(opener.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test]
async fn lengths_over_the_maximum_are_refused() {
    let service = service(Some(10));
    let result = service.create(new_upload("a", Length::Known(11))).await;
    assert!(matches!(
        result,
        Err(UploadError::TooLarge {
            length: 11,
            max: 10
        })
    ));
    let deferred = service
        .create(new_upload("a", Length::Deferred))
        .await
        .unwrap();
    let declare = Append {
        declared_length: Some(11),
        ..append(0, b"")
    };
    let result = service
        .append(&Owner::new("a"), &deferred.info.id, declare)
        .await;
    assert!(matches!(result, Err(UploadError::TooLarge { .. })));
}

#[tokio::test]
async fn a_deferred_upload_cannot_grow_past_the_maximum() {
    let service = service(Some(4));
    let owner = Owner::new("a");
    let id = service
        .create(new_upload("a", Length::Deferred))
        .await
        .unwrap()
        .info
        .id;
    let unannounced = Append {
        content_length: None,
        ..append(0, b"abcdef")
    };
    let result = service.append(&owner, &id, unannounced).await;
    assert!(
        matches!(result, Err(UploadError::BodyTooLong { stored: Offset(4) })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_declared_length_below_the_offset_is_refused() {
    let service = service(None);
    let owner = Owner::new("a");
    let id = service
        .create(new_upload("a", Length::Deferred))
        .await
        .unwrap()
        .info
        .id;
    service
        .append(&owner, &id, append(0, b"abcdef"))
        .await
        .unwrap();
    let shrink = Append {
        declared_length: Some(3),
        ..append(6, b"")
    };
    let result = service.append(&owner, &id, shrink).await;
    assert!(matches!(
        result,
        Err(UploadError::LengthBelowOffset { length: 3, .. })
    ));
    let status = service.status(&owner, &id).await.unwrap();
    assert_eq!(status.info.length, Length::Deferred);
}

#[tokio::test]
async fn a_status_request_takes_over_an_append_in_flight() {
    let service = service(None);
    let owner = Owner::anonymous();
    let id = service
        .create(new_upload("anonymous", Length::Known(100)))
        .await
        .unwrap()
        .info
        .id;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, BodyError>>(4);
    let never_ending: BodyStream =
        futures_util::stream::poll_fn(move |context| receiver.poll_recv(context)).boxed();
    sender.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
    let in_flight = tokio::spawn({
        let service = service.clone();
        let owner = owner.clone();
        let id = id.clone();
        async move {
            let append = Append {
                offset: Offset(0),
                declared_length: None,
                content_length: Some(100),
                checksum: None,
                unannounced_trailer: None,
                ends_upload: false,
                limits: Limits::default(),
                body: never_ending,
            };
            service.append(&owner, &id, append).await
        }
    });
    // The client never sends more nor closes; a status request must not wait for it.
    let status = loop {
        let status = service.status(&owner, &id).await.unwrap();
        if status.offset == Offset(3) {
            break status;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(status.offset, Offset(3));
    let taken_over = in_flight.await.unwrap();
    assert!(
        matches!(
            taken_over,
            Err(UploadError::Interrupted {
                stored: Offset(3),
                reason: BodyError::TakenOver
            })
        ),
        "{taken_over:?}"
    );
    drop(sender);
}

#[tokio::test]
async fn after_shutdown_appends_stop_at_once() {
    let service = service(None);
    let owner = Owner::anonymous();
    let id = service
        .create(new_upload("anonymous", Length::Known(10)))
        .await
        .unwrap()
        .info
        .id;
    service.shutdown();
    let result = service.append(&owner, &id, append(0, b"abc")).await;
    assert!(
        matches!(
            result,
            Err(UploadError::Interrupted {
                reason: BodyError::ShuttingDown,
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn reading_an_incomplete_upload_is_refused() {
    let service = service(None);
    let owner = Owner::new("a");
    let id = service
        .create(new_upload("a", Length::Known(6)))
        .await
        .unwrap()
        .info
        .id;
    service
        .append(&owner, &id, append(0, b"abc"))
        .await
        .unwrap();
    assert!(matches!(
        service.read(&owner, &id, 0..3).await,
        Err(UploadError::Incomplete)
    ));
    service
        .append(&owner, &id, append(3, b"def"))
        .await
        .unwrap();
    let mut stream = service.read(&owner, &id, 0..6).await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(bytes, b"abcdef");
}

/// More uploads than one page of the store's list: the sweep walks every page, though it
/// removes uploads of the pages it has walked as it goes.
#[tokio::test]
async fn the_expiry_sweep_walks_every_page() {
    let clock = Arc::new(resumable_core::ManualClock::default());
    let store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let service = UploadService::new(
        store.clone(),
        Arc::new(MemoryLocker::new(Duration::from_secs(5))),
        clock.clone(),
        ServiceConfig {
            expire_after: Some(Duration::from_secs(60)),
            ..ServiceConfig::default()
        },
    );
    let count = 2 * resumable_core::service::LIST_PAGE_SIZE + 7;
    for _ in 0..count {
        service
            .create(new_upload("a", Length::Known(6)))
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(61));
    let sweep = service.remove_expired().await.unwrap();
    assert_eq!((sweep.removed, sweep.failed), (count, 0));
    assert!(
        resumable_core::Store::list(&*store, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn unfinished_uploads_expire_on_the_service_clock_and_are_swept() {
    let clock = Arc::new(resumable_core::ManualClock::default());
    let service = UploadService::new(
        Arc::new(MemoryStore::with_clock(clock.clone())),
        Arc::new(MemoryLocker::new(Duration::from_secs(5))),
        clock.clone(),
        ServiceConfig {
            expire_after: Some(Duration::from_secs(3600)),
            ..ServiceConfig::default()
        },
    );
    let owner = Owner::new("a");
    let unfinished = service
        .create(new_upload("a", Length::Known(6)))
        .await
        .unwrap()
        .info
        .id;
    let finished = service
        .create(new_upload("a", Length::Known(3)))
        .await
        .unwrap()
        .info
        .id;
    service
        .append(&owner, &finished, append(0, b"abc"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(3599));
    assert_eq!(service.remove_expired().await.unwrap().removed, 0);
    service.status(&owner, &unfinished).await.unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(matches!(
        service.status(&owner, &unfinished).await,
        Err(UploadError::Expired)
    ));
    assert_eq!(service.remove_expired().await.unwrap().removed, 1);
    assert!(matches!(
        service.status(&owner, &unfinished).await,
        Err(UploadError::NotFound)
    ));
    assert_eq!(
        service.status(&owner, &finished).await.unwrap().offset,
        Offset(3)
    );
}

fn quota_service(quota_bytes: Option<u64>, quota_uploads: Option<u64>) -> Arc<UploadService> {
    Arc::new(UploadService::new(
        Arc::new(MemoryStore::default()),
        Arc::new(MemoryLocker::new(Duration::from_secs(5))),
        Arc::new(SystemClock),
        ServiceConfig {
            expire_after: None,
            quota_bytes,
            quota_uploads,
            ..ServiceConfig::default()
        },
    ))
}

async fn create(service: &UploadService, owner: &str, length: Length) -> resumable_core::UploadId {
    service
        .create(new_upload(owner, length))
        .await
        .unwrap()
        .info
        .id
}

#[tokio::test]
async fn the_byte_quota_counts_known_lengths_from_creation_per_owner() {
    let service = quota_service(Some(10), None);
    create(&service, "alice", Length::Known(6)).await;
    // Alice has 4 bytes of room left; bob has his own 10.
    let refused = service.create(new_upload("alice", Length::Known(5))).await;
    assert!(
        matches!(
            refused,
            Err(UploadError::QuotaBytes {
                limit: 10,
                stored: None
            })
        ),
        "{refused:?}"
    );
    create(&service, "alice", Length::Known(4)).await;
    create(&service, "bob", Length::Known(10)).await;
    // Full now: even one byte more is refused.
    let refused = service.create(new_upload("alice", Length::Known(1))).await;
    assert!(matches!(refused, Err(UploadError::QuotaBytes { .. })));
}

#[tokio::test]
async fn an_append_past_the_byte_quota_stores_what_fits_and_stops_with_the_true_offset() {
    let service = quota_service(Some(10), None);
    let owner = Owner::new("alice");
    create(&service, "alice", Length::Known(4)).await;
    let deferred = create(&service, "alice", Length::Deferred).await;
    let cut = service
        .append(
            &owner,
            &deferred,
            Append {
                content_length: None,
                ..append(0, b"0123456789")
            },
        )
        .await;
    assert!(
        matches!(
            cut,
            Err(UploadError::QuotaBytes {
                limit: 10,
                stored: Some(Offset(6))
            })
        ),
        "{cut:?}"
    );
    assert_eq!(
        service.status(&owner, &deferred).await.unwrap().offset,
        Offset(6)
    );
    // Full: the next byte is refused, the offset stays.
    let again = service.append(&owner, &deferred, append(6, b"x")).await;
    assert!(matches!(
        again,
        Err(UploadError::QuotaBytes {
            stored: Some(Offset(6)),
            ..
        })
    ));
    // Declaring a length that would not fit is refused before a byte is written.
    let declared = service
        .append(
            &owner,
            &deferred,
            Append {
                declared_length: Some(7),
                ..append(6, b"")
            },
        )
        .await;
    assert!(
        matches!(declared, Err(UploadError::QuotaBytes { .. })),
        "{declared:?}"
    );
    // Bob is not affected by alice's usage.
    let bob = create(&service, "bob", Length::Deferred).await;
    let status = service
        .append(&Owner::new("bob"), &bob, append(0, b"0123456789"))
        .await
        .unwrap();
    assert_eq!(status.offset, Offset(10));
}

#[tokio::test]
async fn the_upload_quota_counts_unfinished_uploads_only() {
    let service = quota_service(None, Some(2));
    let owner = Owner::new("alice");
    let first = create(&service, "alice", Length::Known(1)).await;
    create(&service, "alice", Length::Known(1)).await;
    let refused = service.create(new_upload("alice", Length::Known(1))).await;
    assert!(
        matches!(refused, Err(UploadError::QuotaUploads { limit: 2 })),
        "{refused:?}"
    );
    create(&service, "bob", Length::Known(1)).await;
    // Finishing one makes room.
    service
        .append(&owner, &first, append(0, b"x"))
        .await
        .unwrap();
    create(&service, "alice", Length::Known(1)).await;
}

#[tokio::test]
async fn a_principals_limits_narrow_the_servers() {
    let service = quota_service(Some(100), None);
    let narrow = Limits {
        max_size: Some(5),
        quota_bytes: Some(8),
        quota_uploads: Some(1),
    };
    let with = |length: u64| NewUpload {
        limits: narrow,
        ..new_upload("alice", Length::Known(length))
    };
    assert!(matches!(
        service.create(with(6)).await,
        Err(UploadError::TooLarge { length: 6, max: 5 })
    ));
    service.create(with(5)).await.unwrap();
    assert!(matches!(
        service.create(with(1)).await,
        Err(UploadError::QuotaUploads { limit: 1 })
    ));
    // Without the narrow limits, the server's own apply.
    service
        .create(new_upload("alice", Length::Known(50)))
        .await
        .unwrap();
}

fn part_of(id: &resumable_core::UploadId) -> resumable_core::ConcatPart {
    resumable_core::ConcatPart {
        id: id.clone(),
        url: format!("/files/{id}"),
    }
}

async fn partial(service: &UploadService, owner: &str, length: Length) -> resumable_core::UploadId {
    let new = NewUpload {
        concat: Some(resumable_core::NewConcat::Partial),
        ..new_upload(owner, length)
    };
    service.create(new).await.unwrap().info.id
}

fn final_of(owner: &str, parts: &[&resumable_core::UploadId]) -> NewUpload {
    NewUpload {
        concat: Some(resumable_core::NewConcat::Final(
            parts.iter().map(|id| part_of(id)).collect(),
        )),
        ..new_upload(owner, Length::Deferred)
    }
}

async fn read_all(
    service: &UploadService,
    owner: &Owner,
    id: &resumable_core::UploadId,
    length: u64,
) -> Vec<u8> {
    let stream = service.read(owner, id, 0..length).await.unwrap();
    let chunks: Vec<Bytes> = stream.map(|chunk| chunk.unwrap()).collect().await;
    chunks.concat()
}

#[tokio::test]
async fn a_final_upload_is_its_parts_in_order_assembled_once_they_are_complete() {
    let service = service(None);
    let owner = Owner::new("alice");
    let a = partial(&service, "alice", Length::Known(3)).await;
    let b = partial(&service, "alice", Length::Known(2)).await;
    service.append(&owner, &b, append(0, b"de")).await.unwrap();
    // Created while a part is unfinished: it waits, with the parts' whole length.
    let whole = service.create(final_of("alice", &[&a, &b])).await.unwrap();
    assert_eq!(whole.info.length, Length::Known(5));
    assert!(!whole.is_complete());
    let id = whole.info.id;
    assert!(matches!(
        service.read(&owner, &id, 0..5).await,
        Err(UploadError::Incomplete)
    ));
    // A final takes no bytes of its own.
    assert!(matches!(
        service.append(&owner, &id, append(0, b"x")).await,
        Err(UploadError::FinalUpload)
    ));
    service.append(&owner, &a, append(0, b"abc")).await.unwrap();
    let status = service.status(&owner, &id).await.unwrap();
    assert!(status.is_complete());
    assert_eq!(status.offset, Offset(5));
    assert_eq!(read_all(&service, &owner, &id, 5).await, b"abcde");
    // Parts already complete: assembled at creation.
    let again = service.create(final_of("alice", &[&b, &a])).await.unwrap();
    assert!(again.is_complete());
    assert_eq!(
        read_all(&service, &owner, &again.info.id, 5).await,
        b"deabc"
    );
}

#[tokio::test]
async fn a_final_upload_takes_only_the_owners_partial_uploads_of_known_length() {
    let service = service(None);
    let whole = create(&service, "alice", Length::Known(1)).await;
    let deferred = partial(&service, "alice", Length::Deferred).await;
    let bobs = partial(&service, "bob", Length::Known(1)).await;
    let fine = partial(&service, "alice", Length::Known(1)).await;
    for (parts, what) in [
        (vec![&fine, &whole], "is not a partial upload"),
        (vec![&deferred], "has no length yet"),
        (vec![&fine, &bobs], "does not exist"),
    ] {
        match service.create(final_of("alice", &parts)).await {
            Err(UploadError::InvalidConcat(message)) => {
                assert!(message.contains(what), "{message}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // Its whole size counts against the size limit before anything is written.
    let limited = self::service(Some(3));
    let two = partial(&limited, "alice", Length::Known(2)).await;
    let other = partial(&limited, "alice", Length::Known(2)).await;
    assert!(matches!(
        limited.create(final_of("alice", &[&two, &other])).await,
        Err(UploadError::TooLarge { length: 4, max: 3 })
    ));
}

#[test]
fn the_default_configuration_expires_after_a_day_without_limits() {
    let config = ServiceConfig::default();
    assert_eq!(config.expire_after, Some(Duration::from_secs(86_400)));
    assert_eq!(
        (config.max_size, config.quota_bytes, config.quota_uploads),
        (None, None, None)
    );
    let service = service(Some(7));
    assert_eq!(service.max_size(), Some(7));
    assert_eq!(service.expire_after(), None);
    let expiring = UploadService::new(
        Arc::new(MemoryStore::default()),
        Arc::new(MemoryLocker::new(Duration::from_secs(5))),
        Arc::new(SystemClock),
        ServiceConfig::default(),
    );
    assert_eq!(expiring.expire_after(), Some(Duration::from_secs(86_400)));
}

#[tokio::test]
async fn a_client_key_is_found_for_its_owner_only() {
    let service = service(None);
    let alice = Owner::new("alice");
    assert_eq!(service.find_by_key(&alice, "a-1-1").await.unwrap(), None);
    let id = service
        .open_by_key(&alice, "a-1-1", Length::Known(1), Limits::default(), None)
        .await
        .unwrap();
    assert_eq!(
        service.find_by_key(&alice, "a-1-1").await.unwrap(),
        Some(id)
    );
    assert_eq!(
        service
            .find_by_key(&Owner::new("bob"), "a-1-1")
            .await
            .unwrap(),
        None
    );
}

fn sha256_checksum(bytes: &[u8]) -> resumable_core::ExpectedChecksum {
    use sha2::Digest;
    resumable_core::ExpectedChecksum::Header(resumable_proto::checksum::Checksum {
        algorithm: resumable_proto::checksum::ChecksumAlgorithm::Sha256,
        digest: sha2::Sha256::digest(bytes).to_vec(),
    })
}

#[tokio::test]
async fn a_checksummed_chunk_counts_only_when_its_digest_matches() {
    let service = service(None);
    let owner = Owner::new("alice");
    let id = create(&service, "alice", Length::Known(6)).await;
    let wrong = service
        .append(
            &owner,
            &id,
            Append {
                checksum: Some(sha256_checksum(b"other")),
                ..append(0, b"abc")
            },
        )
        .await;
    assert!(
        matches!(
            wrong,
            Err(UploadError::ChecksumMismatch { stored: Offset(0) })
        ),
        "{wrong:?}"
    );
    assert_eq!(service.status(&owner, &id).await.unwrap().offset, Offset(0));
    let right = service
        .append(
            &owner,
            &id,
            Append {
                checksum: Some(sha256_checksum(b"abc")),
                ..append(0, b"abc")
            },
        )
        .await
        .unwrap();
    assert_eq!(right.offset, Offset(3));
}

#[tokio::test]
async fn other_owners_finished_uploads_never_count_against_a_quota() {
    let service = quota_service(Some(10), None);
    let bob = Owner::new("bob");
    let finished = create(&service, "bob", Length::Known(8)).await;
    service
        .append(&bob, &finished, append(0, b"01234567"))
        .await
        .unwrap();
    // Bob's check remembers his finished upload; alice's checks after it must skip it.
    create(&service, "bob", Length::Known(2)).await;
    create(&service, "alice", Length::Known(10)).await;
    let full = service.create(new_upload("alice", Length::Known(1))).await;
    assert!(
        matches!(full, Err(UploadError::QuotaBytes { .. })),
        "{full:?}"
    );
    let bob_full = service.create(new_upload("bob", Length::Known(1))).await;
    assert!(
        matches!(bob_full, Err(UploadError::QuotaBytes { .. })),
        "{bob_full:?}"
    );
}

#[tokio::test]
async fn a_declared_length_must_match_a_known_one_and_fit_the_quota_exactly() {
    let service = quota_service(Some(10), None);
    let owner = Owner::new("alice");
    let known = create(&service, "alice", Length::Known(2)).await;
    let same = Append {
        declared_length: Some(2),
        ..append(0, b"ab")
    };
    assert_eq!(
        service.append(&owner, &known, same).await.unwrap().offset,
        Offset(2)
    );
    let deferred = create(&service, "alice", Length::Deferred).await;
    service
        .append(&owner, &deferred, append(0, b"abcd"))
        .await
        .unwrap();
    let conflicting = Append {
        declared_length: Some(3),
        ..append(2, b"")
    };
    assert!(matches!(
        service.append(&owner, &known, conflicting).await,
        Err(UploadError::LengthConflict { declared: 2 })
    ));
    // 2 bytes are alice's elsewhere: 8 is exactly the room, 9 is one byte too many.
    let too_long = Append {
        declared_length: Some(9),
        ..append(4, b"")
    };
    assert!(matches!(
        service.append(&owner, &deferred, too_long).await,
        Err(UploadError::QuotaBytes {
            limit: 10,
            stored: None
        })
    ));
    let exact = Append {
        declared_length: Some(8),
        ..append(4, b"efgh")
    };
    let status = service.append(&owner, &deferred, exact).await.unwrap();
    assert_eq!(status.info.length, Length::Known(8));
    assert!(status.is_complete());
    // Declaring exactly the stored count completes an upload without a byte more.
    let at_offset = create(&service, "bob", Length::Deferred).await;
    let bob = Owner::new("bob");
    service
        .append(&bob, &at_offset, append(0, b"xy"))
        .await
        .unwrap();
    let declared = Append {
        declared_length: Some(2),
        ..append(2, b"")
    };
    assert!(
        service
            .append(&bob, &at_offset, declared)
            .await
            .unwrap()
            .is_complete()
    );
}

#[tokio::test]
async fn a_body_that_ends_the_upload_sets_its_length_only_when_it_arrived_whole() {
    let service = service(None);
    let owner = Owner::new("alice");
    let whole = create(&service, "alice", Length::Deferred).await;
    let ending = Append {
        ends_upload: true,
        ..append(0, b"abc")
    };
    let status = service.append(&owner, &whole, ending).await.unwrap();
    assert_eq!(status.info.length, Length::Known(3));
    assert!(status.is_complete());
    assert_eq!(read_all(&service, &owner, &whole, 3).await, b"abc");

    let cut = create(&service, "alice", Length::Deferred).await;
    let interrupted: BodyStream = futures_util::stream::iter([
        Ok(Bytes::from_static(b"ab")),
        Err(BodyError::Interrupted("connection reset".into())),
    ])
    .boxed();
    let ending = Append {
        ends_upload: true,
        content_length: None,
        body: interrupted,
        ..append(0, b"")
    };
    let result = service.append(&owner, &cut, ending).await;
    assert!(
        matches!(
            result,
            Err(UploadError::Interrupted {
                stored: Offset(2),
                ..
            })
        ),
        "{result:?}"
    );
    let status = service.status(&owner, &cut).await.unwrap();
    assert_eq!(status.info.length, Length::Deferred);
    assert!(!status.is_complete());
}

/// A clock a second later at every reading: any two readings differ.
#[derive(Default)]
struct TickingClock(std::sync::Mutex<u64>);

impl resumable_core::Clock for TickingClock {
    fn now(&self) -> std::time::SystemTime {
        let mut seconds = self.0.lock().unwrap();
        *seconds += 1;
        std::time::UNIX_EPOCH + Duration::from_secs(2_000_000_000 + *seconds)
    }
}

#[tokio::test]
async fn an_append_answers_the_write_time_the_store_recorded() {
    // A regression: the answer took its own reading of the clock after the store's (after two
    // syncs on disk), so a PATCH's Upload-Expires could be a second past what HEAD said next.
    let clock = Arc::new(TickingClock::default());
    let service = UploadService::new(
        Arc::new(MemoryStore::with_clock(clock.clone())),
        Arc::new(MemoryLocker::new(Duration::from_secs(5))),
        clock,
        ServiceConfig::default(),
    );
    let owner = Owner::new("alice");
    let id = create(&service, "alice", Length::Known(6)).await;
    let answered = service
        .append(&owner, &id, append(0, b"abc"))
        .await
        .unwrap();
    let later = service.inspect(&owner, &id).await.unwrap();
    assert_eq!(answered.modified_at, later.modified_at);
    assert_eq!(service.expires_at(&answered), service.expires_at(&later));
}

/// An upload announced with the digest of all its bytes, sent over two appends.
async fn upload_with_digest(
    digest: Vec<u8>,
) -> (
    Arc<UploadService>,
    resumable_core::UploadId,
    Result<(), UploadError>,
) {
    use resumable_proto::checksum::{Checksum, ChecksumAlgorithm};
    let service = service(None);
    let owner = Owner::new("alice");
    let new = NewUpload {
        repr_digest: Some(resumable_core::ReprDigest(Checksum {
            algorithm: ChecksumAlgorithm::Sha256,
            digest,
        })),
        ..new_upload("alice", Length::Known(11))
    };
    let id = service.create(new).await.unwrap().info.id;
    service
        .append(&owner, &id, append(0, b"hello"))
        .await
        .unwrap();
    let last = service.append(&owner, &id, append(5, b" world")).await;
    (service, id, last.map(|_| ()))
}

#[tokio::test]
async fn a_whole_upload_matching_its_announced_digest_finishes() {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(b"hello world").to_vec();
    let (service, id, last) = upload_with_digest(digest).await;
    last.unwrap();
    let owner = Owner::new("alice");
    let bytes: Vec<Bytes> = service
        .read(&owner, &id, 0..11)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(bytes.concat(), b"hello world");
}

#[tokio::test]
async fn a_whole_upload_differing_from_its_announced_digest_fails_for_good() {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(b"hello there").to_vec();
    let (service, id, last) = upload_with_digest(digest).await;
    let owner = Owner::new("alice");
    assert!(
        matches!(&last, Err(UploadError::HookRefused { status, message })
            if status.get() == 400 && message.contains("Repr-Digest")),
        "{last:?}"
    );
    // The failure is persisted: no download, no more bytes, and status says so.
    assert!(matches!(
        service.read(&owner, &id, 0..11).await,
        Err(UploadError::HookRefused { .. })
    ));
    assert!(matches!(
        service.append(&owner, &id, append(11, b"")).await,
        Err(UploadError::HookRefused { .. })
    ));
    let status = service.inspect(&owner, &id).await.unwrap();
    assert!(status.info.failure().is_some());
}

/// A service with `config` on `clock`, and its store.
fn limited(
    config: ServiceConfig,
    clock: Arc<resumable_core::ManualClock>,
) -> (UploadService, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::default());
    let service = UploadService::new(
        store.clone(),
        Arc::new(MemoryLocker::new(Duration::from_secs(5))),
        clock,
        config,
    );
    (service, store)
}

#[tokio::test]
async fn metadata_over_the_limit_creates_nothing_whichever_way_it_comes() {
    use resumable_core::Store;
    let config = ServiceConfig {
        max_metadata_size: Some(64),
        ..ServiceConfig::default()
    };
    let (service, store) = limited(config, Arc::default());
    // "filename " + base64 of 41 bytes (56) = 65 bytes encoded: one over.
    let mut big = Metadata::default();
    big.insert("filename", Some(vec![b'a'; 41])).unwrap();
    assert_eq!(big.encode_tus().len(), 65);
    let new = NewUpload {
        metadata: big.clone(),
        ..new_upload("alice", Length::Known(3))
    };
    assert!(matches!(
        service.create(new).await,
        Err(UploadError::MetadataTooLarge { size: 65, max: 64 })
    ));
    // A partial upload is a creation too.
    let part = NewUpload {
        metadata: big,
        concat: Some(resumable_core::NewConcat::Partial),
        ..new_upload("alice", Length::Known(3))
    };
    assert!(matches!(
        service.create(part).await,
        Err(UploadError::MetadataTooLarge { .. })
    ));
    assert!(
        store.list(None, usize::MAX).await.unwrap().is_empty(),
        "nothing was created"
    );
    // Up to the limit is fine: 9 + 52 bytes.
    let mut fits = Metadata::default();
    fits.insert("filename", Some(vec![b'a'; 39])).unwrap();
    let new = NewUpload {
        metadata: fits,
        ..new_upload("alice", Length::Known(3))
    };
    service.create(new).await.unwrap();
}

#[tokio::test]
async fn each_creator_gets_its_creations_per_minute_then_waits() {
    let config = ServiceConfig {
        max_creations_per_minute: Some(3),
        ..ServiceConfig::default()
    };
    let clock = Arc::new(resumable_core::ManualClock::default());
    let (service, _store) = limited(config, clock.clone());
    let by = |creator: &str| NewUpload {
        creator: Some(creator.to_owned()),
        ..new_upload("anonymous", Length::Known(3))
    };
    for _ in 0..3 {
        service.create(by("10.0.0.1")).await.unwrap();
    }
    let refused = service.create(by("10.0.0.1")).await;
    let Err(UploadError::TooManyCreations {
        per_minute: 3,
        retry_after,
    }) = refused
    else {
        panic!("{refused:?}");
    };
    // 3 a minute: one every 20 s.
    assert!(retry_after <= Duration::from_secs(20) && retry_after > Duration::from_secs(19));
    // The simple protocol's first request creates too.
    let simple = service
        .open_by_key(
            &Owner::anonymous(),
            "a-1-1",
            Length::Known(1),
            Limits::default(),
            Some("10.0.0.1".into()),
        )
        .await;
    assert!(matches!(simple, Err(UploadError::TooManyCreations { .. })));
    // Another creator is not held back, nor is a creation that counts against nobody.
    service.create(by("10.0.0.2")).await.unwrap();
    service
        .create(new_upload("anonymous", Length::Known(3)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(20));
    service.create(by("10.0.0.1")).await.unwrap();
    assert!(service.create(by("10.0.0.1")).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_body_slower_than_the_minimum_rate_is_cut_with_its_bytes_stored() {
    let config = ServiceConfig {
        body_idle_timeout: Duration::from_secs(60),
        min_body_rate: Some(resumable_core::MinRate {
            bytes_per_second: 100,
            window: Duration::from_secs(2),
        }),
        ..ServiceConfig::default()
    };
    let (service, _store) = limited(config, Arc::default());
    let owner = Owner::anonymous();
    let id = service
        .create(new_upload("anonymous", Length::Known(1000)))
        .await
        .unwrap()
        .info
        .id;
    // Ten bytes a second: never silent for long, far below 100 bytes/s.
    let trickle = futures_util::stream::unfold(0, |sent| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (sent < 1000).then(|| (Ok(Bytes::from_static(b"x")), sent + 1))
    })
    .boxed();
    let append = Append {
        content_length: None,
        body: trickle,
        ..append(0, b"")
    };
    let cut = service.append(&owner, &id, append).await;
    let Err(UploadError::Interrupted { stored, reason }) = cut else {
        panic!("{cut:?}");
    };
    assert_eq!(
        reason,
        BodyError::TooSlow {
            min_bytes_per_second: 100
        }
    );
    // About 2 s of 10 bytes/s, every one of them stored.
    assert!((19..=20).contains(&stored.0), "{stored:?}");
    assert_eq!(service.status(&owner, &id).await.unwrap().offset, stored);
}

/// Counts what the service tells it, per (event, protocol).
#[derive(Default)]
struct Counting(std::sync::Mutex<Vec<(resumable_core::UploadEvent, resumable_core::Protocol)>>);

impl resumable_core::Observer for Counting {
    fn upload(&self, event: resumable_core::UploadEvent, protocol: resumable_core::Protocol) {
        self.0.lock().unwrap().push((event, protocol));
    }
}

impl Counting {
    fn take(&self) -> Vec<(resumable_core::UploadEvent, resumable_core::Protocol)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn the_observer_hears_each_step_of_an_upload_once() {
    use resumable_core::Protocol::{Simple, Tus};
    use resumable_core::UploadEvent::{Completed, Created, Expired, Terminated};
    let clock = Arc::new(resumable_core::ManualClock::default());
    let observer = Arc::new(Counting::default());
    let service = UploadService::new(
        Arc::new(MemoryStore::with_clock(clock.clone())),
        Arc::new(MemoryLocker::new(Duration::from_secs(5))),
        clock.clone(),
        ServiceConfig {
            expire_after: Some(Duration::from_secs(3600)),
            ..ServiceConfig::default()
        },
    )
    .with_observer(observer.clone());
    let owner = Owner::new("a");

    // Completed by the append that stores its last byte, not by the one before, nor by a
    // status or an empty append afterwards.
    let id = create(&service, "a", Length::Known(6)).await;
    assert_eq!(observer.take(), [(Created, Tus)]);
    service
        .append(&owner, &id, append(0, b"abc"))
        .await
        .unwrap();
    assert_eq!(observer.take(), []);
    service
        .append(&owner, &id, append(3, b"def"))
        .await
        .unwrap();
    service.status(&owner, &id).await.unwrap();
    service.append(&owner, &id, append(6, b"")).await.unwrap();
    assert_eq!(observer.take(), [(Completed, Tus)]);

    // An empty upload is complete at its creation; a deferred one when its length is declared.
    create(&service, "a", Length::Known(0)).await;
    assert_eq!(observer.take(), [(Created, Tus), (Completed, Tus)]);
    let deferred = create(&service, "a", Length::Deferred).await;
    service
        .append(&owner, &deferred, append(0, b"xy"))
        .await
        .unwrap();
    let declaring = Append {
        declared_length: Some(2),
        ..append(2, b"")
    };
    service.append(&owner, &deferred, declaring).await.unwrap();
    assert_eq!(observer.take(), [(Created, Tus), (Completed, Tus)]);

    // Removed by its client, or by expiry: told apart.
    service.terminate(&owner, &id).await.unwrap();
    assert_eq!(observer.take(), [(Terminated, Tus)]);
    let key = service
        .open_by_key(
            &owner,
            "seed-file",
            Length::Known(9),
            Limits::default(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(observer.take(), [(Created, Simple)]);
    let unfinished = create(&service, "a", Length::Known(6)).await;
    assert_eq!(observer.take(), [(Created, Tus)]);
    clock.advance(Duration::from_secs(3601));
    assert_eq!(service.remove_expired().await.unwrap().removed, 2);
    let mut expired = observer.take();
    expired.sort_by_key(|(_, protocol)| protocol.as_str());
    assert_eq!(expired, [(Expired, Simple), (Expired, Tus)]);
    for id in [key, unfinished] {
        assert!(matches!(
            service.status(&owner, &id).await,
            Err(UploadError::NotFound)
        ));
    }
}
