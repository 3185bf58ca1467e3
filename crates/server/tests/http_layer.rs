//! What sits around the protocols: CORS, proxy-aware upload URLs, the page.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use resumable_server::{CorsOrigins, PublicUrl, ServerConfig};

async fn start(server_config: ServerConfig) -> TestServer {
    TestServer::start_full(common::config(), server_config).await
}

fn listing(origins: &[&str]) -> ServerConfig {
    ServerConfig {
        cors_origins: CorsOrigins::List(origins.iter().map(|origin| origin.to_string()).collect()),
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn a_preflight_from_any_origin_allows_every_protocol() {
    let server = TestServer::start().await;
    let response = server
        .client
        .request(Method::OPTIONS, server.url("/files/"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "PATCH")
        .header(
            "Access-Control-Request-Headers",
            "tus-resumable,upload-offset,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PATCH")
    );
    assert_eq!(
        headers["access-control-allow-headers"],
        "tus-resumable,upload-offset,content-type"
    );
    // Without Access-Control-Request-Headers, every protocol's headers are allowed.
    let simple = server
        .client
        .request(Method::OPTIONS, server.url("/upload"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    let allowed = simple.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    for name in [
        "X-File-Id",
        "X-Start-Byte",
        "X-File-Size",
        "Upload-Metadata",
        "Authorization",
    ] {
        assert!(allowed.contains(name), "{allowed}");
    }
}

#[tokio::test]
async fn a_plain_options_still_reaches_tus() {
    let server = TestServer::start().await;
    let response = server
        .client
        .request(Method::OPTIONS, server.url("/files/"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["tus-version"], "1.0.0");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn responses_expose_the_headers_clients_must_read() {
    let server = TestServer::start().await;
    let response = server
        .client
        .post(server.url("/upload"))
        .header("Origin", "https://app.example")
        .header("X-File-Id", "cors-1-1")
        .header("X-Start-Byte", "0")
        .body("a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    for name in [
        "Location",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Metadata",
        "Tus-Resumable",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
}

#[tokio::test]
async fn only_listed_origins_are_allowed() {
    let server = start(listing(&["https://good.example"])).await;
    let good = server
        .client
        .request(Method::OPTIONS, server.url("/files/"))
        .header("Origin", "https://good.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        good.headers()["access-control-allow-origin"],
        "https://good.example"
    );
    assert!(good.headers()["vary"].to_str().unwrap().contains("Origin"));
    let evil = server
        .client
        .get(server.url("/status"))
        .header("Origin", "https://evil.example")
        .header("X-File-Id", "x")
        .send()
        .await
        .unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
}

async fn location_with(server: &TestServer, headers: &[(&str, &str)]) -> String {
    let mut request = server
        .client
        .post(server.url("/files/"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "1");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    response.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn forwarded_headers_are_ignored_unless_behind_a_proxy() {
    let server = TestServer::start().await;
    let location = location_with(&server, &[("Forwarded", "proto=https;host=up.example")]).await;
    assert!(
        location.starts_with(&format!("http://{}/files/", server.address)),
        "{location}"
    );
}

#[tokio::test]
async fn behind_a_proxy_upload_urls_use_the_forwarded_origin() {
    let server = start(ServerConfig {
        behind_proxy: true,
        ..ServerConfig::default()
    })
    .await;
    let forwarded = location_with(
        &server,
        &[("Forwarded", "for=1.2.3.4;proto=https;host=up.example")],
    )
    .await;
    assert!(
        forwarded.starts_with("https://up.example/files/"),
        "{forwarded}"
    );
    let legacy = location_with(
        &server,
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "files.example:8443"),
        ],
    )
    .await;
    assert!(
        legacy.starts_with("https://files.example:8443/files/"),
        "{legacy}"
    );
    let hostile = location_with(&server, &[("X-Forwarded-Host", "evil.example/phish?")]).await;
    assert!(
        hostile.starts_with(&format!("http://{}/files/", server.address)),
        "{hostile}"
    );
}

#[tokio::test]
async fn the_page_and_the_client_are_served_with_their_content_types() {
    let server = TestServer::start().await;
    let expected = [
        ("/", "text/html; charset=utf-8", "<!doctype html>"),
        ("/index.html", "text/html; charset=utf-8", "<!doctype html>"),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "import { Uploader }",
        ),
        ("/style.css", "text/css; charset=utf-8", ":root"),
        (
            "/resumable.js",
            "text/javascript; charset=utf-8",
            "export class Uploader",
        ),
    ];
    for (path, content_type, excerpt) in expected {
        let response = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(
            response.headers()["referrer-policy"],
            "no-referrer",
            "{path}"
        );
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe"), "{path}: {policy}");
        assert!(response.text().await.unwrap().contains(excerpt), "{path}");
    }
}

#[tokio::test]
async fn the_page_may_connect_to_the_public_url() {
    let server = start(ServerConfig {
        public_url: Some(PublicUrl::parse("https://uploads.example.com/base").unwrap()),
        ..ServerConfig::default()
    })
    .await;
    let response = server.client.get(server.url("/")).send().await.unwrap();
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(
        policy.contains("connect-src 'self' https://uploads.example.com;"),
        "{policy}"
    );
}

#[tokio::test]
async fn every_response_has_a_request_id_readable_cross_origin() {
    let server = TestServer::start().await;
    let given = server
        .client
        .request(Method::OPTIONS, server.url("/files/"))
        .header("Origin", "https://app.example")
        .header("X-Request-Id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-42");
    let exposed = given.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("X-Request-Id"), "{exposed}");
    // Generated when absent or not sane; never twice the same.
    let mut seen = std::collections::HashSet::new();
    for given in [None, Some("with space"), Some(&*"x".repeat(200))] {
        let mut request = server.client.get(server.url("/healthz"));
        if let Some(id) = given {
            request = request.header("X-Request-Id", id);
        }
        let response = request.send().await.unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(id.len(), 16, "{id}");
        assert!(seen.insert(id));
    }
    // On errors and unknown paths too.
    let missing = server.client.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.headers().contains_key("x-request-id"));
    // A preflight allows sending one.
    let preflight = server
        .client
        .request(Method::OPTIONS, server.url("/upload"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("X-Request-Id"), "{allowed}");
}

fn public(url: &str) -> ServerConfig {
    ServerConfig {
        public_url: Some(PublicUrl::parse(url).unwrap()),
        // The public URL wins over forwarded headers.
        behind_proxy: true,
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn the_public_url_is_the_base_of_every_upload_url() {
    const BASE: &str = "https://uploads.example.com/base/files/";
    let server = start(public("https://uploads.example.com/base/")).await;
    let tus = location_with(&server, &[("Forwarded", "proto=http;host=other.example")]).await;
    assert!(tus.starts_with(BASE), "tus: {tus}");
    let ietf = server
        .client
        .post(server.url("/files/"))
        .header("Upload-Draft-Interop-Version", "8")
        .header("Upload-Complete", "?1")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(ietf.status(), StatusCode::CREATED);
    let ietf = ietf.headers()["location"].to_str().unwrap();
    assert!(ietf.starts_with(BASE), "IETF: {ietf}");
    let simple = server
        .client
        .post(server.url("/upload"))
        .header("X-File-Id", "public-1-1")
        .header("X-Start-Byte", "0")
        .body("a")
        .send()
        .await
        .unwrap();
    assert_eq!(simple.status(), StatusCode::OK);
    let simple = simple.headers()["location"].to_str().unwrap();
    assert!(simple.starts_with(BASE), "simple: {simple}");
    // The server's own routes do not move: the proxy strips the prefix.
    let id = tus.strip_prefix(BASE).unwrap();
    let head = server
        .client
        .head(server.url(&format!("/files/{id}")))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
}

#[tokio::test]
async fn concatenation_parts_are_named_under_the_public_url() {
    let server = start(public("https://uploads.example.com/base")).await;
    let partial = |length: &'static str| {
        server
            .client
            .post(server.url("/files/"))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", length)
            .header("Upload-Concat", "partial")
            .send()
    };
    let mut parts = Vec::new();
    for length in ["2", "3"] {
        let response = partial(length).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let url = response.headers()["location"].to_str().unwrap().to_owned();
        let path = url
            .strip_prefix("https://uploads.example.com/base")
            .unwrap();
        let body = if length == "2" { "ab" } else { "cde" };
        let appended = server
            .client
            .patch(server.url(path))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(appended.status(), StatusCode::NO_CONTENT);
        parts.push(url);
    }
    let concat = |value: String| {
        server
            .client
            .post(server.url("/files/"))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Concat", value)
            .send()
    };
    let id = |url: &str| url.rsplit('/').next().unwrap().to_owned();
    // Not under the public URL: the request's own origin, a path without the prefix, another
    // host.
    for outside in [
        format!("http://{}/files/{}", server.address, id(&parts[0])),
        format!("/files/{}", id(&parts[0])),
        format!("https://elsewhere.example/base/files/{}", id(&parts[0])),
    ] {
        let refused = concat(format!("final;{outside} {}", parts[1]))
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{outside}");
    }
    // The absolute URL as handed out, or its path with the prefix.
    let path = parts[1]
        .strip_prefix("https://uploads.example.com")
        .unwrap();
    let final_upload = concat(format!("final;{} {path}", parts[0])).await.unwrap();
    assert_eq!(final_upload.status(), StatusCode::CREATED);
    let url = final_upload.headers()["location"].to_str().unwrap();
    let path = url
        .strip_prefix("https://uploads.example.com/base")
        .unwrap();
    let downloaded = server.client.get(server.url(path)).send().await.unwrap();
    assert_eq!(downloaded.text().await.unwrap(), "abcde");
}

#[tokio::test]
async fn a_page_on_another_origin_may_import_the_client() {
    let server = TestServer::start().await;
    let response = server
        .client
        .get(server.url("/resumable.js"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let server = TestServer::start().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let created = client
        .post(server.url("/files/"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "5")
        .send()
        .await
        .unwrap();
    assert_eq!(created.version(), reqwest::Version::HTTP_2);
    assert_eq!(created.status(), StatusCode::CREATED);
    let path = common::path_of(&created);
    let appended = client
        .patch(server.url(&path))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), StatusCode::NO_CONTENT);
    assert_eq!(appended.headers()["upload-offset"], "5");
    assert_eq!(common::download(&server, &path).await, b"hello");
}

/// A connection that never sends a byte is not yet an HTTP connection; it must not keep the
/// server from stopping.
#[tokio::test]
async fn a_silent_connection_does_not_hold_up_shutdown() {
    let server = TestServer::start().await;
    let silent = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let listed = common::options(&server).await;
    assert_eq!(listed.status(), StatusCode::NO_CONTENT);
    tokio::time::timeout(std::time::Duration::from_secs(10), server.shutdown())
        .await
        .expect("the server stopped with a silent connection open");
    drop(silent);
}

const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);

async fn start_with_head_timeout() -> TestServer {
    start(ServerConfig {
        head_timeout: HEAD_TIMEOUT,
        ..ServerConfig::default()
    })
    .await
}

/// Reads until the server closes the connection (or resets it); how long that took.
async fn time_until_closed(stream: &mut tokio::net::TcpStream) -> std::time::Duration {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let closed = async {
        let mut buffer = [0; 1024];
        while let Ok(read @ 1..) = stream.read(&mut buffer).await {
            let _ = read;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), closed)
        .await
        .expect("the server closed the connection");
    started.elapsed()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_head_timeout() {
    let server = start_with_head_timeout().await;
    let mut silent = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    assert!(time_until_closed(&mut silent).await >= HEAD_TIMEOUT);
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_once_silent_for_the_head_timeout() {
    use tokio::io::AsyncWriteExt;
    let server = start_with_head_timeout().await;
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = common::read_response_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(time_until_closed(&mut stream).await >= HEAD_TIMEOUT);
}

/// The head timeout is about request heads: a body that pauses for longer is governed by the
/// body timeout alone.
#[tokio::test]
async fn a_body_pausing_longer_than_the_head_timeout_still_completes() {
    use tokio::io::AsyncWriteExt;
    let server = start_with_head_timeout().await;
    let path = common::path_of(
        &common::tus(&server, Method::POST, "/files/")
            .header("Upload-Length", "10")
            .send()
            .await
            .unwrap(),
    );
    let head = common::patch_head(&path, 10, "");
    let mut stream = server.send_partial(&head, b"01234").await;
    server
        .eventually(|| async { (server.stored_bytes() == 5).then_some(()) })
        .await;
    // Wait until the head timeout has visibly passed: a silent connection opened now is closed.
    let mut silent = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    assert!(time_until_closed(&mut silent).await >= HEAD_TIMEOUT);
    stream.write_all(b"56789").await.unwrap();
    let response = common::read_response_head(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 204"), "{response}");
    assert!(response.contains("upload-offset: 10\r\n"), "{response}");
}
