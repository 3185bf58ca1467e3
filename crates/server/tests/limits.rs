//! The limits an operator sets, over real connections: open connections (in all, per client),
//! request head size, the minimum body rate, metadata size, creations per minute. Each test
//! fails if its limit is taken away.

mod common;

use common::{OCTETS, TestServer, config, path_of, read_response_head, tus};
use reqwest::{Method, StatusCode};
use resumable_core::{MinRate, ServiceConfig};
use resumable_server::auth::{Auth, TokensAuth};
use resumable_server::{ConnectionLimits, ServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn connection_limits(
    max_connections: Option<usize>,
    max_per_client: Option<usize>,
) -> ServerConfig {
    ServerConfig {
        connection_limits: ConnectionLimits {
            max_connections,
            max_per_client,
        },
        ..ServerConfig::default()
    }
}

/// A connection to `server` from the loopback address `from` (any of 127.0.0.0/8).
async fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Whether `stream` is served: a `GET /healthz` on it gets its `200`.
async fn served(stream: &mut TcpStream) -> bool {
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    read_response_head(stream).await.starts_with("HTTP/1.1 200")
}

/// Whether the server closed `stream` without a word, within a second.
async fn closed_at_once(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn connections_past_the_maximum_are_closed_until_one_ends() {
    let server = TestServer::start_full(config(), connection_limits(Some(3), None)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.address).await.unwrap());
    }
    // Accepted, then closed: no request is read, the accept loop goes on.
    let mut refused = TcpStream::connect(server.address).await.unwrap();
    assert!(closed_at_once(&mut refused).await);
    // The held ones are served as usual.
    assert!(served(&mut held[0]).await);
    // Once one ends, a new connection gets its place.
    drop(held.pop());
    let mut next = server
        .eventually(|| async {
            let mut stream = TcpStream::connect(server.address).await.ok()?;
            served(&mut stream).await.then_some(stream)
        })
        .await;
    assert!(served(&mut next).await);
    let mut another = TcpStream::connect(server.address).await.unwrap();
    assert!(closed_at_once(&mut another).await);
}

#[tokio::test]
async fn a_client_past_its_connections_is_closed_while_others_are_served() {
    let server = TestServer::start_full(config(), connection_limits(None, Some(2))).await;
    let mut first = connect_from("127.0.0.1", server.address).await;
    let _second = connect_from("127.0.0.1", server.address).await;
    let mut third = connect_from("127.0.0.1", server.address).await;
    assert!(closed_at_once(&mut third).await);
    // Another client is not held back.
    let mut other = connect_from("127.0.0.2", server.address).await;
    assert!(served(&mut other).await);
    assert!(served(&mut first).await);
}

#[tokio::test]
async fn behind_a_proxy_connections_count_only_in_all() {
    let server_config = ServerConfig {
        behind_proxy: true,
        ..connection_limits(Some(3), Some(1))
    };
    let server = TestServer::start_full(config(), server_config).await;
    // Every connection is the proxy's: the per-client cap would cap the proxy.
    let mut first = connect_from("127.0.0.1", server.address).await;
    let mut second = connect_from("127.0.0.1", server.address).await;
    assert!(served(&mut first).await);
    assert!(served(&mut second).await);
}

/// A request head with one `X-Pad` field of `pad` bytes.
fn head_with_pad(pad: usize) -> String {
    format!(
        "OPTIONS /files/ HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(pad)
    )
}

