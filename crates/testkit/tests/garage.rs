//! `Garage`: it comes up in seconds with a key and a bucket, checks signatures, and stores
//! what a signed request puts.

use resumable_testkit::http::{self, Response};
use resumable_testkit::sigv4::{self, Signer, Unsigned};
use resumable_testkit::{Garage, require};
use std::time::{Instant, SystemTime};

/// Sends a request signed by `signer` (the body's hash signed too).
fn signed(
    garage: &Garage,
    signer: &Signer,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let host = garage.address().to_string();
    let payload = sigv4::sha256_hex(body);
    let unsigned = Unsigned {
        method,
        host: &host,
        path,
        query,
        headers: &[],
        payload_sha256: &payload,
    };
    let headers = signer.sign(&unsigned, SystemTime::now());
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let mut target = sigv4::encode_path(path);
    if !query.is_empty() {
        target = format!("{target}?{}", sigv4::canonical_query(query));
    }
    http::exchange(garage.address(), method, &target, &headers, body)
        .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
}

#[test]
fn garage_stores_signed_puts_and_refuses_unsigned_and_forged_requests() {
    let started = Instant::now();
    let Some(garage) = require(Garage::start(), "RESUMABLE_REQUIRE_S3") else {
        return;
    };
    // Startup is part of every S3 test's time: keep an eye on it.
    eprintln!("garage started in {:?}", started.elapsed());
    assert!(garage.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(garage.region(), "garage");
    assert!(
        garage.access_key_id().starts_with("GK"),
        "{}",
        garage.access_key_id()
    );
    let (signer, bucket) = (garage.signer(), garage.bucket());

    let unsigned = http::exchange(garage.address(), "GET", &format!("/{bucket}"), &[], b"")
        .expect("an unsigned ListObjects");
    assert_eq!(unsigned.status, 403, "{}", unsigned.text());
    let forged = Signer::new(garage.access_key_id(), "not-the-secret", garage.region());
    let refused = signed(&garage, &forged, "GET", &format!("/{bucket}"), &[], b"");
    assert_eq!(refused.status, 403, "{}", refused.text());

    let key = format!("/{bucket}/some dir/object");
    let put = signed(&garage, &signer, "PUT", &key, &[], b"hello garage");
    assert_eq!(put.status, 200, "{}", put.text());
    let got = signed(&garage, &signer, "GET", &key, &[], b"");
    assert_eq!((got.status, got.text().as_str()), (200, "hello garage"));
    let listed = signed(
        &garage,
        &signer,
        "GET",
        &format!("/{bucket}"),
        &[("list-type", "2")],
        b"",
    );
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(
        listed.text().contains("<Key>some dir/object</Key>"),
        "{}",
        listed.text()
    );
}

#[test]
fn a_dropped_garage_is_gone() {
    let Some(garage) = require(Garage::start(), "RESUMABLE_REQUIRE_S3") else {
        return;
    };
    let (address, dir) = (garage.address(), garage.dir().to_owned());
    drop(garage);
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "Drop must kill the server"
    );
    assert!(!dir.exists(), "Drop must remove the node's directory");
}
