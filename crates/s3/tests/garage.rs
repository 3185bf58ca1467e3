//! The S3 store against a single-node Garage: the store conformance kit, unchanged, and what
//! is particular to S3.

mod common;
mod s3_checks;

use std::sync::Arc;

async fn store(clock: Arc<dyn resumable_core::Clock>) -> (resumable_s3::S3Store, common::Bucket) {
    let bucket = common::Bucket::new(common::garage()).await;
    let store = bucket.store(bucket.config_with_clock(clock)).await;
    (store, bucket)
}

resumable_core::store_conformance_tests!(store);

s3_checks::s3_tests!(common::garage);

/// 1 GiB in 256 KiB appends (4,096 of them) ends with 128 parts of 8 MiB, the part size chosen
/// for its length, not 4,096 tiny parts; it completes and reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_in_small_appends_makes_parts_of_the_part_size() {
    s3_checks::large_upload_in_small_patches(common::garage(), 1 << 30, None).await;
}