#[tokio::test]
async fn a_head_past_the_limit_is_refused_with_431() {
    let server_config = ServerConfig {
        max_header_size: 16 * 1024,
        ..ServerConfig::default()
    };
    let server = TestServer::start_full(config(), server_config).await;
    let response = server.raw(head_with_pad(12 * 1024).as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 204"), "{response}");
    let response = server.raw(head_with_pad(20 * 1024).as_bytes()).await;
    assert!(
        response.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{response}"
    );
    // A head that never ends is refused as soon as it passes the limit, not at the head
    // timeout (30 s), and its connection closed.
    let started = Instant::now();
    let mut endless = server
        .send_partial("PATCH /files/x HTTP/1.1\r\nHost: x\r\n", b"")
        .await;
    let line = format!("X-Pad: {}\r\n", "b".repeat(1000));
    for _ in 0..20 {
        if endless.write_all(line.as_bytes()).await.is_err() {
            break;
        }
    }
    let response = read_response_head(&mut endless).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(closed_at_once(&mut endless).await);
}

#[tokio::test]
async fn an_http2_header_list_past_the_limit_is_refused() {
    let server_config = ServerConfig {
        max_header_size: 32 * 1024,
        ..ServerConfig::default()
    };
    let server = TestServer::start_full(config(), server_config).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let send = |pad: usize| {
        client
            .request(Method::OPTIONS, server.url("/files/"))
            .header("x-pad", "a".repeat(pad))
            .send()
    };
    // Above hyper's own HTTP/2 default (16 KiB): the setting is what lets it through.
    let fits = send(24 * 1024).await.unwrap();
    assert_eq!(fits.status(), StatusCode::NO_CONTENT);
    assert_eq!(fits.version(), reqwest::Version::HTTP_2);
    // hyper's h2 answers the stream itself.
    let over = send(40 * 1024).await.unwrap();
    assert_eq!(over.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[tokio::test]
async fn a_trickling_body_is_cut_at_the_minimum_rate_with_every_byte_kept() {
    let service = ServiceConfig {
        body_idle_timeout: Duration::from_secs(10),
        min_body_rate: Some(MinRate {
            bytes_per_second: 1000,
            window: Duration::from_secs(1),
        }),
        ..config()
    };
    let server = TestServer::start_with(service).await;
    let created = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "1000")
        .send()
        .await
        .unwrap();
    let path = path_of(&created);
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: {OCTETS}\r\nUpload-Offset: 0\r\nContent-Length: 1000\r\n\r\n"
    );
    let stream = server.send_partial(&head, b"").await;
    let (mut reader, mut writer) = stream.into_split();
    // One byte every 50 ms: never silent for the body timeout, 20 bytes/s.
    let trickle = tokio::spawn(async move {
        let mut sent = 0u64;
        while sent < 1000 && writer.write_all(b"x").await.is_ok() {
            sent += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent
    });
    let started = Instant::now();
    let mut response = Vec::new();
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(8), async {
        while !response.windows(4).any(|window| window == b"\r\n\r\n") {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    let response = String::from_utf8_lossy(&response).to_lowercase();
    assert!(read.is_ok(), "no answer while the body trickled");
    assert!(response.starts_with("http/1.1 408"), "{response}");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    let stored: u64 = response
        .lines()
        .find_map(|line| line.strip_prefix("upload-offset: "))
        .expect("Upload-Offset")
        .trim()
        .parse()
        .unwrap();
    // About a second of 20 bytes/s, all of it stored: what the 408 says is what HEAD says.
    assert!((5..=60).contains(&stored), "{stored}");
    drop(reader);
    let sent = trickle.await.unwrap();
    assert!(sent >= stored);
    assert_eq!(common::offset(&server, &path).await, stored);
}

#[tokio::test]
async fn metadata_past_the_limit_is_refused_by_every_front_end_and_creates_nothing() {
    let service = ServiceConfig {
        max_metadata_size: Some(64),
        ..config()
    };
    let server = TestServer::start_with(service).await;
    // `filename ` + 56 bytes of base64 = 65 bytes.
    let long_name = "a".repeat(41);
    let encoded = base64_of(long_name.as_bytes());
    let tus_refused = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "3")
        .header("Upload-Metadata", format!("filename {encoded}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        tus_refused.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let message = tus_refused.text().await.unwrap();
    assert!(
        message.contains("65 bytes") && message.contains("at most 64"),
        "{message}"
    );
    // The IETF draft's metadata is the file name of Content-Disposition: the same limit.
    let ietf_refused = server
        .client
        .post(server.url("/files/"))
        .header("Upload-Draft-Interop-Version", "8")
        .header("Upload-Complete", "?0")
        .header("Upload-Length", "3")
        .header(
            "Content-Disposition",
            format!("attachment; filename=\"{long_name}\""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        ietf_refused.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(server.upload_count(), 0);
    let fits = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "3")
        .header(
            "Upload-Metadata",
            format!("filename {}", base64_of(b"a.txt")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), StatusCode::CREATED);
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn create(server: &TestServer, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut request = tus(server, Method::POST, "/files/").header("Upload-Length", "3");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn creations_past_the_rate_are_429_with_retry_after_until_time_passes() {
    let service = ServiceConfig {
        max_creations_per_minute: Some(2),
        ..config()
    };
    let server = TestServer::start_with(service).await;
    let first = create(&server, &[]).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(create(&server, &[]).await.status(), StatusCode::CREATED);
    let refused = create(&server, &[]).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((29..=30).contains(&wait), "{wait}");
    // The simple protocol's first request creates, so it counts too.
    let simple = server
        .client
        .post(server.url("/upload"))
        .header("X-File-Id", "a.txt-3-1")
        .header("X-Start-Byte", "0")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(simple.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(simple.headers().contains_key("retry-after"));
    // So does the IETF draft's creation, answered as a problem with Retry-After.
    let ietf = server
        .client
        .post(server.url("/files/"))
        .header("Upload-Draft-Interop-Version", "8")
        .header("Upload-Complete", "?0")
        .header("Upload-Length", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(ietf.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(ietf.headers().contains_key("retry-after"));
    // Appends to an upload that exists are not creations.
    let path = path_of(&first);
    let append = tus(&server, Method::PATCH, &path)
        .header("Content-Type", OCTETS)
        .header("Upload-Offset", "0")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(append.status(), StatusCode::NO_CONTENT);
    server.clock.advance(Duration::from_secs(wait));
    assert_eq!(create(&server, &[]).await.status(), StatusCode::CREATED);
    assert_eq!(
        create(&server, &[]).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn behind_a_proxy_creations_count_per_forwarded_client() {
    let service = ServiceConfig {
        max_creations_per_minute: Some(1),
        ..config()
    };
    let server_config = ServerConfig {
        behind_proxy: true,
        ..ServerConfig::default()
    };
    let server = TestServer::start_full(service, server_config).await;
    let from = |client: &'static str| [("X-Forwarded-For", client)];
    let alice = from("203.0.113.1");
    assert_eq!(create(&server, &alice).await.status(), StatusCode::CREATED);
    assert_eq!(
        create(&server, &alice).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // A client cannot pass for another by putting an address before the proxy's.
    let spoofed = [("X-Forwarded-For", "198.51.100.9, 203.0.113.1")];
    assert_eq!(
        create(&server, &spoofed).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        create(&server, &from("203.0.113.2")).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn with_authentication_creations_count_per_owner() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "token-a alice\ntoken-b bob\n").unwrap();
    let auth = Auth::Tokens(TokensAuth::new(tokens.path().to_path_buf()).unwrap());
    let service = ServiceConfig {
        max_creations_per_minute: Some(1),
        ..config()
    };
    let server_config = ServerConfig {
        auth: Arc::new(auth),
        ..ServerConfig::default()
    };
    let server = TestServer::start_full(service, server_config).await;
    let alice = [("Authorization", "Bearer token-a")];
    let bob = [("Authorization", "Bearer token-b")];
    assert_eq!(create(&server, &alice).await.status(), StatusCode::CREATED);
    assert_eq!(
        create(&server, &alice).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Same address, another owner: its own allowance.
    assert_eq!(create(&server, &bob).await.status(), StatusCode::CREATED);
}
