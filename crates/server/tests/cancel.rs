//! Requests cut mid-body — an HTTP/2 stream reset, an HTTP/1.1 connection reset — leave the
//! offset true: only synced, verified bytes count. hyper drops a handler whose HTTP/2 stream is
//! reset, so what an append does after its body (the last write, the sync, the checksum's
//! verdict) must not depend on the handler living on.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use common::{OCTETS, TestServer, pattern, sha256};
use reqwest::StatusCode;
use resumable_core::ServiceConfig;
use sha2::Digest;
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;

const LENGTH: usize = 8 << 20;
/// What the client sends before it gives up on the request.
const SENT: usize = 4 << 20;
/// How far the server's clock is moved before the cut (less than the day uploads live): the
/// last trip of an append stamps the data file with the service's clock, so `Upload-Expires`
/// tells whether it ran.
const AHEAD: Duration = Duration::from_secs(20 * 60 * 60);

async fn server() -> TestServer {
    TestServer::start_with(ServiceConfig {
        max_size: Some(64 << 20),
        ..common::config()
    })
    .await
}

async fn create(server: &TestServer) -> String {
    let response = common::tus(server, reqwest::Method::POST, "/files/")
        .header("Upload-Length", LENGTH.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    common::path_of(&response)
}

fn wrong_checksum() -> String {
    format!(
        "sha256 {}",
        STANDARD.encode(sha2::Sha256::digest(b"not it"))
    )
}

/// Opens an HTTP/2 (prior knowledge) PATCH of `LENGTH` bytes at offset 0 and sends the first
/// `SENT` of `data`, returning the stream so the caller can reset it.
async fn h2_patch(
    server: &TestServer,
    path: &str,
    data: &[u8],
    checksum: Option<&str>,
) -> (h2::SendStream<Bytes>, h2::client::ResponseFuture) {
    let tcp = TcpStream::connect(server.address).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut request = http::Request::builder()
        .method("PATCH")
        .uri(server.url(path))
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", OCTETS)
        .header("content-length", LENGTH);
    if let Some(checksum) = checksum {
        request = request.header("upload-checksum", checksum);
    }
    let (response, mut stream) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    let mut rest = &data[..SENT];
    while !rest.is_empty() {
        stream.reserve_capacity(rest.len());
        let capacity = std::future::poll_fn(|context| stream.poll_capacity(context))
            .await
            .expect("stream open")
            .expect("capacity");
        let (now, later) = rest.split_at(capacity.min(rest.len()));
        stream
            .send_data(Bytes::copy_from_slice(now), false)
            .unwrap();
        rest = later;
    }
    (stream, response)
}

/// `Upload-Offset` and `Upload-Expires` of a HEAD, once the request before it has let go.
async fn offset_and_expiry(server: &TestServer, path: &str) -> (u64, SystemTime) {
    let response = common::head(server, path).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    let expires = resumable_proto::expires::parse(&text("upload-expires")).expect("a date");
    (text("upload-offset").parse().unwrap(), expires)
}

fn stored(server: &TestServer, path: &str) -> Vec<u8> {
    let id = path.trim_start_matches("/files/");
    std::fs::read(server.data_dir.join("uploads").join(format!("{id}.bin"))).unwrap()
}

#[tokio::test]
async fn an_http2_reset_mid_patch_keeps_what_arrived_synced() {
    let server = server().await;
    let path = create(&server).await;
    let data = pattern(LENGTH, 11);
    let (mut stream, response) = h2_patch(&server, &path, &data, None).await;
    server
        .eventually(|| async { (server.stored_bytes() > 0).then_some(()) })
        .await;
    server.clock.advance(AHEAD);
    stream.send_reset(h2::Reason::CANCEL);
    drop(response);
    let (offset, expires) = offset_and_expiry(&server, &path).await;
    assert!(offset > 0 && offset <= SENT as u64, "offset {offset}");
    let on_disk = stored(&server, &path);
    assert_eq!(
        on_disk.len() as u64,
        offset,
        "every counted byte, and no more"
    );
    assert!(on_disk[..] == data[..on_disk.len()], "the client's bytes");
    // The append's last trip (the one that syncs) ran after the cut: it stamped the file.
    let stamped = SystemTime::now() + AHEAD + Duration::from_secs(23 * 60 * 60);
    // (Without the stamp the file keeps the kernel's time of its last write: a day from now.)
    assert!(expires > stamped, "the append ended without its last trip");
    // And the upload goes on from there.
    let rest = common::tus(&server, reqwest::Method::PATCH, &path)
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", OCTETS)
        .body(data[offset as usize..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        sha256(&common::download(&server, &path).await),
        sha256(&data)
    );
}

#[tokio::test]
async fn an_http2_reset_mid_patch_counts_no_byte_of_an_unverified_chunk() {
    let server = server().await;
    let path = create(&server).await;
    let data = pattern(LENGTH, 12);
    let checksum = wrong_checksum();
    let (mut stream, response) = h2_patch(&server, &path, &data, Some(&checksum)).await;
    server
        .eventually(|| async { (server.bytes_in("staged") > 0).then_some(()) })
        .await;
    stream.send_reset(h2::Reason::CANCEL);
    drop(response);
    assert_eq!(offset_and_expiry(&server, &path).await.0, 0);
    assert_eq!(server.stored_bytes(), 0);
    server
        .eventually(|| async { (server.bytes_in("staged") == 0).then_some(()) })
        .await;
}

#[tokio::test]
async fn an_http1_connection_reset_mid_patch_counts_no_byte_of_an_unverified_chunk() {
    let server = server().await;
    let path = create(&server).await;
    let data = pattern(LENGTH, 13);
    let checksum = format!("Upload-Checksum: {}\r\n", wrong_checksum());
    let head = common::patch_head(&path, LENGTH, &checksum);
    let connection = server.send_partial(&head, &data[..SENT]).await;
    server
        .eventually(|| async { (server.bytes_in("staged") > 0).then_some(()) })
        .await;
    // A reset, not an orderly close: no lingering, the kernel answers RST.
    connection.set_zero_linger().unwrap();
    drop(connection);
    assert_eq!(offset_and_expiry(&server, &path).await.0, 0);
    assert_eq!(server.stored_bytes(), 0);
}

#[tokio::test]
async fn an_http1_connection_reset_mid_patch_keeps_what_arrived() {
    let server = server().await;
    let path = create(&server).await;
    let data = pattern(LENGTH, 14);
    let head = common::patch_head(&path, LENGTH, "");
    let connection = server.send_partial(&head, &data[..SENT]).await;
    server
        .eventually(|| async { (server.stored_bytes() > 0).then_some(()) })
        .await;
    connection.set_zero_linger().unwrap();
    drop(connection);
    let (offset, _) = offset_and_expiry(&server, &path).await;
    assert!(offset > 0 && offset <= SENT as u64, "offset {offset}");
    let on_disk = stored(&server, &path);
    assert_eq!(on_disk.len() as u64, offset);
    assert!(on_disk[..] == data[..on_disk.len()]);
}
