//! HTTP/2's protections, over cleartext h2c (prior knowledge) and over TLS: idle connections
//! are closed after the idle timeout (and busy ones are not), streams beyond the concurrency
//! limit wait (a well-behaved client) or are refused (one that ignores the limit), and the
//! flow-control windows let one upload have megabytes in flight.

mod common;

use bytes::Bytes;
use common::{TestServer, config};
use h2::client::SendRequest;
use http::{Method, Request, StatusCode};
use resumable_server::tls::Tls;
use resumable_server::{Http2Config, ServerConfig};
use resumable_testkit::pki::Pki;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How long any one wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

async fn start(http2: Http2Config) -> TestServer {
    let server_config = ServerConfig {
        http2,
        ..ServerConfig::default()
    };
    TestServer::start_full(config(), server_config).await
}

/// An HTTP/2 client connection over `io`; its driver ends when the connection does.
async fn h2_over<T>(io: T) -> (SendRequest<Bytes>, JoinHandle<Result<(), h2::Error>>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(io).await.expect("h2 handshake");
    (send, tokio::spawn(connection))
}

/// A cleartext HTTP/2 connection (prior knowledge).
async fn h2c(server: &TestServer) -> (SendRequest<Bytes>, JoinHandle<Result<(), h2::Error>>) {
    h2_over(TcpStream::connect(server.address).await.expect("connect")).await
}

fn request(server: &TestServer, method: Method, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", server.address))
        .header("tus-resumable", "1.0.0")
}

/// Sends a request without a body and returns its status and headers, the body read.
async fn exchange(send: &mut SendRequest<Bytes>, request: Request<()>) -> http::Response<Bytes> {
    let ready = tokio::time::timeout(PATIENCE, send.clone().ready());
    let mut send_more = ready.await.expect("a stream in time").expect("ready");
    let (response, _) = send_more.send_request(request, true).expect("send");
    let response = tokio::time::timeout(PATIENCE, response).await;
    let (parts, mut body) = response
        .expect("an answer in time")
        .expect("answer")
        .into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    *send = send_more;
    http::Response::from_parts(parts, Bytes::from(bytes))
}

/// Waits for the client's connection driver to end; returns how it ended.
async fn closed(driver: JoinHandle<Result<(), h2::Error>>) -> Result<(), h2::Error> {
    let ended = tokio::time::timeout(PATIENCE, driver).await;
    ended
        .expect("the server closed the connection")
        .expect("driver")
}

/// A graceful close: GOAWAY with NO_ERROR (or the connection simply done).
fn assert_graceful(ended: Result<(), h2::Error>) {
    if let Err(error) = ended {
        assert!(
            error.is_go_away() && error.reason() == Some(h2::Reason::NO_ERROR),
            "closed with {error:?}"
        );
    }
}

