//! The S3 store against moto's server mode, a strict S3 (non-last parts under 5 MiB are
//! refused, as AWS does): the store conformance kit, unchanged, and what is particular to S3.

mod common;
mod s3_checks;

use std::sync::Arc;

async fn store(clock: Arc<dyn resumable_core::Clock>) -> (resumable_s3::S3Store, common::Bucket) {
    let bucket = common::Bucket::new(common::moto()).await;
    let store = bucket.store(bucket.config_with_clock(clock)).await;
    (store, bucket)
}

resumable_core::store_conformance_tests!(store);

s3_checks::s3_tests!(common::moto);

/// The strict server is strict: a multipart upload whose first part is under 5 MiB cannot be
/// completed (what a store that sent every small PATCH as a part would hit on AWS).
#[tokio::test]
async fn the_strict_server_refuses_small_non_last_parts() {
    s3_checks::small_non_last_parts_are_refused(common::moto()).await;
}

/// 64 MiB in 256 KiB appends make 12 parts of 5 MiB, and complete on the strict server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_appends_make_whole_parts_and_complete_on_the_strict_server() {
    s3_checks::large_upload_in_small_patches(common::moto(), 64 << 20, Some(5 << 20)).await;
}
