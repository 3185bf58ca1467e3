//! `resumable serve --tls-cert --tls-key` as the binary runs it: curl uploads over HTTPS with
//! HTTP/2 and HTTP/1.1, SIGHUP swaps the certificate while an upload is in flight (and a broken
//! pair is logged and kept out), RSA and SEC1 EC keys load, and the two flags come as a pair.
//!
//! The certificates come from the testkit's rcgen PKI (a root, an intermediate in the
//! certificate file, a leaf for `localhost` and `127.0.0.1`); curl and reqwest trust the root.

mod common;

use bytes::Bytes;
use common::{Server, run_to_exit, scratch, serve_command, sha256_hex};
use resumable_testkit::pki::{Leaf, Pki};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Bound on a run that should exit by itself, and on any wait for the server.
const DEADLINE: Duration = Duration::from_secs(10);

/// A server presenting `leaf`, with its certificate files in `dir` for the test to replace.
fn serve_tls(scratch: &Path, leaf: &Leaf) -> Server {
    let (cert, key) = leaf.write_to(scratch);
    let server = Server::serve(
        &scratch.join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    server
}

fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        eprintln!("!!! {tool} NOT FOUND: TEST SKIPPED (install {tool} to run it)");
    }
    found
}

/// `len` pseudo-random bytes.
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

/// Runs curl with `args`, failing the test unless it succeeds; returns its stdout.
fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "60"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("curl printed text")
}

#[test]
fn curl_uploads_over_https_with_http2_and_http1_and_gets_the_bytes_back() {
    if !have("curl") {
        return;
    }
    let scratch = scratch();
    let pki = Pki::new();
    let server = serve_tls(scratch.path(), &pki.issue("resumable test server", 1));
    let root = scratch.path().join("root.pem");
    std::fs::write(&root, pki.root_pem()).unwrap();
    let root = root.to_str().unwrap();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let data = random_bytes(3 << 20, version.len() as u64);
        let file = scratch.path().join(format!("upload-{version}.bin"));
        std::fs::write(&file, &data).unwrap();
        // creation-with-upload; -w prints the protocol and the Location curl saw.
        let created = curl(&[
            flag,
            "--cacert",
            root,
            "-X",
            "POST",
            "-H",
            "Tus-Resumable: 1.0.0",
            "-H",
            &format!("Upload-Length: {}", data.len()),
            "-H",
            "Content-Type: application/offset+octet-stream",
            "--data-binary",
            &format!("@{}", file.display()),
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code} %header{location}",
            &format!("{}/files/", server.base),
        ]);
        let parts: Vec<&str> = created.split(' ').collect();
        assert_eq!(parts[..2], [version, "201"], "{created}");
        let location = parts[2].trim();
        let prefix = format!("{}/files/", server.base);
        assert!(location.starts_with(&prefix), "{location} under {prefix}");
        let copy = scratch.path().join(format!("download-{version}.bin"));
        curl(&[
            flag,
            "--cacert",
            root,
            "-o",
            copy.to_str().unwrap(),
            location,
        ]);
        let downloaded = std::fs::read(&copy).unwrap();
        assert_eq!(sha256_hex(&downloaded), sha256_hex(&data), "over {flag}");
    }
}

/// A client trusting `pki`'s root, which shows each response's peer certificate.
fn client(pki: &Pki) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(pki.root_pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .tls_info(true)
        .build()
        .unwrap()
}

fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    let info = response.extensions().get::<reqwest::tls::TlsInfo>();
    info.and_then(|info| info.peer_certificate())
        .expect("a peer certificate")
        .to_vec()
}

/// The certificate a new connection is shown.
async fn presented(server: &Server, pki: &Pki) -> Vec<u8> {
    let response = client(pki).get(format!("{}/healthz", server.base)).send();
    peer_certificate(&response.await.expect("GET /healthz"))
}

fn hang_up(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("run kill -HUP");
    assert!(status.success(), "kill -HUP: {status}");
}

