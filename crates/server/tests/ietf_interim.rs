//! `104 Upload Resumption Supported` on IETF creations over HTTP/1.1, against a real server:
//! the interim response names the upload before its content is read, so a client whose
//! connection drops mid-body resumes at that URL.
//!
//! Draft §Upload Creation, Server Behavior: "the server SHOULD announce the upload resource by
//! sending an interim response with the 104 (Upload Resumption Supported) status code [...]
//! When sent, it MUST include Location header field pointing to the upload resource and MUST
//! include the Upload-Limit header field with the corresponding limits". §Draft Version
//! Identification: servers "MUST also send a header field Upload-Draft-Interop-Version with the
//! interop version as its value to the 104 informational response".

mod common;

use common::{TestServer, config, read_response_head};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The value of `name` in a raw response head.
fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn creation_head(version: u8, content_length: usize) -> String {
    format!(
        "POST /files/ HTTP/1.1\r\nHost: x\r\nUpload-Draft-Interop-Version: {version}\r\n\
         Upload-Complete: ?0\r\nUpload-Length: 100\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

#[tokio::test]
async fn the_104_names_the_upload_before_the_content_is_sent() {
    let server = TestServer::start_with(resumable_core::ServiceConfig {
        max_size: Some(1000),
        ..config()
    })
    .await;
    for version in [6u8, 8] {
        // Only the head: the client waits for the 104 before sending any content.
        let mut stream = server.send_partial(&creation_head(version, 10), b"").await;
        let interim = read_response_head(&mut stream).await;
        assert!(
            interim.starts_with("HTTP/1.1 104 Upload Resumption Supported\r\n"),
            "{interim}"
        );
        let location = field(&interim, "location")
            .expect("Location in the 104")
            .to_owned();
        assert_eq!(
            field(&interim, "upload-draft-interop-version"),
            Some(version.to_string().as_str())
        );
        assert!(
            field(&interim, "upload-limit").is_some_and(|limit| limit.contains("max-size=1000")),
            "{interim}"
        );
        stream.write_all(b"0123456789").await.unwrap();
        let last = read_response_head(&mut stream).await;
        assert!(last.starts_with("HTTP/1.1 201 Created\r\n"), "{last}");
        // "all interim and final response messages for the same request MUST contain an
        // identical Location value"
        assert_eq!(field(&last, "location"), Some(location.as_str()));
        assert_eq!(field(&last, "upload-offset"), Some("10"));
    }
}

#[tokio::test]
async fn a_client_cut_off_mid_body_resumes_at_the_104s_location() {
    let server = TestServer::start().await;
    let mut stream = server.send_partial(&creation_head(8, 100), b"").await;
    let interim = read_response_head(&mut stream).await;
    let location = field(&interim, "location").expect("a 104 with Location");
    // The head said `Host: x`: the same path on the test server.
    let location = server.url(location.strip_prefix("http://x").expect("an absolute URL"));
    stream.write_all(&[7u8; 40]).await.unwrap();
    stream.flush().await.unwrap();
    // The connection drops: the final response never arrives. Once the 40 bytes are written
    // and the request has let go of the upload (a HEAD sooner would take it over and could
    // stop it before it read them all), the 104's URL tells the client where to resume.
    drop(stream);
    server
        .eventually(|| async { (server.stored_bytes() >= 40).then_some(()) })
        .await;
    let id = location.rsplit('/').next().expect("an id").to_owned();
    server.released(&id).await;
    let client = &server.client;
    let status = client
        .head(&location)
        .header("upload-draft-interop-version", "8")
        .send()
        .await
        .unwrap();
    assert_eq!(status.headers()["upload-offset"], "40");
    let offset = 40;
    let rest = client
        .patch(&location)
        .header("upload-draft-interop-version", "8")
        .header("upload-offset", offset.to_string())
        .header("upload-complete", "?1")
        .header("content-type", "application/partial-upload")
        .body(vec![9u8; 60])
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), reqwest::StatusCode::NO_CONTENT);
    assert_eq!(rest.headers()["upload-complete"], "?1");
}

#[tokio::test]
async fn no_104_for_a_creation_without_content_or_for_http_1_0() {
    let server = TestServer::start().await;
    // Without content the final response follows at once, carrying the same Location.
    let mut stream = server.send_partial(&creation_head(8, 0), b"").await;
    let head = read_response_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 201 Created\r\n"), "{head}");
    // "A server MUST NOT send a 1xx response to an HTTP/1.0 client" (RFC 9110 §15.2).
    let request = creation_head(8, 3).replace("HTTP/1.1", "HTTP/1.0");
    let mut stream = server.send_partial(&request, b"abc").await;
    let head = read_response_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.0 201 Created\r\n"), "{head}");
    // An unknown version gets no 104 either: it is refused before anything is created.
    let mut stream = server.send_partial(&creation_head(9, 3), b"abc").await;
    let head = tokio::time::timeout(Duration::from_secs(5), read_response_head(&mut stream))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
}