fn idle_after(timeout: Duration) -> Http2Config {
    Http2Config {
        idle_timeout: timeout,
        ..Http2Config::default()
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let server = start(idle_after(idle)).await;
    let (mut send, driver) = h2c(&server).await;
    let healthz = request(&server, Method::GET, "/healthz").body(()).unwrap();
    let response = exchange(&mut send, healthz).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answered = Instant::now();
    assert_graceful(closed(driver).await);
    let after = answered.elapsed();
    assert!(
        after >= idle - Duration::from_millis(50),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn an_idle_connection_over_tls_is_closed_too() {
    let pki = Pki::new();
    let leaf = pki.issue("resumable test server", 1);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (cert, key) = leaf.write_to(dir.path());
    let server_config = ServerConfig {
        tls: Some(Arc::new(Tls::load(&cert, &key).unwrap())),
        http2: idle_after(Duration::from_millis(300)),
        ..ServerConfig::default()
    };
    let server = TestServer::start_full(config(), server_config).await;
    let stream = tls_connect(&server, &pki, b"h2").await;
    let (mut send, driver) = h2_over(stream).await;
    let healthz = Request::get(format!(
        "https://localhost:{}/healthz",
        server.address.port()
    ));
    let response = exchange(&mut send, healthz.body(()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_graceful(closed(driver).await);
}

/// A TLS connection to `server` offering only `alpn`.
async fn tls_connect(
    server: &TestServer,
    pki: &Pki,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let root = rustls::pki_types::CertificateDer::from_pem_slice(pki.root_pem().as_bytes());
    roots.add(root.unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(server.address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
    stream
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let server = start(idle_after(Duration::from_millis(200))).await;
    let (_send, driver) = h2c(&server).await;
    assert_graceful(closed(driver).await);
}

#[tokio::test]
async fn an_upload_streaming_longer_than_the_idle_timeout_keeps_its_connection() {
    let idle = Duration::from_millis(200);
    let server = start(idle_after(idle)).await;
    let (mut send, driver) = h2c(&server).await;
    let create = request(&server, Method::POST, "/files/")
        .header("upload-length", "10")
        .body(())
        .unwrap();
    let created = exchange(&mut send, create).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let path = location.split_once("/files/").map(|(_, id)| id).unwrap();
    let path = format!("/files/{path}");
    let patch = request(&server, Method::PATCH, &path)
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(patch, false).unwrap();
    // One byte every 100 ms: the stream stays open for five idle timeouts.
    for byte in 0..10u8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        body.send_data(Bytes::from(vec![b'0' + byte]), byte == 9)
            .unwrap();
    }
    let response = tokio::time::timeout(PATIENCE, response).await.unwrap();
    let response = response.expect("the connection outlived the idle timeout");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.headers()["upload-offset"], "10");
    // The same connection takes another request, then closes once idle.
    let head = request(&server, Method::HEAD, &path).body(()).unwrap();
    assert_eq!(exchange(&mut send, head).await.status(), StatusCode::OK);
    assert_graceful(closed(driver).await);
}

/// A simple-protocol upload whose body has begun and not ended: a stream the server holds open.
fn held_upload(server: &TestServer, id: &str) -> Request<()> {
    request(server, Method::POST, "/upload")
        .header("x-file-id", id)
        .header("x-start-byte", "0")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn streams_beyond_the_limit_wait_until_one_ends() {
    let server = start(Http2Config {
        max_concurrent_streams: 2,
        ..Http2Config::default()
    })
    .await;
    let (mut send, _driver) = h2c(&server).await;
    // A first exchange: the server's SETTINGS (and its limit) have arrived.
    let healthz = request(&server, Method::GET, "/healthz").body(()).unwrap();
    assert_eq!(exchange(&mut send, healthz).await.status(), StatusCode::OK);

    let mut held = Vec::new();
    for id in ["a", "b"] {
        let mut ready = send.clone().ready().await.unwrap();
        let (response, mut body) = ready.send_request(held_upload(&server, id), false).unwrap();
        body.send_data(Bytes::from_static(b"abc"), false).unwrap();
        held.push((response, body));
    }
    // A third stream waits for one of the two to end.
    let third = tokio::spawn({
        let send = send.clone();
        async move {
            let mut send = send.ready().await.unwrap();
            let (response, _) = send.send_request(healthz_request(), true).unwrap();
            response.await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "a third stream was served beside two");
    let (first, mut first_body) = held.remove(0);
    first_body
        .send_data(Bytes::from_static(b"def"), true)
        .unwrap();
    let first = tokio::time::timeout(PATIENCE, first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let third = tokio::time::timeout(PATIENCE, third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.expect("the third stream").status(), StatusCode::OK);
    drop(held);
}

/// `GET /healthz` with a URI whose authority does not matter to the server.
fn healthz_request() -> Request<()> {
    Request::get("http://localhost/healthz").body(()).unwrap()
}

// --- A client that ignores SETTINGS_MAX_CONCURRENT_STREAMS, frame by frame. ---

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const REFUSED_STREAM: u32 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HPACK literal (not indexed) with a static-table name, or a new name if `index` is 0.
fn literal(block: &mut Vec<u8>, index: u8, name: &str, value: &str) {
    block.push(index);
    if index == 0 {
        block.push(u8::try_from(name.len()).unwrap());
        block.extend_from_slice(name.as_bytes());
    }
    block.push(u8::try_from(value.len()).unwrap());
    block.extend_from_slice(value.as_bytes());
}

/// `POST /upload` of the simple protocol, body to follow.
fn upload_headers(id: &str) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    literal(&mut block, 0x04, "", "/upload"); // :path
    literal(&mut block, 0x01, "", "localhost"); // :authority
    literal(&mut block, 0, "x-file-id", id);
    literal(&mut block, 0, "x-start-byte", "0");
    block
}

async fn read_frame(stream: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let read = async {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await.expect("a frame head");
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; length];
        stream
            .read_exact(&mut payload)
            .await
            .expect("a frame payload");
        (head[3], head[4], id, payload)
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("a frame in time")
}

/// The server's SETTINGS as (identifier, value) pairs.
fn settings(payload: &[u8]) -> Vec<(u16, u32)> {
    payload
        .chunks_exact(6)
        .map(|setting| {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            (id, value)
        })
        .collect()
}

#[tokio::test]
async fn a_stream_beyond_the_advertised_limit_is_refused() {
    let server = start(Http2Config {
        max_concurrent_streams: 2,
        ..Http2Config::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let (kind, flags, _, payload) = read_frame(&mut stream).await;
    assert_eq!((kind, flags), (SETTINGS, 0), "the server's SETTINGS first");
    let advertised = settings(&payload);
    assert!(
        advertised.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, 2)),
        "{advertised:?}"
    );
    stream
        .write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .unwrap();
    // Three uploads at once, each with a body still to come.
    for (id, name) in [(1, "one"), (3, "two"), (5, "three")] {
        let headers = frame(HEADERS, END_HEADERS, id, &upload_headers(name));
        stream.write_all(&headers).await.unwrap();
    }
    loop {
        let (kind, _, id, payload) = read_frame(&mut stream).await;
        if kind != RST_STREAM {
            continue; // SETTINGS ACK, WINDOW_UPDATE, PING
        }
        let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
        assert_eq!((id, code), (5, REFUSED_STREAM), "only the third is reset");
        break;
    }
}

#[tokio::test]
async fn the_windows_let_one_upload_have_megabytes_in_flight() {
    let server = start(Http2Config::default()).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let (_, _, _, payload) = read_frame(&mut stream).await;
    let stream_window = settings(&payload)
        .into_iter()
        .find_map(|(id, value)| (id == SETTINGS_INITIAL_WINDOW_SIZE).then_some(value))
        .unwrap_or(65_535);
    // And the connection's: a WINDOW_UPDATE on stream 0 over the initial 65,535 bytes.
    let mut connection_window = 65_535u64;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && connection_window == 65_535 {
        let (kind, _, id, payload) = read_frame(&mut stream).await;
        if kind == 0x8 && id == 0 {
            let increment = u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff;
            connection_window += u64::from(increment);
        }
    }
    const WANTED: u64 = MIN_WINDOW;
    assert!(
        u64::from(stream_window) >= WANTED && connection_window >= WANTED,
        "stream window {stream_window}, connection window {connection_window}: want {WANTED}"
    );
}

/// What one upload must be allowed in flight: see `Http2Config`'s window defaults and
/// bench/RESULTS.md (HTTP/2 against HTTP/1.1).
const MIN_WINDOW: u64 = 4 << 20;
