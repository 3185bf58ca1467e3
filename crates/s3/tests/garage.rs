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
