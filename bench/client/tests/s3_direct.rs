//! `resumable-bench s3-direct` against real S3 stores from the testkit: moto, which refuses
//! parts under 5 MiB, and Garage, which checks signatures. Checks the baseline uploads what it
//! reports, not how fast.

use resumable_testkit::{Garage, Moto, require};
use serde_json::Value;
use std::process::Command;

const MIB: u64 = 1 << 20;

struct Store {
    endpoint: String,
    bucket: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
}

/// Runs the subcommand and returns its report.
fn direct(store: &Store, prefix: &str, size: u64, uploads: usize) -> Value {
    direct_with(store, prefix, size, uploads, &[])
}

/// The same, with `extra` arguments.
fn direct_with(store: &Store, prefix: &str, size: u64, uploads: usize, extra: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_resumable-bench"))
        .args([
            "s3-direct",
            "--endpoint",
            &store.endpoint,
            "--bucket",
            &store.bucket,
        ])
        .args(["--region", &store.region, "--prefix", prefix])
        .args([
            "--size",
            &size.to_string(),
            "--uploads",
            &uploads.to_string(),
        ])
        .args([
            "--part-size",
            "5MiB",
            "--connections",
            "4",
            "--deadline",
            "60s",
        ])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", &store.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &store.secret_access_key)
        .output()
        .expect("run resumable-bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON report")
}

/// Multipart objects (two full parts and a short one) and single-`PutObject` ones.
fn uploads_are_complete(store: &Store) {
    let size = 11 * MIB;
    let report = direct(store, "multi/", size, 3);
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["completed"], 3, "{report}");
    assert_eq!(report["bytes"], 3 * size, "{report}");

    let report = direct(store, "single/", MIB, 2);
    assert_eq!(report["completed"], 2, "{report}");
    assert_eq!(report["bytes"], 2 * MIB, "{report}");
}

#[test]
fn direct_uploads_to_moto_respect_the_minimum_part_size() {
    let Some(moto) = require(Moto::start(), "RESUMABLE_REQUIRE_S3") else {
        return;
    };
    uploads_are_complete(&Store {
        endpoint: moto.endpoint(),
        bucket: moto.bucket().into(),
        region: moto.region().into(),
        access_key_id: moto.access_key_id().into(),
        secret_access_key: moto.secret_access_key().into(),
    });
}

#[test]
fn direct_uploads_to_garage_are_signed_and_complete() {
    let Some(garage) = require(Garage::start(), "RESUMABLE_REQUIRE_S3") else {
        return;
    };
    let store = Store {
        endpoint: garage.endpoint(),
        bucket: garage.bucket().into(),
        region: garage.region().into(),
        access_key_id: garage.access_key_id().into(),
        secret_access_key: garage.secret_access_key().into(),
    };
    uploads_are_complete(&store);
    // Parts whose signature covers their bytes: Garage hashes them and compares.
    let report = direct_with(&store, "signed/", 11 * MIB, 2, &["--signed-payload"]);
    assert_eq!(report["completed"], 2, "{report}");
    assert_eq!(report["bytes"], 22 * MIB, "{report}");
    // A wrong secret must fail: the figures are of requests the store really accepted.
    let forged = Store {
        secret_access_key: "not-the-secret".into(),
        ..store
    };
    let report = direct(&forged, "forged/", MIB, 1);
    assert_eq!(report["completed"], 0, "{report}");
    assert_eq!(report["errors"], 1, "{report}");
}
