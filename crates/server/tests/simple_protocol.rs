//! The seed's simple protocol against a real server (docs/protocols.md, the simple protocol),
//! one test per rule.

mod common;

use common::{MAX_SIZE, TestServer, pattern, sha256};
use reqwest::StatusCode;

async fn status(server: &TestServer, file_id: &str) -> (StatusCode, String) {
    let response = server
        .client
        .get(server.url("/status"))
        .header("X-File-Id", file_id)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn post(
    server: &TestServer,
    file_id: &str,
    start: &str,
    size: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = server
        .client
        .post(server.url("/upload"))
        .header("X-File-Id", file_id)
        .header("X-Start-Byte", start)
        .body(body);
    if let Some(size) = size {
        request = request.header("X-File-Size", size);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn status_of_an_unknown_id_is_zero() {
    let server = TestServer::start().await;
    assert_eq!(
        status(&server, "never-seen-1-1").await,
        (StatusCode::OK, "0".into())
    );
}

#[tokio::test]
async fn status_without_a_file_id_is_400() {
    let server = TestServer::start().await;
    let response = server
        .client
        .get(server.url("/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("X-File-Id"));
    assert_eq!(status(&server, "").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(status(&server, "   ").await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn upload_appends_and_status_reports_the_stored_count() {
    let server = TestServer::start().await;
    let data = pattern(10_000, 1);
    let first = post(
        &server,
        "a.bin-10000-1",
        "0",
        Some("10000"),
        data[..4000].to_vec(),
    )
    .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.text().await.unwrap(), "4000");
    assert_eq!(status(&server, "a.bin-10000-1").await.1, "4000");
    let second = post(
        &server,
        "a.bin-10000-1",
        "4000",
        Some("10000"),
        data[4000..].to_vec(),
    )
    .await;
    assert_eq!(second.status(), StatusCode::OK);
    let location = second.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/files/"), "{location}");
    assert_eq!(second.text().await.unwrap(), "10000");
    let download = server
        .client
        .get(server.url(&location))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(sha256(&download.bytes().await.unwrap()), sha256(&data));
}

#[tokio::test]
async fn start_byte_must_be_a_strict_decimal() {
    let server = TestServer::start().await;
    // (Leading and trailing spaces are optional whitespace in HTTP: the parser drops them.)
    for bad in [
        "1e3",
        "0x10",
        "-1",
        "",
        "+1",
        "1.0",
        "1 000",
        "99999999999999999999999",
    ] {
        let response = post(&server, "strict-1-1", bad, None, b"abc".to_vec()).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "X-Start-Byte {bad:?}"
        );
    }
    let response = post(&server, "strict-1-1", "0", Some("1e3"), b"abc".to_vec()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let missing = server
        .client
        .post(server.url("/upload"))
        .header("X-File-Id", "strict-1-1")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.stored_bytes(), 0);
    assert_eq!(status(&server, "strict-1-1").await.1, "0");
}

#[tokio::test]
async fn a_start_byte_other_than_the_stored_count_is_409_and_writes_nothing() {
    let server = TestServer::start().await;
    post(&server, "m-10-1", "0", Some("10"), b"abcd".to_vec()).await;
    for wrong in ["0", "2", "5", "10"] {
        let response = post(&server, "m-10-1", wrong, Some("10"), b"zz".to_vec()).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "start {wrong}");
        assert_eq!(response.headers()["upload-offset"], "4");
        assert_eq!(response.text().await.unwrap(), "4");
    }
    assert_eq!(server.stored_bytes(), 4);
}

#[tokio::test]
async fn resuming_an_unknown_id_past_zero_is_409_with_zero() {
    let server = TestServer::start().await;
    let response = post(&server, "ghost-5-1", "3", None, b"de".to_vec()).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.text().await.unwrap(), "0");
    assert_eq!(server.stored_bytes(), 0);
}

#[tokio::test]
async fn file_size_over_the_maximum_is_413() {
    let server = TestServer::start().await;
    let too_big = (MAX_SIZE + 1).to_string();
    let response = post(&server, "big-1-1", "0", Some(&too_big), b"a".to_vec()).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(status(&server, "big-1-1").await.1, "0");
}

#[tokio::test]
async fn a_body_past_the_file_size_is_413_and_nothing_past_it_is_stored() {
    let server = TestServer::start().await;
    let response = post(&server, "over-4-1", "0", Some("4"), b"abcdef".to_vec()).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(server.stored_bytes() <= 4);
    // A chunked body (no Content-Length) is cut at the size: the part that fits is kept.
    let stream = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(b"wxyz".to_vec()),
        Ok(b"overflow".to_vec()),
    ]);
    let response = server
        .client
        .post(server.url("/upload"))
        .header("X-File-Id", "chunked-4-1")
        .header("X-Start-Byte", "0")
        .header("X-File-Size", "4")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(status(&server, "chunked-4-1").await.1, "4");
}

#[tokio::test]
async fn a_413_tells_the_count_that_is_stored() {
    let server = TestServer::start().await;
    // Content-Length says too much up front: nothing is written.
    let announced = post(&server, "told-4-1", "0", Some("4"), b"abcdef".to_vec()).await;
    assert_eq!(announced.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(announced.headers()["upload-offset"], "0");
    // A chunked body overflows mid-stream: the bytes up to the size are kept.
    let overflowing = server
        .client
        .post(server.url("/upload"))
        .header("X-File-Id", "told-4-1")
        .header("X-Start-Byte", "0")
        .header("X-File-Size", "4")
        .body(common::chunked(&[b"ab", b"cdef"]))
        .send()
        .await
        .unwrap();
    assert_eq!(overflowing.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(overflowing.headers()["upload-offset"], "4");
    assert_eq!(status(&server, "told-4-1").await.1, "4");
}

#[tokio::test]
async fn a_file_size_that_changes_is_400() {
    let server = TestServer::start().await;
    post(&server, "size-10-1", "0", Some("10"), b"abc".to_vec()).await;
    let response = post(&server, "size-10-1", "3", Some("11"), b"def".to_vec()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(status(&server, "size-10-1").await.1, "3");
}

#[tokio::test]
async fn ids_are_opaque_never_paths() {
    let server = TestServer::start().await;
    for id in ["../../../../etc/passwd", "..", "/", "a/b\\c", "%2e%2e%2f"] {
        let response = post(&server, id, "0", None, id.as_bytes().to_vec()).await;
        assert_eq!(response.status(), StatusCode::OK, "{id}");
        assert_eq!(status(&server, id).await.1, id.len().to_string());
    }
    // Every id became its own upload inside the data dir, and nothing was written elsewhere.
    assert_eq!(
        std::fs::read_dir(server.data_dir.join("keys"))
            .unwrap()
            .count(),
        5
    );
    let nul = server
        .raw(b"GET /status HTTP/1.1\r\nHost: x\r\nX-File-Id: a\0b\r\nConnection: close\r\n\r\n")
        .await;
    assert!(nul.starts_with("HTTP/1.1 400"), "{nul}");
    assert_eq!(status(&server, "a").await.0, StatusCode::OK);
}

#[tokio::test]
async fn non_latin1_names_work_encoded_or_raw() {
    let server = TestServer::start().await;
    let encoded = "%D1%84%D0%BE%D1%82%D0%BE.jpg-3-1";
    post(&server, encoded, "0", None, b"abc".to_vec()).await;
    assert_eq!(status(&server, encoded).await.1, "3");
    let raw = "фото.jpg-2-1";
    let response = server
        .client
        .post(server.url("/upload"))
        .header(
            "X-File-Id",
            reqwest::header::HeaderValue::from_bytes(raw.as_bytes()).unwrap(),
        )
        .header("X-Start-Byte", "0")
        .body("ab")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stored = server
        .client
        .get(server.url("/status"))
        .header(
            "X-File-Id",
            reqwest::header::HeaderValue::from_bytes(raw.as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stored.text().await.unwrap(), "2");
}

#[tokio::test]
async fn an_interrupted_post_keeps_every_byte_that_arrived() {
    let server = TestServer::start().await;
    let data = pattern(200_000, 5);
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nX-File-Id: cut-200000-1\r\n\
                X-Start-Byte: 0\r\nX-File-Size: 200000\r\nContent-Length: 200000\r\n\r\n";
    let connection = server.send_partial(head, &data[..75_000]).await;
    // Watch the bytes reach the disk without a request: a `/status` would take the upload
    // over, and then the drop below would end nothing.
    server
        .eventually(|| async { (server.stored_bytes() == 75_000).then_some(()) })
        .await;
    let [id] = server.upload_ids().try_into().expect("one upload");
    drop(connection);
    // The drop alone ends the request: it lets go of the upload, nobody having asked.
    server.released(&id).await;
    assert_eq!(
        status(&server, "cut-200000-1").await,
        (StatusCode::OK, "75000".into())
    );
    let resumed = post(
        &server,
        "cut-200000-1",
        "75000",
        Some("200000"),
        data[75_000..].to_vec(),
    )
    .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let location = resumed.headers()["location"].to_str().unwrap().to_owned();
    let download = server
        .client
        .get(server.url(&location))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256(&download.bytes().await.unwrap()), sha256(&data));
}

#[tokio::test]
async fn the_server_keeps_serving_after_hostile_requests() {
    let server = TestServer::start().await;
    let garbage: [&[u8]; 4] = [
        b"POST /upload HTTP/1.1\r\nHost: x\r\nX-File-Id: \xff\xfe\r\nX-Start-Byte: 0\r\nContent-Length: 1\r\n\r\na",
        b"POST /upload HTTP/1.1\r\nHost: x\r\nX-File-Id: q\r\nX-Start-Byte: 18446744073709551616\r\nContent-Length: 0\r\n\r\n",
        b"GET /status HTTP/1.1\r\nHost: x\r\nX-File-Id: q\r\nX-File-Id: r\r\n\r\n",
        b"\x00\x01\x02 garbage\r\n\r\n",
    ];
    for request in garbage {
        let _ = server.raw(request).await;
    }
    assert_eq!(
        status(&server, "still-alive").await,
        (StatusCode::OK, "0".into())
    );
}

#[tokio::test]
async fn an_expired_upload_starts_over_from_zero() {
    let server = TestServer::start().await;
    post(&server, "old-10-1", "0", Some("10"), b"abc".to_vec()).await;
    server
        .clock
        .advance(std::time::Duration::from_secs(25 * 60 * 60));
    assert_eq!(status(&server, "old-10-1").await.1, "0");
    let late = post(&server, "old-10-1", "3", Some("10"), b"def".to_vec()).await;
    assert_eq!(late.status(), StatusCode::GONE);
    let fresh = post(&server, "old-10-1", "0", Some("10"), b"xyz".to_vec()).await;
    assert_eq!(fresh.status(), StatusCode::OK);
    assert_eq!(fresh.text().await.unwrap(), "3");
    // The expired upload's bytes are gone; only the new upload's remain.
    assert_eq!(server.stored_bytes(), 3);
}

/// The upload's path (`/files/{id}`), from the one data file in the store.
fn only_upload(server: &TestServer) -> String {
    let mut ids: Vec<String> = std::fs::read_dir(server.data_dir.join("uploads"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".bin").map(str::to_owned)
        })
        .collect();
    assert_eq!(ids.len(), 1, "one upload in the store: {ids:?}");
    format!("/files/{}", ids.remove(0))
}

async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    server.client.get(server.url(path)).send().await.unwrap()
}

#[tokio::test]
async fn a_whole_post_without_a_size_completes_the_upload() {
    let server = TestServer::start().await;
    let data = pattern(300_001, 7);
    let response = post(&server, "seed.bin-300001-1", "0", None, data.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(response.text().await.unwrap(), "300001");
    let download = get(&server, &location).await;
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(sha256(&download.bytes().await.unwrap()), sha256(&data));
    let head = common::head(&server, &location).await;
    assert_eq!(head.headers()["upload-length"], "300001");
    assert_eq!(status(&server, "seed.bin-300001-1").await.1, "300001");
}

#[tokio::test]
async fn a_whole_post_short_of_its_file_size_leaves_the_upload_open() {
    let server = TestServer::start().await;
    let response = post(&server, "sized-10-1", "0", Some("10"), b"abcd".to_vec()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(get(&server, &location).await.status(), StatusCode::CONFLICT);
    let head = common::head(&server, &location).await;
    assert_eq!(head.headers()["upload-length"], "10");
    assert_eq!(head.headers()["upload-offset"], "4");
}

#[tokio::test]
async fn an_interrupted_post_without_a_size_leaves_the_upload_open() {
    let server = TestServer::start().await;
    let data = pattern(200_000, 9);
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nX-File-Id: open-200000-1\r\n\
                X-Start-Byte: 0\r\nContent-Length: 200000\r\n\r\n";
    let connection = server.send_partial(head, &data[..75_000]).await;
    // Watch the disk, not /status: a status request would take the upload over.
    server
        .eventually(|| async { (server.stored_bytes() == 75_000).then_some(()) })
        .await;
    drop(connection);
    let path = only_upload(&server);
    // The drop alone ends the request (a HEAD first would take the upload over instead);
    // then the upload is open at what arrived.
    server.released(path.trim_start_matches("/files/")).await;
    let head = common::head(&server, &path).await;
    assert!(head.headers().contains_key("upload-defer-length"));
    assert_eq!(head.headers()["upload-offset"], "75000");
    assert_eq!(get(&server, &path).await.status(), StatusCode::CONFLICT);
    // The seed's client resumes with the rest of the file, again without a size.
    let resumed = post(
        &server,
        "open-200000-1",
        "75000",
        None,
        data[75_000..].to_vec(),
    )
    .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    assert_eq!(resumed.text().await.unwrap(), "200000");
    assert_eq!(
        sha256(&common::download(&server, &path).await),
        sha256(&data)
    );
}

#[tokio::test]
async fn after_completion_a_post_at_the_size_changes_nothing_and_others_are_409() {
    let server = TestServer::start().await;
    let data = pattern(5_000, 3);
    post(&server, "done-5000-1", "0", None, data.clone()).await;
    let again = post(&server, "done-5000-1", "5000", None, Vec::new()).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.text().await.unwrap(), "5000");
    for wrong in ["0", "4999", "5001"] {
        let response = post(&server, "done-5000-1", wrong, None, b"zz".to_vec()).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "start {wrong}");
        assert_eq!(response.headers()["upload-offset"], "5000");
        assert_eq!(response.text().await.unwrap(), "5000");
    }
    let past = post(&server, "done-5000-1", "5000", None, b"more".to_vec()).await;
    assert_eq!(past.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(status(&server, "done-5000-1").await.1, "5000");
    assert_eq!(server.stored_bytes(), 5_000);
    let path = only_upload(&server);
    assert_eq!(common::download(&server, &path).await, data);
}

#[tokio::test]
async fn a_completed_seed_upload_survives_the_expiry_sweep_and_an_interrupted_one_expires() {
    let server = TestServer::start().await;
    let whole = post(&server, "kept-100-1", "0", None, pattern(100, 1)).await;
    let kept = whole.headers()["location"].to_str().unwrap().to_owned();
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nX-File-Id: cut-100-1\r\n\
                X-Start-Byte: 0\r\nContent-Length: 100\r\n\r\n";
    let connection = server.send_partial(head, &pattern(40, 2)).await;
    server
        .eventually(|| async { (server.stored_bytes() == 140).then_some(()) })
        .await;
    let cut = server
        .upload_ids()
        .into_iter()
        .find(|id| !kept.contains(id.as_str()))
        .expect("the cut upload");
    drop(connection);
    // The drop alone ends the request, which a `/status` would otherwise take over.
    server.released(&cut).await;
    assert_eq!(status(&server, "cut-100-1").await.1, "40");
    server
        .clock
        .advance(std::time::Duration::from_secs(25 * 60 * 60));
    assert_eq!(server.service.remove_expired().await.unwrap().removed, 1);
    assert_eq!(common::download(&server, &kept).await, pattern(100, 1));
    assert_eq!(status(&server, "cut-100-1").await.1, "0");
    assert_eq!(server.stored_bytes(), 100);
}
