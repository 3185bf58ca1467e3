//! tus 1.0.0 core, creation, creation-with-upload, creation-defer-length, termination and
//! downloads against a real server (docs/protocols.md, tus). Each test is named after the rule it
//! checks and, after a rejection, checks that the stored bytes did not change.

mod common;

use common::{
    MAX_SIZE, OCTETS, TestServer, chunked, download, offset, options, patch_head, path_of, pattern,
    sha256, tus,
};
use reqwest::{Method, StatusCode};

async fn create(server: &TestServer, length: u64) -> String {
    let response = tus(server, Method::POST, "/files/")
        .header("Upload-Length", length.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap();
    location
        .strip_prefix(&format!("http://{}", server.address))
        .unwrap()
        .to_owned()
}

async fn patch(server: &TestServer, path: &str, offset: u64, body: Vec<u8>) -> reqwest::Response {
    tus(server, Method::PATCH, path)
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", OCTETS)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn healthz_answers_ok() {
    let server = TestServer::start().await;
    let response = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn options_advertises_version_extensions_and_max_size() {
    let server = TestServer::start().await;
    let response = options(&server).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let headers = response.headers();
    assert_eq!(headers["tus-version"], "1.0.0");
    assert_eq!(headers["tus-max-size"], MAX_SIZE.to_string().as_str());
    let extensions = headers["tus-extension"].to_str().unwrap();
    for extension in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
    ] {
        assert!(
            extensions.split(',').any(|name| name == extension),
            "{extensions}"
        );
    }
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn requests_without_version_1_0_0_get_412_with_tus_version() {
    let server = TestServer::start().await;
    let path = create(&server, 10).await;
    for version in [None, Some("0.2.2"), Some("1.0")] {
        let mut request = server
            .client
            .request(Method::PATCH, server.url(&path))
            .header("Upload-Offset", "0")
            .header("Content-Type", OCTETS)
            .body("abc");
        if let Some(version) = version {
            request = request.header("Tus-Resumable", version);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::PRECONDITION_FAILED,
            "{version:?}"
        );
        assert_eq!(response.headers()["tus-version"], "1.0.0");
    }
    let create = server
        .client
        .post(server.url("/files/"))
        .header("Upload-Length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(offset(&server, &path).await, 0);
}

#[tokio::test]
async fn creation_returns_201_with_an_absolute_location() {
    let server = TestServer::start().await;
    let response = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "100")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["tus-resumable"], "1.0.0");
    let location = response.headers()["location"].to_str().unwrap();
    let prefix = format!("http://{}/files/", server.address);
    assert!(location.starts_with(&prefix), "{location}");
    assert_eq!(
        location.len(),
        prefix.len() + 32,
        "128-bit hex id: {location}"
    );
}

#[tokio::test]
async fn creation_needs_exactly_one_of_length_and_defer_length() {
    let server = TestServer::start().await;
    let cases: [&[(&str, &str)]; 6] = [
        &[],
        &[("Upload-Length", "10"), ("Upload-Defer-Length", "1")],
        &[("Upload-Defer-Length", "0")],
        &[("Upload-Length", "-1")],
        &[("Upload-Length", "1e3")],
        &[("Upload-Length", "99999999999999999999999")],
    ];
    for headers in cases {
        let mut request = tus(&server, Method::POST, "/files/");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{headers:?}");
        assert!(!response.text().await.unwrap().is_empty());
    }
    assert_eq!(
        std::fs::read_dir(server.data_dir.join("uploads"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn creation_over_the_max_size_is_413() {
    let server = TestServer::start().await;
    let response = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", (MAX_SIZE + 1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn malformed_metadata_is_400_and_valid_metadata_is_echoed_verbatim() {
    let server = TestServer::start().await;
    for bad in ["filename !!!", "a YQ==,a YQ==", "a YQ== YQ==", ",x"] {
        let response = tus(&server, Method::POST, "/files/")
            .header("Upload-Length", "1")
            .header("Upload-Metadata", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let metadata = "filename 0YTQvtGC0L4uanBn,is_confidential,filetype aW1hZ2UvanBlZw==";
    let response = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "1")
        .header("Upload-Metadata", metadata)
        .send()
        .await
        .unwrap();
    let head = common::head(&server, &path_of(&response)).await;
    assert_eq!(head.headers()["upload-metadata"], metadata);
}

#[tokio::test]
async fn head_reports_offset_length_and_no_store() {
    let server = TestServer::start().await;
    let path = create(&server, 10).await;
    patch(&server, &path, 0, b"abcd".to_vec()).await;
    let response = tus(&server, Method::HEAD, &path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["upload-offset"], "4");
    assert_eq!(headers["upload-length"], "10");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["tus-resumable"], "1.0.0");
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404_without_an_offset() {
    let server = TestServer::start().await;
    let unknown = "/files/0123456789abcdef0123456789abcdef";
    for path in [
        unknown,
        "/files/..%2F..%2Fetc%2Fpasswd",
        "/files/abc",
        "/files/%00",
    ] {
        let head = tus(&server, Method::HEAD, path).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(head.headers().get("upload-offset").is_none());
        assert_eq!(
            patch(&server, path, 0, b"x".to_vec()).await.status(),
            StatusCode::NOT_FOUND
        );
        let delete = tus(&server, Method::DELETE, path).send().await.unwrap();
        assert_eq!(delete.status(), StatusCode::NOT_FOUND);
        let get = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn patch_without_offset_octet_stream_is_415_and_writes_nothing() {
    let server = TestServer::start().await;
    let path = create(&server, 10).await;
    for content_type in [None, Some("application/octet-stream"), Some("text/plain")] {
        let mut request = tus(&server, Method::PATCH, &path)
            .header("Upload-Offset", "0")
            .body("abc");
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
    }
    assert_eq!(offset(&server, &path).await, 0);
}

#[tokio::test]
async fn patch_with_a_missing_or_malformed_offset_is_400() {
    let server = TestServer::start().await;
    let path = create(&server, 10).await;
    let missing = tus(&server, Method::PATCH, &path)
        .header("Content-Type", OCTETS)
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    for bad in ["-1", "1e3", "0x0", "", "18446744073709551616"] {
        let response = tus(&server, Method::PATCH, &path)
            .header("Upload-Offset", bad)
            .header("Content-Type", OCTETS)
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad:?}");
    }
    assert_eq!(offset(&server, &path).await, 0);
}

#[tokio::test]
async fn patch_at_the_wrong_offset_is_409_and_writes_nothing() {
    let server = TestServer::start().await;
    let path = create(&server, 10).await;
    patch(&server, &path, 0, b"abc".to_vec()).await;
    for wrong in [0, 2, 4, 10] {
        let response = patch(&server, &path, wrong, b"zz".to_vec()).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "{wrong}");
        assert_eq!(response.headers()["upload-offset"], "3");
    }
    assert_eq!(offset(&server, &path).await, 3);
    assert_eq!(server.stored_bytes(), 3);
}

#[tokio::test]
async fn patch_succeeds_with_204_and_the_new_offset() {
    let server = TestServer::start().await;
    let data = pattern(300_000, 2);
    let path = create(&server, data.len() as u64).await;
    let first = patch(&server, &path, 0, data[..100_000].to_vec()).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(first.headers()["upload-offset"], "100000");
    let second = patch(&server, &path, 100_000, data[100_000..].to_vec()).await;
    assert_eq!(second.headers()["upload-offset"], "300000");
    assert_eq!(sha256(&download(&server, &path).await), sha256(&data));
}

#[tokio::test]
async fn bytes_past_the_length_are_413_and_never_stored() {
    let server = TestServer::start().await;
    let path = create(&server, 5).await;
    // With Content-Length: refused before a byte is written.
    let response = patch(&server, &path, 0, b"abcdefgh".to_vec()).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(offset(&server, &path).await, 0);
    // Chunked: the part that fits is stored, nothing past the length.
    let stream = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(b"abc".to_vec()),
        Ok(b"defgh".to_vec()),
    ]);
    let response = tus(&server, Method::PATCH, &path)
        .header("Upload-Offset", "0")
        .header("Content-Type", OCTETS)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(offset(&server, &path).await, 5);
    assert_eq!(server.stored_bytes(), 5);
    assert_eq!(download(&server, &path).await, b"abcde");
}

#[tokio::test]
async fn a_413_tells_the_offset_that_is_stored() {
    let server = TestServer::start().await;
    let path = create(&server, 5).await;
    patch(&server, &path, 0, b"ab".to_vec()).await;
    // Content-Length says too much up front: nothing is written.
    let announced = patch(&server, &path, 2, b"cdefgh".to_vec()).await;
    assert_eq!(announced.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(announced.headers()["upload-offset"], "2");
    // A chunked body overflows mid-stream: the bytes up to the length are kept.
    let overflowing = tus(&server, Method::PATCH, &path)
        .header("Upload-Offset", "2")
        .header("Content-Type", OCTETS)
        .body(chunked(&[b"c", b"defgh"]))
        .send()
        .await
        .unwrap();
    assert_eq!(overflowing.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(overflowing.headers()["upload-offset"], "5");
    assert_eq!(offset(&server, &path).await, 5);
}

#[tokio::test]
async fn creation_with_upload_that_overflows_tells_where_the_upload_is() {
    let server = TestServer::start().await;
    // Content-Length over Upload-Length: refused before anything is created.
    let announced = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "3")
        .header("Content-Type", OCTETS)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(announced.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(announced.headers().get("location").is_none());
    assert_eq!(server.upload_count(), 0);
    // A chunked body overflows once the upload exists: the 413 says where it is and what it
    // kept, so the client can go on from there.
    let overflowing = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "3")
        .header("Content-Type", OCTETS)
        .body(chunked(&[b"he", b"llo"]))
        .send()
        .await
        .unwrap();
    assert_eq!(overflowing.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(overflowing.headers()["upload-offset"], "3");
    let path = path_of(&overflowing);
    assert_eq!(offset(&server, &path).await, 3);
    assert_eq!(download(&server, &path).await, b"hel");
}

#[tokio::test]
async fn patch_on_a_completed_upload_at_its_length_is_204() {
    let server = TestServer::start().await;
    let path = create(&server, 3).await;
    patch(&server, &path, 0, b"abc".to_vec()).await;
    let again = patch(&server, &path, 3, Vec::new()).await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    assert_eq!(again.headers()["upload-offset"], "3");
    let more = patch(&server, &path, 3, b"d".to_vec()).await;
    assert_eq!(more.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(download(&server, &path).await, b"abc");
}

#[tokio::test]
async fn upload_length_zero_completes_at_once() {
    let server = TestServer::start().await;
    let path = create(&server, 0).await;
    assert_eq!(offset(&server, &path).await, 0);
    assert_eq!(download(&server, &path).await, b"");
}

#[tokio::test]
async fn creation_with_upload_stores_the_first_chunk() {
    let server = TestServer::start().await;
    let response = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "10")
        .header("Content-Type", OCTETS)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["upload-offset"], "5");
    let path = &path_of(&response);
    patch(&server, path, 5, b"world".to_vec()).await;
    assert_eq!(download(&server, path).await, b"helloworld");

    let too_long = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "3")
        .header("Content-Type", OCTETS)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn deferred_length_is_set_once_by_a_patch() {
    let server = TestServer::start().await;
    let response = tus(&server, Method::POST, "/files/")
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .unwrap();
    let path = &path_of(&response);
    let head = tus(&server, Method::HEAD, path).send().await.unwrap();
    assert_eq!(head.headers()["upload-defer-length"], "1");
    assert!(head.headers().get("upload-length").is_none());
    patch(&server, path, 0, b"abc".to_vec()).await;
    let declare = tus(&server, Method::PATCH, path)
        .header("Upload-Offset", "3")
        .header("Upload-Length", "6")
        .header("Content-Type", OCTETS)
        .body("def")
        .send()
        .await
        .unwrap();
    assert_eq!(declare.status(), StatusCode::NO_CONTENT);
    let change = tus(&server, Method::PATCH, path)
        .header("Upload-Offset", "6")
        .header("Upload-Length", "7")
        .header("Content-Type", OCTETS)
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), StatusCode::BAD_REQUEST);
    let head = tus(&server, Method::HEAD, path).send().await.unwrap();
    assert_eq!(head.headers()["upload-length"], "6");
    assert_eq!(download(&server, path).await, b"abcdef");
}

#[tokio::test]
async fn termination_removes_the_upload() {
    let server = TestServer::start().await;
    let path = create(&server, 10).await;
    patch(&server, &path, 0, b"abc".to_vec()).await;
    let response = tus(&server, Method::DELETE, &path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        tus(&server, Method::HEAD, &path)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        patch(&server, &path, 3, b"d".to_vec()).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.stored_bytes(), 0);
}

#[tokio::test]
async fn method_override_turns_a_post_into_a_patch() {
    let server = TestServer::start().await;
    let path = create(&server, 3).await;
    let response = tus(&server, Method::POST, &path)
        .header("X-HTTP-Method-Override", "PATCH")
        .header("Upload-Offset", "0")
        .header("Content-Type", OCTETS)
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset(&server, &path).await, 3);
}

#[tokio::test]
async fn download_of_an_incomplete_upload_is_409() {
    let server = TestServer::start().await;
    let path = create(&server, 10).await;
    patch(&server, &path, 0, b"abc".to_vec()).await;
    let response = server.client.get(server.url(&path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn download_serves_ranges_and_a_safe_attachment() {
    let server = TestServer::start().await;
    let response = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "10")
        .header(
            "Upload-Metadata",
            "filename PHNjcmlwdD4uaHRtbA==,filetype dGV4dC9odG1s",
        )
        .header("Content-Type", OCTETS)
        .body("0123456789")
        .send()
        .await
        .unwrap();
    let path = &path_of(&response);
    let full = server.client.get(server.url(path)).send().await.unwrap();
    assert_eq!(full.headers()["content-type"], "application/octet-stream");
    assert_eq!(full.headers()["x-content-type-options"], "nosniff");
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    let disposition = full.headers()["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"<script>.html\""),
        "{disposition}"
    );
    let part = server
        .client
        .get(server.url(path))
        .header("Range", "bytes=2-4")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 2-4/10");
    assert_eq!(part.bytes().await.unwrap().as_ref(), b"234");
    let beyond = server
        .client
        .get(server.url(path))
        .header("Range", "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.headers()["content-range"], "bytes */10");
}

#[tokio::test]
async fn an_interrupted_patch_keeps_every_byte_that_arrived() {
    let server = TestServer::start().await;
    let data = pattern(500_000, 8);
    let path = create(&server, data.len() as u64).await;
    let head = patch_head(&path, data.len(), "");
    let connection = server.send_partial(&head, &data[..123_456]).await;
    // Watch the file grow without a HEAD (a HEAD would take the upload over).
    server
        .eventually(|| async { (server.stored_bytes() == 123_456).then_some(()) })
        .await;
    drop(connection);
    // The drop alone ends the request; a HEAD before it let go would take it over instead.
    server.released(path.trim_start_matches("/files/")).await;
    let resumed_from = offset(&server, &path).await;
    assert_eq!(resumed_from, 123_456);
    patch(&server, &path, resumed_from, data[123_456..].to_vec()).await;
    assert_eq!(sha256(&download(&server, &path).await), sha256(&data));
}

#[tokio::test]
async fn a_head_takes_over_a_stalled_patch_which_persists_what_it_has() {
    let server = TestServer::start().await;
    let data = pattern(100_000, 4);
    let path = create(&server, data.len() as u64).await;
    let head = patch_head(&path, data.len(), "");
    // The client still holds its connection open but sends nothing more (a half-dead link).
    let stalled = server.send_partial(&head, &data[..40_000]).await;
    server
        .eventually(|| async { (server.stored_bytes() == 40_000).then_some(()) })
        .await;
    // A new request does not wait for the stalled one: it takes over and sees what is stored.
    assert_eq!(offset(&server, &path).await, 40_000);
    // The stalled request is answered (should its client still listen) with what it stored.
    let mut stalled = stalled;
    let answer = common::read_response_head(&mut stalled).await;
    assert!(answer.starts_with("HTTP/1.1 423"), "{answer}");
    assert!(answer.contains("upload-offset: 40000\r\n"), "{answer}");
    let finished = patch(&server, &path, 40_000, data[40_000..].to_vec()).await;
    assert_eq!(finished.status(), StatusCode::NO_CONTENT);
    assert_eq!(sha256(&download(&server, &path).await), sha256(&data));
    drop(stalled);
}

/// Two writers at one offset, in an order the test fixes (a race would leave the outcome to the
/// machine's speed, and every outcome would have to be accepted): the first stalls mid-body;
/// the second takes it over. The first answers 423 with what it stored; the second, finding
/// those bytes at its offset, answers 409 and writes nothing; nothing the first sends once
/// answered lands.
#[tokio::test]
async fn concurrent_patches_at_one_offset_never_interleave() {
    let server = TestServer::start().await;
    let length = 100_000usize;
    let path = create(&server, length as u64).await;
    let head = patch_head(&path, length, "");
    let mut first = server.send_partial(&head, &[b'a'; 40_000]).await;
    server
        .eventually(|| async { (server.stored_bytes() == 40_000).then_some(()) })
        .await;
    let mut second = server.send_partial(&head, &[b'b'; 10_000]).await;

    let taken_over = common::read_response_head(&mut first).await;
    assert!(taken_over.starts_with("HTTP/1.1 423"), "{taken_over}");
    assert!(
        taken_over.contains("upload-offset: 40000\r\n"),
        "{taken_over}"
    );
    let refused = common::read_response_head(&mut second).await;
    assert!(refused.starts_with("HTTP/1.1 409"), "{refused}");
    assert!(refused.contains("upload-offset: 40000\r\n"), "{refused}");
    // Answered, the first writer goes on sending; the server may have closed the connection.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut first, &[b'a'; 10_000]).await;

    // Exactly the first writer's bytes, none of the second's: a late byte of either would
    // move the offset, and the resumption below would be refused.
    assert_eq!(offset(&server, &path).await, 40_000);
    let finished = patch(&server, &path, 40_000, vec![b'c'; 60_000]).await;
    assert_eq!(finished.status(), StatusCode::NO_CONTENT);
    let mut expected = vec![b'a'; 40_000];
    expected.extend_from_slice(&[b'c'; 60_000]);
    assert_eq!(download(&server, &path).await, expected);
}

#[tokio::test]
async fn shutdown_lets_an_upload_in_flight_persist_and_answer() {
    let server = TestServer::start().await;
    let data = pattern(50_000, 3);
    let path = create(&server, 100_000).await;
    let head = patch_head(&path, 100000, "");
    let mut open = server.send_partial(&head, &data).await;
    server
        .eventually(|| async { (server.stored_bytes() == 50_000).then_some(()) })
        .await;
    let data_dir = server.data_dir.clone();
    let _data = server.shutdown().await;
    let mut response = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut open, &mut response)
        .await
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("upload-offset: 50000\r\n"), "{response}");
    let total: u64 = std::fs::read_dir(data_dir.join("uploads"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "bin"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum();
    assert_eq!(total, 50_000);
}

/// Regression: each PATCH in flight used to hold a blocking thread for its whole life, so as many
/// idle clients as tokio has blocking threads (512 by default) stalled every other file operation.
/// Here the pool has 8 threads and 40 clients sit idle mid-body.
#[test]
fn idle_uploads_do_not_starve_other_requests() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .unwrap();
    let limit = std::time::Duration::from_secs(60);
    let outcome = runtime.block_on(async move {
        tokio::time::timeout(limit, async {
            // Idle bodies must not be cut by the stall timeout during the test.
            let config = resumable_core::ServiceConfig {
                body_idle_timeout: std::time::Duration::from_secs(120),
                ..common::config()
            };
            let server = TestServer::start_with(config).await;
            let started = tokio::time::Instant::now();
            let mut idle = Vec::new();
            for _ in 0..40 {
                let path = create(&server, 100).await;
                let head = patch_head(&path, 100, "");
                idle.push(server.send_partial(&head, b"0123456789").await);
            }
            server
                .eventually(|| async { (server.stored_bytes() == 400).then_some(()) })
                .await;
            let fresh = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                let path = create(&server, 3).await;
                let response = tus(&server, Method::PATCH, &path)
                    .header("Upload-Offset", "0")
                    .header("Content-Type", OCTETS)
                    .body("abc")
                    .send()
                    .await
                    .unwrap();
                response.status()
            })
            .await
            .expect("a new upload completes while others sit idle");
            assert_eq!(fresh, StatusCode::NO_CONTENT);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "requests were starved"
            );
            drop(idle);
        })
        .await
    });
    outcome.expect("requests were starved by idle uploads");
}
