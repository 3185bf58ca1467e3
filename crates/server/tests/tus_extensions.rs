//! The tus extensions beyond creation and termination, one test per rule of the spec
//! (expiration, checksum, checksum-trailer, concatenation, concatenation-unfinished). After every
//! rejection the stored bytes are checked unchanged.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{OCTETS, TestServer, download, head, offset, options, path_of, pattern, sha256, tus};
use reqwest::{Method, StatusCode};
use sha2::Digest;
use std::time::{Duration, SystemTime};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

async fn create(server: &TestServer, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = tus(server, Method::POST, "/files/");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn create_path(server: &TestServer, headers: &[(&str, &str)]) -> String {
    let response = create(server, headers).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    path_of(&response)
}

async fn patch(
    server: &TestServer,
    path: &str,
    offset: u64,
    body: &[u8],
    checksum: Option<&str>,
) -> reqwest::Response {
    let mut request = tus(server, Method::PATCH, path)
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", OCTETS)
        .body(body.to_vec());
    if let Some(checksum) = checksum {
        request = request.header("Upload-Checksum", checksum);
    }
    request.send().await.unwrap()
}

fn expires_in(response: &reqwest::Response) -> Duration {
    let value = response.headers()["upload-expires"].to_str().unwrap();
    let expires = resumable_proto::expires::parse(value).expect("an HTTP date");
    expires
        .duration_since(SystemTime::now())
        .expect("in the future")
}

// ---- expiration ----

#[tokio::test]
async fn expiration_is_advertised() {
    let server = TestServer::start().await;
    let response = options(&server).await;
    let extensions = response.headers()["tus-extension"]
        .to_str()
        .unwrap()
        .to_owned();
    for extension in [
        "expiration",
        "checksum",
        "checksum-trailer",
        "concatenation",
        "concatenation-unfinished",
    ] {
        assert!(
            extensions.split(',').any(|name| name == extension),
            "{extensions}"
        );
    }
}

#[tokio::test]
async fn expiration_upload_expires_is_sent_on_post_patch_and_head_of_unfinished_uploads() {
    let server = TestServer::start().await;
    let created = create(&server, &[("Upload-Length", "10")]).await;
    let around_a_day = |left: Duration| left > DAY - Duration::from_secs(60) && left <= DAY;
    assert!(around_a_day(expires_in(&created)));
    let path = path_of(&created);
    let patched = patch(&server, &path, 0, b"abc", None).await;
    assert!(around_a_day(expires_in(&patched)));
    assert!(around_a_day(expires_in(&head(&server, &path).await)));
}

#[tokio::test]
async fn expiration_finished_uploads_never_expire() {
    let server = TestServer::start().await;
    let path = create_path(&server, &[("Upload-Length", "3")]).await;
    let finished = patch(&server, &path, 0, b"abc", None).await;
    assert!(finished.headers().get("upload-expires").is_none());
    server.clock.advance(30 * DAY);
    assert_eq!(server.service.remove_expired().await.unwrap().removed, 0);
    assert!(
        head(&server, &path)
            .await
            .headers()
            .get("upload-expires")
            .is_none()
    );
    assert_eq!(download(&server, &path).await, b"abc");
}

#[tokio::test]
async fn expiration_expired_uploads_answer_410_until_swept_then_404() {
    let server = TestServer::start().await;
    let path = create_path(&server, &[("Upload-Length", "10")]).await;
    patch(&server, &path, 0, b"abc", None).await;
    server.clock.advance(DAY + Duration::from_secs(1));
    assert_eq!(head(&server, &path).await.status(), StatusCode::GONE);
    let late = patch(&server, &path, 3, b"def", None).await;
    assert_eq!(late.status(), StatusCode::GONE);
    assert_eq!(server.stored_bytes(), 3);

    assert_eq!(server.service.remove_expired().await.unwrap().removed, 1);
    assert_eq!(head(&server, &path).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(server.stored_bytes(), 0);
}

/// When `response`'s `Upload-Expires` falls, seen from the server's clock.
fn expires_after(server: &TestServer, response: &reqwest::Response) -> Duration {
    use resumable_core::Clock;
    let value = response.headers()["upload-expires"].to_str().unwrap();
    let expires = resumable_proto::expires::parse(value).expect("an HTTP date");
    expires
        .duration_since(server.clock.now())
        .expect("in the future")
}

#[tokio::test]
async fn expiration_counts_from_the_last_write() {
    // Far more than the test takes in real time, which the server's clock also counts.
    const MARGIN: Duration = Duration::from_secs(600);
    let server = TestServer::start().await;
    let path = create_path(&server, &[("Upload-Length", "10")]).await;
    server.clock.advance(DAY - MARGIN);
    let written = patch(&server, &path, 0, b"abc", None).await;
    assert_eq!(written.status(), StatusCode::NO_CONTENT);

    // A day after the creation but not after the write: the upload lives, and says until when.
    server.clock.advance(2 * MARGIN);
    let alive = head(&server, &path).await;
    assert_eq!(alive.status(), StatusCode::OK);
    let left = expires_after(&server, &alive);
    assert!(
        left <= DAY - 2 * MARGIN && left > DAY - 3 * MARGIN,
        "expires in {left:?}, not a day after the write"
    );
    assert_eq!(server.service.remove_expired().await.unwrap().removed, 0);
    assert_eq!(offset(&server, &path).await, 3);

    // A day after the write: expired, then swept.
    server.clock.advance(DAY - MARGIN);
    assert_eq!(head(&server, &path).await.status(), StatusCode::GONE);
    assert_eq!(server.service.remove_expired().await.unwrap().removed, 1);
    assert_eq!(head(&server, &path).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(server.stored_bytes(), 0);
}

#[tokio::test]
async fn expiration_the_server_sweeps_expired_uploads_by_itself() {
    // Ten seconds, so the server sweeps every second (a tenth of the period, at least 1 s).
    let server = TestServer::start_with(resumable_core::ServiceConfig {
        expire_after: Some(Duration::from_secs(10)),
        ..common::config()
    })
    .await;
    let unfinished = create_path(&server, &[("Upload-Length", "10")]).await;
    patch(&server, &unfinished, 0, b"abc", None).await;
    let finished = create_path(&server, &[("Upload-Length", "3")]).await;
    patch(&server, &finished, 0, b"xyz", None).await;
    server.clock.advance(Duration::from_secs(11));
    // Nothing here calls remove_expired, and watching the data dir takes nothing over: only
    // the server's own sweep can remove the upload. Thirty seconds for a one-second timer on
    // a loaded machine.
    common::eventually_within(Duration::from_secs(30), || async {
        (server.upload_count() == 1).then_some(())
    })
    .await;
    assert_eq!(
        head(&server, &unfinished).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.stored_bytes(), 3);
    assert_eq!(download(&server, &finished).await, b"xyz");
}

// ---- checksum ----

fn checksum(algorithm: &str, bytes: &[u8]) -> String {
    let digest: Vec<u8> = match algorithm {
        "sha1" => sha1::Sha1::digest(bytes).to_vec(),
        "md5" => md5::Md5::digest(bytes).to_vec(),
        "sha256" => sha2::Sha256::digest(bytes).to_vec(),
        "sha512" => sha2::Sha512::digest(bytes).to_vec(),
        "crc32" => crc32fast::hash(bytes).to_be_bytes().to_vec(),
        other => panic!("no {other}"),
    };
    format!("{algorithm} {}", STANDARD.encode(digest))
}

#[tokio::test]
async fn checksum_options_lists_the_algorithms_including_sha1() {
    let server = TestServer::start().await;
    let response = options(&server).await;
    assert_eq!(
        response.headers()["tus-checksum-algorithm"],
        "sha1,md5,sha256,sha512,crc32"
    );
}

#[tokio::test]
async fn checksum_a_matching_chunk_is_stored_with_every_algorithm() {
    let server = TestServer::start().await;
    let data = pattern(5 * 70_000, 6);
    let path = create_path(&server, &[("Upload-Length", &data.len().to_string())]).await;
    for (index, algorithm) in ["sha1", "md5", "sha256", "sha512", "crc32"]
        .into_iter()
        .enumerate()
    {
        let chunk = &data[index * 70_000..(index + 1) * 70_000];
        let expected = checksum(algorithm, chunk);
        let response = patch(
            &server,
            &path,
            (index * 70_000) as u64,
            chunk,
            Some(&expected),
        )
        .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{algorithm}");
    }
    assert_eq!(sha256(&download(&server, &path).await), sha256(&data));
}

#[tokio::test]
async fn checksum_mismatch_is_460_and_the_chunk_is_discarded() {
    let server = TestServer::start().await;
    let path = create_path(&server, &[("Upload-Length", "10")]).await;
    patch(&server, &path, 0, b"abc", None).await;
    let wrong = checksum("sha1", b"not these bytes");
    let response = patch(&server, &path, 3, b"defg", Some(&wrong)).await;
    assert_eq!(response.status().as_u16(), 460);
    assert_eq!(response.headers()["upload-offset"], "3");
    assert_eq!(offset(&server, &path).await, 3);
    assert_eq!(server.stored_bytes(), 3);
    let right = checksum("sha1", b"defg");
    let response = patch(&server, &path, 3, b"defg", Some(&right)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset(&server, &path).await, 7);
}

#[tokio::test]
async fn checksum_an_unsupported_algorithm_or_malformed_value_is_400_and_writes_nothing() {
    let server = TestServer::start().await;
    let path = create_path(&server, &[("Upload-Length", "10")]).await;
    for bad in [
        "whirlpool AAAA",
        "sha1",
        "sha1 %%%",
        "SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
    ] {
        let response = patch(&server, &path, 0, b"abc", Some(bad)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(offset(&server, &path).await, 0);
    assert_eq!(server.stored_bytes(), 0);
}

#[tokio::test]
async fn checksum_an_interrupted_checksummed_chunk_is_discarded() {
    let server = TestServer::start().await;
    let data = pattern(100_000, 1);
    let path = create_path(&server, &[("Upload-Length", "100000")]).await;
    let checksum_line = format!("Upload-Checksum: {}\r\n", checksum("sha256", &data));
    let head_of_request = common::patch_head(&path, 100_000, &checksum_line);
    let connection = server.send_partial(&head_of_request, &data[..30_000]).await;
    // The bytes arrive, set aside: the data file never holds an unverified byte.
    server
        .eventually(|| async { (server.bytes_in("staged") == 30_000).then_some(()) })
        .await;
    assert_eq!(server.stored_bytes(), 0);
    // The chunk cannot be verified, so it must not count: HEAD takes over and sees 0.
    assert_eq!(offset(&server, &path).await, 0);
    assert_eq!(server.stored_bytes(), 0);
    assert_eq!(server.bytes_in("staged"), 0, "discarded");
    drop(connection);
}

async fn chunked_patch_with_trailer(
    server: &TestServer,
    path: &str,
    body: &[u8],
    trailer: Option<&str>,
) -> String {
    let trailers: Vec<String> = trailer.iter().map(|value| value.to_string()).collect();
    chunked_patch(server, path, body, true, &trailers).await
}

/// A raw chunked PATCH at offset 0 whose trailer section holds an `Upload-Checksum` line per
/// entry of `checksums`; `announced` sends `Trailer: Upload-Checksum` in the head.
async fn chunked_patch(
    server: &TestServer,
    path: &str,
    body: &[u8],
    announced: bool,
    checksums: &[String],
) -> String {
    let announcement = if announced {
        "Trailer: Upload-Checksum\r\n"
    } else {
        ""
    };
    let mut request = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: {OCTETS}\r\nTransfer-Encoding: chunked\r\n{announcement}\
         Connection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n");
    for checksum in checksums {
        request.extend_from_slice(format!("Upload-Checksum: {checksum}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    server.raw(&request).await
}

#[tokio::test]
async fn checksum_trailer_is_verified_after_the_body() {
    let server = TestServer::start().await;
    let data = pattern(5000, 9);
    let path = create_path(&server, &[("Upload-Length", "5000")]).await;

    let wrong =
        chunked_patch_with_trailer(&server, &path, &data, Some(&checksum("md5", b"x"))).await;
    assert!(
        wrong.starts_with("HTTP/1.1 460 Checksum Mismatch\r\n"),
        "{wrong}"
    );
    assert_eq!(offset(&server, &path).await, 0);

    let missing = chunked_patch_with_trailer(&server, &path, &data, None).await;
    assert!(missing.starts_with("HTTP/1.1 400"), "{missing}");
    assert_eq!(offset(&server, &path).await, 0);

    let right =
        chunked_patch_with_trailer(&server, &path, &data, Some(&checksum("crc32", &data))).await;
    assert!(right.starts_with("HTTP/1.1 204"), "{right}");
    assert_eq!(download(&server, &path).await, data);
}

#[tokio::test]
async fn checksum_trailer_that_was_not_announced_is_refused_as_unverified() {
    let server = TestServer::start().await;
    let data = pattern(5000, 3);
    let path = create_path(&server, &[("Upload-Length", "6000")]).await;
    // Even a right checksum: the server did not expect it, so it did not digest the body, and
    // the bytes (counted as they arrived, as in any unannounced PATCH) were not checked. The
    // answer says both, so the client does not take the chunk for verified.
    let unannounced = chunked_patch(&server, &path, &data, false, &[checksum("sha1", &data)]).await;
    assert!(unannounced.starts_with("HTTP/1.1 400"), "{unannounced}");
    assert!(unannounced.contains("upload-offset: 5000"), "{unannounced}");
    assert_eq!(offset(&server, &path).await, 5000);
    // Without any trailer, an unannounced chunked PATCH is an ordinary one.
    let path = create_path(&server, &[("Upload-Length", "5000")]).await;
    let plain = chunked_patch(&server, &path, &data, false, &[]).await;
    assert!(plain.starts_with("HTTP/1.1 204"), "{plain}");
    assert_eq!(download(&server, &path).await, data);
}

#[tokio::test]
async fn checksum_trailer_given_twice_is_refused_and_the_chunk_discarded() {
    let server = TestServer::start().await;
    let data = pattern(5000, 4);
    let path = create_path(&server, &[("Upload-Length", "5000")]).await;
    let twice = [checksum("sha1", &data), checksum("md5", b"other")];
    let response = chunked_patch(&server, &path, &data, true, &twice).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert_eq!(offset(&server, &path).await, 0);
    assert_eq!(server.stored_bytes(), 0);
}

// ---- concatenation ----

async fn partial(server: &TestServer, bytes: &[u8]) -> String {
    let length = bytes.len().to_string();
    let path = create_path(
        server,
        &[("Upload-Length", &length), ("Upload-Concat", "partial")],
    )
    .await;
    if !bytes.is_empty() {
        let response = patch(server, &path, 0, bytes, None).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    path
}

#[tokio::test]
async fn concatenation_partial_uploads_echo_partial_and_have_an_offset() {
    let server = TestServer::start().await;
    let path = partial(&server, b"hello").await;
    let response = head(&server, &path).await;
    assert_eq!(response.headers()["upload-concat"], "partial");
    assert_eq!(response.headers()["upload-offset"], "5");
}

#[tokio::test]
async fn concatenation_the_final_upload_is_its_parts_in_order() {
    let server = TestServer::start().await;
    let first = partial(&server, b"hello").await;
    let second = partial(&server, b" world").await;
    let absolute = server.url(&second);
    let concat = format!("final;{first} {absolute}");
    let response = create(&server, &[("Upload-Concat", &concat)]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let path = path_of(&response);
    let described = head(&server, &path).await;
    assert_eq!(described.headers()["upload-length"], "11");
    assert_eq!(described.headers()["upload-offset"], "11");
    assert_eq!(described.headers()["upload-concat"], concat.as_str());
    assert_eq!(download(&server, &path).await, b"hello world");
    // Parts may be used again.
    let again = create(
        &server,
        &[("Upload-Concat", &format!("final;{second} {first}"))],
    )
    .await;
    assert_eq!(download(&server, &path_of(&again)).await, b" worldhello");
}

/// Two empty partial uploads (5 and 6 bytes) and a final upload of them made at once
/// (concatenation-unfinished): their paths.
async fn unfinished_final(server: &TestServer) -> (String, String, String) {
    let first = create_path(
        server,
        &[("Upload-Length", "5"), ("Upload-Concat", "partial")],
    )
    .await;
    let second = create_path(
        server,
        &[("Upload-Length", "6"), ("Upload-Concat", "partial")],
    )
    .await;
    let response = create(
        server,
        &[("Upload-Concat", &format!("final;{first} {second}"))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let path = path_of(&response);
    (first, second, path)
}

#[tokio::test]
async fn concatenation_unfinished_final_completes_when_its_parts_do() {
    let server = TestServer::start().await;
    let (first, second, path) = unfinished_final(&server).await;
    let pending = head(&server, &path).await;
    assert_eq!(pending.headers()["upload-length"], "11");
    assert!(
        pending.headers().get("upload-offset").is_none(),
        "no offset before assembly"
    );
    let early = server.client.get(server.url(&path)).send().await.unwrap();
    assert_eq!(early.status(), StatusCode::CONFLICT);

    patch(&server, &first, 0, b"hello", None).await;
    patch(&server, &second, 0, b" world", None).await;
    assert_eq!(head(&server, &path).await.headers()["upload-offset"], "11");
    assert_eq!(download(&server, &path).await, b"hello world");
}

#[tokio::test]
async fn concatenation_unfinished_final_is_assembled_by_a_download_without_a_head_first() {
    let server = TestServer::start().await;
    let (first, second, path) = unfinished_final(&server).await;
    patch(&server, &first, 0, b"hello", None).await;
    patch(&server, &second, 0, b" world", None).await;
    // The first request after the parts finished is a GET: it assembles, no HEAD needed.
    assert_eq!(download(&server, &path).await, b"hello world");
}

#[tokio::test]
async fn concatenation_a_patch_to_a_final_upload_is_403() {
    let server = TestServer::start().await;
    let first = partial(&server, b"ab").await;
    let path = create_path(&server, &[("Upload-Concat", &format!("final;{first}"))]).await;
    let response = patch(&server, &path, 2, b"cd", None).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(download(&server, &path).await, b"ab");
}

#[tokio::test]
async fn concatenation_a_final_upload_refuses_an_upload_length() {
    let server = TestServer::start().await;
    let first = partial(&server, b"ab").await;
    let concat = format!("final;{first}");
    let response = create(
        &server,
        &[("Upload-Concat", &concat), ("Upload-Length", "2")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn concatenation_parts_must_be_existing_partial_uploads() {
    let server = TestServer::start().await;
    let regular = create_path(&server, &[("Upload-Length", "2")]).await;
    let deferred = create_path(
        &server,
        &[("Upload-Defer-Length", "1"), ("Upload-Concat", "partial")],
    )
    .await;
    let unknown = "/files/0123456789abcdef0123456789abcdef";
    for parts in [
        regular.as_str(),
        deferred.as_str(),
        unknown,
        "/files/../../etc/passwd",
        "",
    ] {
        let response = create(&server, &[("Upload-Concat", &format!("final;{parts}"))]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{parts}");
        assert!(!response.text().await.unwrap().is_empty());
    }
    for malformed in ["partial;x", "final", "whole"] {
        let response = create(
            &server,
            &[("Upload-Concat", malformed), ("Upload-Length", "1")],
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{malformed}");
    }
}

#[tokio::test]
async fn concatenation_a_final_larger_than_the_maximum_is_413() {
    let server = TestServer::start().await;
    let half = (common::MAX_SIZE / 2 + 1).to_string();
    let first = create_path(
        &server,
        &[("Upload-Length", &half), ("Upload-Concat", "partial")],
    )
    .await;
    let second = create_path(
        &server,
        &[("Upload-Length", &half), ("Upload-Concat", "partial")],
    )
    .await;
    let response = create(
        &server,
        &[("Upload-Concat", &format!("final;{first} {second}"))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn method_override_turns_a_post_into_a_delete() {
    let server = TestServer::start().await;
    let path = create_path(&server, &[("Upload-Length", "3")]).await;
    let response = tus(&server, Method::POST, &path)
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(head(&server, &path).await.status(), StatusCode::NOT_FOUND);
}

// ---- capabilities ----

/// A store that delegates to memory but can do only the core operations.
struct CoreOnlyStore(resumable_core::MemoryStore);

#[async_trait::async_trait]
impl resumable_core::Store for CoreOnlyStore {
    fn capabilities(&self) -> resumable_core::Capabilities {
        resumable_core::Capabilities {
            terminate: false,
            read: true,
            stage: false,
            concatenate: false,
            list: false,
            client_keys: false,
        }
    }
    async fn create(
        &self,
        info: &resumable_core::UploadInfo,
    ) -> Result<(), resumable_core::StoreError> {
        self.0.create(info).await
    }
    async fn status(
        &self,
        id: &resumable_core::UploadId,
    ) -> Result<resumable_core::UploadStatus, resumable_core::StoreError> {
        self.0.status(id).await
    }
    async fn append(
        &self,
        id: &resumable_core::UploadId,
        offset: resumable_core::Offset,
        body: resumable_core::BodyStream,
    ) -> Result<resumable_core::Appended, resumable_core::StoreError> {
        self.0.append(id, offset, body).await
    }
    async fn update(
        &self,
        info: &resumable_core::UploadInfo,
    ) -> Result<(), resumable_core::StoreError> {
        self.0.update(info).await
    }
    async fn finish(
        &self,
        id: &resumable_core::UploadId,
    ) -> Result<(), resumable_core::StoreError> {
        self.0.finish(id).await
    }
    async fn terminate(
        &self,
        _: &resumable_core::UploadId,
    ) -> Result<(), resumable_core::StoreError> {
        Err(resumable_core::StoreError::Unsupported)
    }
    async fn read(
        &self,
        id: &resumable_core::UploadId,
        range: std::ops::Range<u64>,
    ) -> Result<resumable_core::ByteStream, resumable_core::StoreError> {
        self.0.read(id, range).await
    }
    async fn find_by_key(
        &self,
        _: &resumable_core::Owner,
        _: &str,
    ) -> Result<Option<resumable_core::UploadId>, resumable_core::StoreError> {
        Err(resumable_core::StoreError::Unsupported)
    }
    async fn stage(
        &self,
        _: &resumable_core::UploadId,
        _: resumable_core::Offset,
        _: resumable_core::BodyStream,
    ) -> Result<resumable_core::Staged, resumable_core::StoreError> {
        Err(resumable_core::StoreError::Unsupported)
    }
    async fn commit_staged(
        &self,
        _: &resumable_core::UploadId,
        _: resumable_core::Offset,
    ) -> Result<resumable_core::Offset, resumable_core::StoreError> {
        Err(resumable_core::StoreError::Unsupported)
    }
    async fn discard_staged(
        &self,
        _: &resumable_core::UploadId,
    ) -> Result<(), resumable_core::StoreError> {
        Err(resumable_core::StoreError::Unsupported)
    }
    async fn concatenate(
        &self,
        _: &resumable_core::UploadId,
        _: &[resumable_core::UploadId],
    ) -> Result<(), resumable_core::StoreError> {
        Err(resumable_core::StoreError::Unsupported)
    }
    async fn list(
        &self,
        _: Option<&resumable_core::UploadId>,
        _: usize,
    ) -> Result<Vec<resumable_core::UploadId>, resumable_core::StoreError> {
        Err(resumable_core::StoreError::Unsupported)
    }
}

#[tokio::test]
async fn extensions_are_advertised_only_when_the_store_supports_them() {
    use tower::ServiceExt;
    let service = resumable_core::UploadService::new(
        std::sync::Arc::new(CoreOnlyStore(resumable_core::MemoryStore::default())),
        std::sync::Arc::new(resumable_core::MemoryLocker::new(Duration::from_secs(1))),
        std::sync::Arc::new(resumable_core::SystemClock),
        resumable_core::ServiceConfig {
            expire_after: None,
            ..resumable_core::ServiceConfig::default()
        },
    );
    let app = resumable_server::app(std::sync::Arc::new(service), Default::default());
    let request = axum::http::Request::options("/files/")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let extensions = response.headers()["tus-extension"].to_str().unwrap();
    assert_eq!(
        extensions,
        "creation,creation-with-upload,creation-defer-length"
    );
    assert!(response.headers().get("tus-checksum-algorithm").is_none());

    // And the operations they would offer are refused, not half-done.
    let create = axum::http::Request::post("/files/")
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "3")
        .body(axum::body::Body::empty())
        .unwrap();
    let created = app.clone().oneshot(create).await.unwrap();
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let path = &location[location.find("/files/").unwrap()..];
    let checksummed = axum::http::Request::patch(path)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", OCTETS)
        .header("Upload-Checksum", checksum("sha1", b"abc"))
        .body(axum::body::Body::from("abc"))
        .unwrap();
    let refused = app.clone().oneshot(checksummed).await.unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_IMPLEMENTED);
    let delete = axum::http::Request::delete(path)
        .header("Tus-Resumable", "1.0.0")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(
        app.oneshot(delete).await.unwrap().status(),
        StatusCode::NOT_IMPLEMENTED
    );
}

/// Without the key index the simple protocol's `X-File-Id` needs, both of its routes say so
/// (501, naming the simple protocol) instead of answering 0 for every file and starting a new
/// upload on every request; tus still works over the same store.
#[tokio::test]
async fn the_simple_protocol_is_501_over_a_store_without_client_keys() {
    use tower::ServiceExt;
    let service = resumable_core::UploadService::new(
        std::sync::Arc::new(CoreOnlyStore(resumable_core::MemoryStore::default())),
        std::sync::Arc::new(resumable_core::MemoryLocker::new(Duration::from_secs(1))),
        std::sync::Arc::new(resumable_core::SystemClock),
        resumable_core::ServiceConfig::default(),
    );
    let app = resumable_server::app(std::sync::Arc::new(service), Default::default());
    let status = axum::http::Request::get("/status")
        .header("X-File-Id", "photo.jpg-3-1")
        .body(axum::body::Body::empty())
        .unwrap();
    let upload = axum::http::Request::post("/upload")
        .header("X-File-Id", "photo.jpg-3-1")
        .header("X-Start-Byte", "0")
        .body(axum::body::Body::from("abc"))
        .unwrap();
    for request in [status, upload] {
        let route = request.uri().path().to_owned();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED, "{route}");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let message = String::from_utf8_lossy(&body);
        assert!(message.contains("simple protocol"), "{route}: {message}");
    }
    let create = axum::http::Request::post("/files/")
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "3")
        .body(axum::body::Body::empty())
        .unwrap();
    let created = app.oneshot(create).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
}
