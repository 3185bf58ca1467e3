//! `Moto`: it answers S3 with its bucket, and it enforces the 5 MiB minimum part size that
//! Garage does not (the reason it is here).

use resumable_testkit::http::{self, Response};
use resumable_testkit::{Moto, require};
use std::net::SocketAddr;
use std::time::Instant;

const MIB: usize = 1 << 20;

/// moto does not check signatures: these requests carry none.
fn send(address: SocketAddr, method: &str, target: &str, body: &[u8]) -> Response {
    // Without a content type, moto's web framework takes a PUT body for a form.
    let headers = [("Content-Type", "application/octet-stream")];
    http::exchange(address, method, target, &headers, body)
        .unwrap_or_else(|error| panic!("{method} {target}: {error}"))
}

/// Creates a multipart upload of `key`, uploads `parts`, and returns the answer to
/// CompleteMultipartUpload.
fn multipart(moto: &Moto, key: &str, parts: &[usize]) -> Response {
    let (address, bucket) = (moto.address(), moto.bucket());
    let created = send(address, "POST", &format!("/{bucket}/{key}?uploads"), b"");
    assert_eq!(created.status, 200, "{}", created.text());
    let text = created.text();
    let upload_id = text
        .split_once("<UploadId>")
        .and_then(|(_, rest)| rest.split_once("</UploadId>"))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("no UploadId in {text}"));
    let mut listed = String::new();
    for (index, size) in parts.iter().enumerate() {
        let number = index + 1;
        let target = format!("/{bucket}/{key}?partNumber={number}&uploadId={upload_id}");
        let part = send(address, "PUT", &target, &vec![b'x'; *size]);
        assert_eq!(part.status, 200, "part {number}: {}", part.text());
        let etag = part.header("ETag").expect("an ETag for each part");
        listed.push_str(&format!(
            "<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>"
        ));
    }
    let body = format!("<CompleteMultipartUpload>{listed}</CompleteMultipartUpload>");
    let target = format!("/{bucket}/{key}?uploadId={upload_id}");
    send(address, "POST", &target, body.as_bytes())
}

#[test]
fn moto_refuses_parts_under_5_mib_except_the_last() {
    let started = Instant::now();
    let Some(moto) = require(Moto::start(), "RESUMABLE_REQUIRE_S3") else {
        return;
    };
    eprintln!("moto_server started in {:?}", started.elapsed());
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(moto.region(), "us-east-1");

    let listed = send(
        moto.address(),
        "GET",
        &format!("/{}?list-type=2", moto.bucket()),
        b"",
    );
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(
        listed.text().contains("<KeyCount>0</KeyCount>"),
        "{}",
        listed.text()
    );

    let small = multipart(&moto, "small", &[MIB, MIB]);
    assert_eq!(small.status, 400, "{}", small.text());
    assert!(small.text().contains("EntityTooSmall"), "{}", small.text());

    // The same with a first part of exactly 5 MiB completes: the last part may be small.
    let enough = multipart(&moto, "enough", &[5 * MIB, MIB]);
    assert_eq!(enough.status, 200, "{}", enough.text());
    let head = send(
        moto.address(),
        "HEAD",
        &format!("/{}/enough", moto.bucket()),
        b"",
    );
    assert_eq!(head.header("Content-Length"), Some("6291456"));
}