/// Waits until the server's log mentions `text` `count` times.
async fn logged(server: &Server, text: &str, count: usize) {
    let deadline = Instant::now() + DEADLINE;
    while server.log().matches(text).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in the log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sighup_swaps_the_certificate_while_an_upload_in_flight_finishes() {
    let scratch = scratch();
    let pki = Pki::new();
    let first = pki.issue("first", 1);
    let server = serve_tls(scratch.path(), &first);
    let uploader = client(&pki);
    let data = random_bytes(8 << 20, 11);
    let created = uploader
        .post(format!("{}/files/", server.base))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", data.len().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let url = created.headers()["location"].to_str().unwrap().to_owned();
    let id = url.rsplit('/').next().unwrap().to_owned();

    let (feed, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = futures_util::stream::unfold(body, |mut body| async {
        body.recv().await.map(|chunk| (chunk, body))
    });
    let patch = tokio::spawn(
        uploader
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
    // The append is under way: bytes of it are in the upload's data file.
    let file = common::data_file(&scratch.path().join("data"), &id);
    let deadline = Instant::now() + DEADLINE;
    while std::fs::metadata(&file).map_or(0, |meta| meta.len()) == 0 {
        assert!(Instant::now() < deadline, "the append never began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let second = pki.issue("second", 2);
    second.write_to(scratch.path());
    hang_up(&server);
    logged(&server, "TLS certificate reloaded", 1).await;
    assert_eq!(
        presented(&server, &pki).await,
        second.der,
        "a new connection"
    );

    // A broken pair on the next SIGHUP is logged and changes nothing.
    std::fs::write(scratch.path().join("key.pem"), "not a key\n").unwrap();
    hang_up(&server);
    logged(&server, "TLS reload on SIGHUP failed", 1).await;
    assert_eq!(
        presented(&server, &pki).await,
        second.der,
        "after a broken pair"
    );

    feed.send(Ok(Bytes::copy_from_slice(&data[half..])))
        .await
        .unwrap();
    drop(feed);
    let response = patch.await.unwrap().expect("the PATCH in flight");
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["upload-offset"], data.len().to_string());
    assert_eq!(
        peer_certificate(&response),
        first.der,
        "its connection's own"
    );
    let download = uploader.get(&url).send().await.unwrap();
    let downloaded = download.bytes().await.unwrap();
    assert_eq!(sha256_hex(&downloaded), sha256_hex(&data));
}

#[test]
fn rsa_and_sec1_ec_keys_load() {
    if !have("openssl") || !have("curl") {
        return;
    }
    let scratch = scratch();
    let keys: [(&str, &[&str], &str); 2] = [
        (
            "rsa",
            &["genrsa", "-traditional", "2048"],
            "-----BEGIN RSA PRIVATE KEY-----",
        ),
        (
            "ec",
            &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
            "-----BEGIN EC PRIVATE KEY-----",
        ),
    ];
    for (name, generate, header) in keys {
        let dir = scratch.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let key = dir.join("key.pem");
        openssl(generate, &key);
        assert!(std::fs::read_to_string(&key).unwrap().starts_with(header));
        let cert = dir.join("cert.pem");
        let request = [
            "req",
            "-new",
            "-x509",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-key",
            key.to_str().unwrap(),
        ];
        openssl(&request, &cert);
        let server = Server::serve(
            &dir.join("data"),
            &[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
        );
        let health = curl(&[
            "--cacert",
            cert.to_str().unwrap(),
            &format!("{}/healthz", server.base),
        ]);
        assert_eq!(health, "ok", "with an {name} key");
    }
}

/// `openssl COMMAND -out OUT ARGS...` (genrsa wants its options before the key size).
fn openssl(args: &[&str], out: &PathBuf) {
    let output = Command::new("openssl")
        .arg(args[0])
        .arg("-out")
        .arg(out)
        .args(&args[1..])
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_tls_flags_come_as_a_pair() {
    let scratch = scratch();
    let data = scratch.path().join("data");
    let leaf = Pki::new().issue("x", 1);
    let (cert, key) = leaf.write_to(scratch.path());
    let mut cert_only = serve_command(&data, &["--tls-cert", cert.to_str().unwrap()]);
    let mut key_only = serve_command(&data, &[]);
    key_only.env("RESUMABLE_TLS_KEY", &key);
    for (command, missing) in [(&mut cert_only, "--tls-key"), (&mut key_only, "--tls-cert")] {
        let finished = run_to_exit(command, scratch.path(), DEADLINE);
        assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
        assert!(
            finished.stderr.contains(missing) && finished.stderr.contains("both or neither"),
            "{}",
            finished.stderr
        );
        assert!(
            !finished.stdout.contains("listening"),
            "{}",
            finished.stdout
        );
    }
    // A pair that does not load is named, and nothing listens.
    std::fs::write(&key, "not a key\n").unwrap();
    let mut broken = serve_command(&data, &[]);
    broken
        .env("RESUMABLE_TLS_CERT", &cert)
        .env("RESUMABLE_TLS_KEY", &key);
    let finished = run_to_exit(&mut broken, scratch.path(), DEADLINE);
    assert!(!finished.status.success());
    assert!(
        finished.stderr.contains(key.to_str().unwrap()),
        "{}",
        finished.stderr
    );
    assert!(
        !finished.stdout.contains("listening"),
        "{}",
        finished.stdout
    );
}

#[test]
fn serve_help_documents_the_tls_and_http2_flags() {
    let scratch = scratch();
    let mut help = common::command(scratch.path());
    help.args(["serve", "--help"]);
    let finished = run_to_exit(&mut help, scratch.path(), DEADLINE);
    for expected in [
        "--tls-cert",
        "RESUMABLE_TLS_CERT",
        "--tls-key",
        "RESUMABLE_TLS_KEY",
        "--http2-max-streams",
        "RESUMABLE_HTTP2_MAX_STREAMS",
        "[default: 100]",
        "--http2-idle-timeout",
        "RESUMABLE_HTTP2_IDLE_TIMEOUT",
        "[default: 60s]",
    ] {
        assert!(
            finished.stdout.contains(expected),
            "{expected}: {}",
            finished.stdout
        );
    }
}
