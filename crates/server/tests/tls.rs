//! HTTPS: uploads over TLS with HTTP/2 or HTTP/1.1 chosen by ALPN, `https://` upload URLs, the
//! certificate replaced while an upload is in flight, broken replacements refused, and the 104
//! interim response through the TLS stream.
//!
//! Every server presents a chain (leaf, intermediate) from the test PKI; clients trust its root
//! only.

mod common;

use bytes::Bytes;
use common::{TestServer, config, read_response_head};
use reqwest::{StatusCode, Version};
use resumable_server::ServerConfig;
use resumable_server::tls::Tls;
use resumable_testkit::pki::{Leaf, Pki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server presenting `leaf`, whose files stay in `dir` for the test to replace.
struct TlsServer {
    server: TestServer,
    tls: Arc<Tls>,
    pki: Pki,
    dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start(pki: Pki, leaf: &Leaf) -> TlsServer {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("cert dir");
        let (cert, key) = leaf.write_to(dir.path());
        let tls = Arc::new(Tls::load(&cert, &key).expect("load the certificate"));
        let server_config = ServerConfig {
            tls: Some(tls.clone()),
            ..ServerConfig::default()
        };
        let server = TestServer::start_full(config(), server_config).await;
        TlsServer {
            server,
            tls,
            pki,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.server.address.port())
    }

    /// A new client (so new connections) trusting the test root; HTTP/2 by ALPN unless
    /// `http1_only`.
    fn client(&self, http1_only: bool) -> reqwest::Client {
        let root = reqwest::Certificate::from_pem(self.pki.root_pem().as_bytes()).expect("root");
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .tls_info(true);
        if http1_only {
            builder = builder.http1_only();
        }
        builder.build().expect("client")
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// The certificate a new connection is shown.
    async fn presented(&self) -> Vec<u8> {
        let response = self.client(false).get(self.url("/healthz")).send();
        peer_certificate(&response.await.expect("GET /healthz"))
    }
}

/// The server certificate of the connection `response` came on.
fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    let info = response.extensions().get::<reqwest::tls::TlsInfo>();
    info.and_then(|info| info.peer_certificate())
        .expect("a TLS connection with a peer certificate")
        .to_vec()
}

/// `len` pseudo-random bytes (xorshift64), different for each `seed`.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Creates a tus upload of `length` bytes and returns its URL.
async fn create(client: &reqwest::Client, server: &TlsServer, length: usize) -> String {
    let response = client
        .post(server.url("/files/"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", length.to_string())
        .send()
        .await
        .expect("POST /files/");
    assert_eq!(response.status(), StatusCode::CREATED);
    response.headers()["location"]
        .to_str()
        .expect("text")
        .to_owned()
}

#[tokio::test]
async fn uploads_over_https_speak_h2_or_http1_by_alpn_and_name_https_urls() {
    let pki = Pki::new();
    let leaf = pki.issue("resumable test server", 1);
    let server = TlsServer::start(pki, &leaf).await;
    for (http1_only, version) in [(false, Version::HTTP_2), (true, Version::HTTP_11)] {
        let client = server.client(http1_only);
        let data = random_bytes(700 * 1024, 7 + u64::from(http1_only));
        // creation-with-upload: the whole file in the creation request.
        let response = client
            .post(server.url("/files/"))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", data.len().to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(data.clone())
            .send()
            .await
            .expect("POST /files/");
        assert_eq!(response.version(), version, "ALPN picked {version:?}");
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["upload-offset"], data.len().to_string());
        assert_eq!(peer_certificate(&response), leaf.der);
        // HTTP/1.1 names the host in `Host`, HTTP/2 in `:authority`: both make absolute URLs.
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let prefix = server.url("/files/");
        assert!(location.starts_with(&prefix), "{location} under {prefix}");
        let download = client.get(&location).send().await.expect("GET the upload");
        assert_eq!(download.version(), version);
        assert_eq!(download.status(), StatusCode::OK);
        assert!(download.bytes().await.unwrap() == data, "bytes differ");
    }
}

#[tokio::test]
async fn a_client_offering_no_alpn_is_served_http1() {
    let pki = Pki::new();
    let leaf = pki.issue("resumable test server", 1);
    let server = TlsServer::start(pki, &leaf).await;
    let mut stream = connect(&server, &[]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let request = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
}

/// A TLS connection to `server` trusting the test root, offering `alpn`.
async fn connect(server: &TlsServer, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let root = CertificateDer::from_pem_slice(server.pki.root_pem().as_bytes()).expect("root");
    roots.add(root).expect("add root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = alpn.iter().map(|name| name.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(server.server.address)
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

#[tokio::test]
async fn a_reloaded_certificate_reaches_new_connections_while_an_upload_in_flight_finishes() {
    let pki = Pki::new();
    let first = pki.issue("first", 1);
    let server = TlsServer::start(pki, &first).await;
    let client = server.client(false);
    let data = random_bytes(900 * 1024, 3);
    let url = create(&client, &server, data.len()).await;

    // A PATCH whose body the test feeds: half now, the rest after the swap.
    let (feed, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = futures_util::stream::unfold(body, |mut body| async {
        body.recv().await.map(|chunk| (chunk, body))
    });
    let patch = tokio::spawn(
        client
            .patch(&url)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Content-Length", data.len().to_string())
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    let half = data.len() / 2;
    feed.send(Ok(Bytes::copy_from_slice(&data[..half])))
        .await
        .unwrap();
    // The server is writing the upload: the request is in flight.
    let stored = || async { (server.server.stored_bytes() > 0).then_some(()) };
    server.server.eventually(stored).await;

    let second = server.pki.issue("second", 2);
    second.write_to(server.dir.path());
    server.tls.reload().expect("reload");
    assert_eq!(server.presented().await, second.der, "a new connection");

    feed.send(Ok(Bytes::copy_from_slice(&data[half..])))
        .await
        .unwrap();
    drop(feed);
    let response = patch.await.unwrap().expect("the PATCH in flight");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.headers()["upload-offset"], data.len().to_string());
    // Its connection kept the session it had, and so does its next request.
    assert_eq!(peer_certificate(&response), first.der);
    let download = client.get(&url).send().await.expect("GET the upload");
    assert_eq!(peer_certificate(&download), first.der);
    assert!(download.bytes().await.unwrap() == data, "bytes differ");
}

#[tokio::test]
async fn a_broken_replacement_keeps_the_certificate_in_use() {
    let pki = Pki::new();
    let first = pki.issue("first", 1);
    let server = TlsServer::start(pki, &first).await;
    let other = server.pki.issue("other", 2);
    let (cert, key) = (server.cert_path(), server.key_path());
    let breakages: [(&str, &dyn Fn(), &str); 4] = [
        (
            "a key of another certificate",
            &|| std::fs::write(&key, &other.key_pem).unwrap(),
            "does not belong to the certificate",
        ),
        (
            "a key file that is no PEM key",
            &|| std::fs::write(&key, "not a key\n").unwrap(),
            "cannot read the TLS private key",
        ),
        (
            "a certificate file without a certificate",
            &|| std::fs::write(&cert, &other.key_pem).unwrap(),
            "holds no certificate",
        ),
        (
            "no certificate file",
            &|| std::fs::remove_file(&cert).unwrap(),
            "cannot read the TLS certificate",
        ),
    ];
    for (what, break_it, expected) in breakages {
        first.write_to(server.dir.path());
        break_it();
        let error = server.tls.reload().expect_err(what);
        assert!(error.contains(expected), "{what}: {error}");
        assert_eq!(server.presented().await, first.der, "after {what}");
    }
    // A good pair after the broken ones is taken.
    other.write_to(server.dir.path());
    server.tls.reload().expect("a good pair");
    assert_eq!(server.presented().await, other.der);
}

#[test]
fn a_pair_that_does_not_belong_together_does_not_load() {
    let pki = Pki::new();
    let (one, two) = (pki.issue("one", 1), pki.issue("two", 2));
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (cert, key) = one.write_to(dir.path());
    std::fs::write(&key, &two.key_pem).unwrap();
    let error = Tls::load(&cert, &key).expect_err("mismatched pair");
    assert!(error.contains("does not belong"), "{error}");
    let missing = Path::new("/nonexistent/cert.pem");
    let error = Tls::load(missing, &key).expect_err("missing file");
    assert!(error.contains("/nonexistent/cert.pem"), "{error}");
}

#[tokio::test]
async fn the_104_goes_out_through_tls_before_the_content() {
    let pki = Pki::new();
    let leaf = pki.issue("resumable test server", 1);
    let server = TlsServer::start(pki, &leaf).await;
    let mut stream = connect(&server, &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let head = "POST /files/ HTTP/1.1\r\nHost: x\r\nUpload-Draft-Interop-Version: 8\r\n\
                Upload-Complete: ?1\r\nContent-Length: 10\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    // Only the head was sent: the 104 comes before any content.
    let interim = read_response_head(&mut stream).await;
    assert!(
        interim.starts_with("HTTP/1.1 104 Upload Resumption Supported\r\n"),
        "{interim}"
    );
    let location = interim
        .lines()
        .find_map(|line| line.strip_prefix("location: "))
        .expect("Location in the 104")
        .to_owned();
    assert!(location.starts_with("https://x/files/"), "{location}");
    stream.write_all(b"0123456789").await.unwrap();
    stream.flush().await.unwrap();
    let last = read_response_head(&mut stream).await;
    assert!(last.starts_with("HTTP/1.1 201 Created\r\n"), "{last}");
    assert!(
        last.contains(&format!("location: {location}\r\n")),
        "{last}"
    );
}
