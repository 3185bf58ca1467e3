//! The locker conformance kit on two `RedisLocker`s ("nodes") sharing one redis-server.

mod common;

use resumable_core::Locker;
use resumable_redis::{RedisLocker, RedisLockerConfig};
use std::sync::Arc;

resumable_core::locker_conformance_tests!(|wait| async move {
    let server = common::redis()?;
    let config = RedisLockerConfig {
        wait_timeout: wait,
        ..RedisLockerConfig::new(server.url())
    };
    let first = RedisLocker::connect(config.clone()).await.expect("connect");
    let second = RedisLocker::connect(config).await.expect("connect");
    Some((
        Arc::new(first) as Arc<dyn Locker>,
        Arc::new(second) as Arc<dyn Locker>,
        server,
    ))
});
