//! A store that takes requests and never answers (a hung S3, as Garage once was under load in
//! our tests) makes the store's operations fail as unavailable within the request timeout and
//! the SDK's retries, instead of hanging the request that waits on them.

use resumable_core::{Store, StoreError, UploadId};
use resumable_s3::{S3Credentials, S3Store, S3StoreConfig};
use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Accepts connections on 127.0.0.1 and reads whatever comes, answering nothing.
fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(mut connection) = connection else {
                continue;
            };
            std::thread::spawn(move || {
                let mut sink = [0_u8; 16 * 1024];
                while matches!(connection.read(&mut sink), Ok(read) if read > 0) {}
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_answers_fails_the_operation_instead_of_hanging_it() {
    let mut config = S3StoreConfig::new("bucket");
    config.endpoint = Some(black_hole());
    config.region = "garage".into();
    config.credentials = Some(S3Credentials {
        access_key_id: "key".into(),
        secret_access_key: "secret".into(),
    });
    config.request_timeout = Duration::from_millis(300);
    let store = S3Store::connect(config).await.expect("connect");
    let started = Instant::now();
    let answered =
        tokio::time::timeout(Duration::from_secs(60), store.status(&UploadId::random())).await;
    let elapsed = started.elapsed();
    let result = answered.expect("the status hung: no request timeout");
    match result {
        Err(StoreError::Backend(error)) => {
            assert_eq!(
                error.kind(),
                resumable_core::BackendKind::Unavailable,
                "{error}"
            );
        }
        other => panic!("expected the store to be unavailable, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}
