//! Headers that carry one value, in both protocols: given twice (two lines, or one line folded
//! from two, `3, 9`) they are a 400 naming the header, never "the first wins". After every
//! refusal nothing was created or written.

mod common;

use common::{OCTETS, TestServer, path_of, tus};
use reqwest::{Method, StatusCode};

/// A header given twice: as two lines, or folded into one.
enum Twice {
    Lines(&'static str, &'static str),
    Folded(&'static str),
}

impl Twice {
    fn add(&self, request: reqwest::RequestBuilder, name: &str) -> reqwest::RequestBuilder {
        match self {
            // reqwest appends: two header lines go out.
            Twice::Lines(first, second) => request.header(name, *first).header(name, *second),
            Twice::Folded(both) => request.header(name, *both),
        }
    }
}

/// A header given twice, beside the other headers the request needs.
type Case = (&'static str, &'static [(&'static str, &'static str)], Twice);

/// `(name, value)` pairs, but with `repeated` given twice instead of once.
fn with_headers(
    mut request: reqwest::RequestBuilder,
    headers: &[(&str, &str)],
    repeated: &str,
    twice: &Twice,
) -> reqwest::RequestBuilder {
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case(repeated) {
            request = request.header(*name, *value);
        }
    }
    twice.add(request, repeated)
}

/// Checks a refusal: 400, and the message names the header.
async fn assert_refused(response: reqwest::Response, header: &str) {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{header}");
    let message = response.text().await.unwrap();
    assert!(
        message.contains(header) && message.contains("once"),
        "{header}: {message}"
    );
}

#[tokio::test]
async fn tus_creation_refuses_repeated_singleton_headers() {
    let server = TestServer::start().await;
    let cases: [Case; 10] = [
        ("Upload-Length", &[], Twice::Lines("3", "9")),
        ("Upload-Length", &[], Twice::Folded("3, 9")),
        ("Upload-Defer-Length", &[], Twice::Lines("1", "1")),
        ("Upload-Defer-Length", &[], Twice::Folded("1, 1")),
        (
            "Upload-Metadata",
            &[("Upload-Length", "3")],
            Twice::Lines("name YQ==", "name Yg=="),
        ),
        (
            "Upload-Concat",
            &[("Upload-Length", "3")],
            Twice::Lines("partial", "partial"),
        ),
        (
            "Upload-Concat",
            &[("Upload-Length", "3")],
            Twice::Folded("partial, partial"),
        ),
        (
            "Tus-Resumable",
            &[("Upload-Length", "3")],
            Twice::Lines("1.0.0", "1.0.0"),
        ),
        (
            "Tus-Resumable",
            &[("Upload-Length", "3")],
            Twice::Folded("1.0.0, 1.0.0"),
        ),
        (
            "Content-Type",
            &[("Upload-Length", "3")],
            Twice::Lines(OCTETS, OCTETS),
        ),
    ];
    for (header, others, twice) in &cases {
        let request = server
            .client
            .post(server.url("/files/"))
            .header("Tus-Resumable", "1.0.0");
        let request = with_headers(request, others, header, twice);
        assert_refused(request.send().await.unwrap(), header).await;
        assert_eq!(server.upload_count(), 0, "{header}");
    }
    // One line with commas is one value where the grammar has commas of its own.
    let response = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "3")
        .header("Upload-Metadata", "name YQ==, type Yg==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn tus_patch_and_head_refuse_repeated_singleton_headers() {
    let server = TestServer::start().await;
    let created = tus(&server, Method::POST, "/files/")
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .unwrap();
    let path = path_of(&created);
    let patch_headers: &[(&str, &str)] = &[
        ("Tus-Resumable", "1.0.0"),
        ("Upload-Offset", "0"),
        ("Content-Type", OCTETS),
    ];
    let cases: [(&str, Twice); 9] = [
        ("Upload-Offset", Twice::Lines("0", "3")),
        ("Upload-Offset", Twice::Folded("0, 3")),
        ("Upload-Length", Twice::Lines("3", "9")),
        ("Upload-Length", Twice::Folded("3, 9")),
        (
            "Upload-Checksum",
            Twice::Lines("sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0=", "sha1 AAAA"),
        ),
        (
            "Upload-Checksum",
            Twice::Folded("sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0=, sha1 AAAA"),
        ),
        ("Tus-Resumable", Twice::Lines("1.0.0", "1.0.0")),
        ("Tus-Resumable", Twice::Folded("1.0.0, 1.0.0")),
        ("Content-Type", Twice::Lines(OCTETS, OCTETS)),
    ];
    for (header, twice) in &cases {
        let request = server.client.patch(server.url(&path));
        let request = with_headers(request, patch_headers, header, twice);
        assert_refused(request.body("abc").send().await.unwrap(), header).await;
        assert_eq!(server.stored_bytes(), 0, "{header}");
    }
    let head = server
        .client
        .head(server.url(&path))
        .header("Tus-Resumable", "1.0.0")
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::BAD_REQUEST);
    let delete = server
        .client
        .delete(server.url(&path))
        .header("Tus-Resumable", "1.0.0, 1.0.0")
        .send()
        .await
        .unwrap();
    assert_refused(delete, "Tus-Resumable").await;
    assert_eq!(server.upload_count(), 1);
}

#[tokio::test]
async fn simple_upload_refuses_repeated_singleton_headers() {
    let server = TestServer::start().await;
    let headers: &[(&str, &str)] = &[
        ("X-File-Id", "once-3-1"),
        ("X-Start-Byte", "0"),
        ("X-File-Size", "3"),
    ];
    let cases: [(&str, Twice); 5] = [
        ("X-File-Id", Twice::Lines("once-3-1", "other-3-1")),
        ("X-Start-Byte", Twice::Lines("0", "3")),
        ("X-Start-Byte", Twice::Folded("0, 3")),
        ("X-File-Size", Twice::Lines("3", "9")),
        ("X-File-Size", Twice::Folded("3, 9")),
    ];
    for (header, twice) in &cases {
        let request = server.client.post(server.url("/upload"));
        let request = with_headers(request, headers, header, twice);
        assert_refused(request.body("abc").send().await.unwrap(), header).await;
        assert_eq!(server.upload_count(), 0, "{header}");
    }
    let status = server
        .client
        .get(server.url("/status"))
        .header("X-File-Id", "once-3-1")
        .header("X-File-Id", "other-3-1")
        .send()
        .await
        .unwrap();
    assert_refused(status, "X-File-Id").await;
    // A comma is part of a file id, not a second one.
    let response = server
        .client
        .post(server.url("/upload"))
        .header("X-File-Id", "a, b.txt-3-1")
        .header("X-Start-Byte", "0")
        .header("X-File-Size", "3")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
