//! The real `resumable` binary as a child process, and just enough of a tus client to drive it.
//!
//! Every server lives in a [`Server`] guard whose `Drop` kills it, so a failing assertion never
//! leaves a process behind; when a test fails, the guard prints the server's log.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub(crate) mod gate;
pub(crate) mod scrape;

use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a server may take to print its address.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// Between two looks at a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A fresh scratch directory under Cargo's per-target temp dir, removed when dropped.
pub(crate) fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cli-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create scratch directory")
}

/// `resumable` with a clean environment: no inherited `RESUMABLE_*` setting may change what a
/// test means, and the working directory is `work` so a default `./uploads` lands there.
pub(crate) fn command(work: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_resumable"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RESUMABLE_") {
            command.env_remove(name);
        }
    }
    command.current_dir(work).stdin(Stdio::null());
    command
}

/// `resumable serve` on a free loopback port over `data_dir`, plus `extra` flags.
pub(crate) fn serve_command(data_dir: &Path, extra: &[&str]) -> Command {
    let work = data_dir.parent().expect("data dir has a parent");
    let mut command = command(work);
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra);
    command
}

/// Distinct log file names for every process a test binary starts (servers get restarted).
fn log_paths(logs: &Path) -> (PathBuf, PathBuf) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let number = NEXT.fetch_add(1, Ordering::Relaxed);
    (
        logs.join(format!("resumable-{number}.stdout")),
        logs.join(format!("resumable-{number}.stderr")),
    )
}

fn spawn(command: &mut Command, logs: &Path) -> (Child, PathBuf, PathBuf) {
    let (stdout, stderr) = log_paths(logs);
    // Files rather than pipes: a pipe nobody drains would eventually block the server's logging.
    let child = command
        .stdout(std::fs::File::create(&stdout).expect("create stdout log"))
        .stderr(std::fs::File::create(&stderr).expect("create stderr log"))
        .spawn()
        .expect("spawn resumable");
    (child, stdout, stderr)
}

/// A running `resumable serve`, killed when dropped.
pub(crate) struct Server {
    child: Child,
    /// Where it listens (always loopback).
    pub(crate) address: SocketAddr,
    /// `http://127.0.0.1:PORT`, or `https://` when it serves TLS.
    pub(crate) base: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Server {
    /// `resumable serve --listen 127.0.0.1:0 --data-dir DATA_DIR EXTRA...`; logs go next to the
    /// data dir.
    pub(crate) fn serve(data_dir: &Path, extra: &[&str]) -> Server {
        let logs = data_dir.parent().expect("data dir has a parent").to_owned();
        Server::start(&mut serve_command(data_dir, extra), &logs)
    }

    /// Spawns `command` and waits for its one stdout line `resumable listening on http://ADDR`
    /// (`https://` with TLS).
    pub(crate) fn start(command: &mut Command, logs: &Path) -> Server {
        let (child, stdout, stderr) = spawn(command, logs);
        let mut server = Server {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            base: String::new(),
            stdout: stdout.clone(),
            stderr,
        };
        let deadline = Instant::now() + START_DEADLINE;
        let line = loop {
            let printed = std::fs::read_to_string(&stdout).unwrap_or_default();
            if let Some((line, _)) = printed.split_once('\n') {
                break line.to_owned();
            }
            if let Some(status) = server.child.try_wait().expect("poll server") {
                panic!(
                    "server exited ({status}) before listening:\n{}",
                    server.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server printed no address within {START_DEADLINE:?}:\n{}",
                server.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        };
        let url = line
            .strip_prefix("resumable listening on ")
            .unwrap_or_else(|| panic!("unexpected first stdout line {line:?}"));
        let (scheme, address) = url
            .split_once("://")
            .filter(|(scheme, _)| ["http", "https"].contains(scheme))
            .unwrap_or_else(|| panic!("no http:// or https:// address in {line:?}"));
        server.address = address
            .parse()
            .unwrap_or_else(|_| panic!("unparsable address in {line:?}"));
        assert!(
            server.address.ip().is_loopback(),
            "listens on {}",
            server.address
        );
        assert_ne!(server.address.port(), 0, "printed port 0");
        server.base = format!("{scheme}://{}", server.address);
        server
    }

    /// The process id, for signals and `/proc`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whatever the server wrote on stdout so far.
    pub(crate) fn printed(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Whatever the server wrote on stderr so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILL, and reap it.
    pub(crate) fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.child.kill().expect("SIGKILL the server");
        }
        self.child.wait().expect("reap the server");
    }

    /// SIGTERM, then wait for the process to exit; returns how it exited and how long it took.
    /// Panics if it is still running after `deadline`.
    pub(crate) fn terminate(&mut self, deadline: Duration) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        // `kill(1)` rather than libc: the workspace forbids unsafe code.
        let signalled = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(signalled.success(), "kill -TERM failed: {signalled}");
        loop {
            if let Some(status) = self.child.try_wait().expect("poll server") {
                return (status, sent.elapsed());
            }
            assert!(
                sent.elapsed() < deadline,
                "server still running {deadline:?} after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether the server process has the file at `path` open (Linux `/proc`): a way to see an
    /// append start without sending a request, which could make the server cut it.
    pub(crate) fn has_open(&self, path: &Path) -> bool {
        let Ok(wanted) = std::fs::canonicalize(path) else {
            return false;
        };
        let Ok(entries) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return false;
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read_link(entry.path()).ok())
            .any(|target| target == wanted)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- server log ({}) ---\n{}", self.base, self.log());
        }
    }
}

/// How a short-lived `resumable` run ended.
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `command` to its exit (killing it after `deadline`, which fails the test).
pub(crate) fn run_to_exit(command: &mut Command, logs: &Path, deadline: Duration) -> Finished {
    let (mut child, stdout, stderr) = spawn(command, logs);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {deadline:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    Finished {
        status,
        stdout: std::fs::read_to_string(stdout).expect("read stdout"),
        stderr: std::fs::read_to_string(stderr).expect("read stderr"),
    }
}

/// Polls `condition` every few milliseconds until it holds; fails the test after `deadline`.
pub(crate) async fn wait_until(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> bool,
) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `len` deterministic pseudo-random bytes (splitmix64), so failures reproduce.
pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^= mixed >> 31;
        bytes.extend_from_slice(&mixed.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Asserts `stored` is a prefix of `source`, naming the first wrong byte instead of printing
/// megabytes.
pub(crate) fn assert_prefix_of(stored: &[u8], source: &[u8]) {
    assert!(
        stored.len() <= source.len(),
        "stored {} bytes, more than the source's {}",
        stored.len(),
        source.len()
    );
    if let Some(position) = stored
        .iter()
        .zip(source)
        .position(|(stored, source)| stored != source)
    {
        panic!(
            "stored byte {position} is {:#04x}, the source has {:#04x} (stored length {})",
            stored[position],
            source[position],
            stored.len()
        );
    }
}

/// The data file of an upload in the disk store: its length is the upload's offset.
pub(crate) fn data_file(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("uploads").join(format!("{id}.bin"))
}

/// The committed length of upload `id` (`uploads/ID.len`, the store's record of how many bytes
/// of the data file are durable): 0 while there is none. Two 512-byte slots, each
/// `RLEN`, sequence (u64 LE), length (u64 LE), CRC-32; the newest slot counts.
pub(crate) fn committed_length(data_dir: &Path, id: &str) -> u64 {
    let bytes =
        std::fs::read(data_dir.join("uploads").join(format!("{id}.len"))).unwrap_or_default();
    let number = |slot: &[u8], at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().unwrap());
    bytes
        .chunks(512)
        .filter(|slot| slot.len() >= 24 && slot.starts_with(b"RLEN"))
        .map(|slot| (number(slot, 4), number(slot, 12)))
        .max()
        .map_or(0, |(_, length)| length)
}

/// The length of `path`, 0 while it does not exist.
pub(crate) fn file_length(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

/// A minimal tus 1.0.0 client for one server.
pub(crate) struct Tus {
    http: reqwest::Client,
    base: String,
}

impl Tus {
    pub(crate) fn new(server: &Server) -> Tus {
        Tus {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("build http client"),
            base: server.base.clone(),
        }
    }

    pub(crate) fn url(&self, id: &str) -> String {
        format!("{}/files/{id}", self.base)
    }

    /// POST /files/ with `Upload-Length`; the raw response.
    pub(crate) async fn post(&self, length: u64) -> reqwest::Response {
        self.http
            .post(format!("{}/files/", self.base))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", length.to_string())
            .send()
            .await
            .expect("POST /files/")
    }

    /// Creates an upload of `length` bytes; returns its id (the last segment of `Location`).
    pub(crate) async fn create(&self, length: u64) -> String {
        let response = self.post(length).await;
        assert_eq!(response.status(), 201, "creation");
        let location = header(&response, "Location");
        let id = location
            .rsplit('/')
            .next()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| panic!("no id in Location {location:?}"));
        id.to_owned()
    }

    /// HEAD: the upload's `Upload-Offset`.
    pub(crate) async fn offset(&self, id: &str) -> u64 {
        let response = self
            .http
            .head(self.url(id))
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .expect("HEAD");
        assert_eq!(response.status(), 200, "HEAD {id}");
        parse_offset(&header(&response, "Upload-Offset"))
    }

    /// PATCH `body` at `offset`; the raw response.
    pub(crate) async fn patch(&self, id: &str, offset: u64, body: Vec<u8>) -> reqwest::Response {
        self.http
            .patch(self.url(id))
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(body)
            .send()
            .await
            .expect("PATCH")
    }

    /// GET /files/{id}: the completed upload's bytes.
    pub(crate) async fn download(&self, id: &str) -> Vec<u8> {
        let response = self
            .http
            .get(self.url(id))
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200, "download {id}");
        response.bytes().await.expect("download body").to_vec()
    }

    /// PATCHes the rest of `source` from the server's offset, then checks the download's SHA-256.
    pub(crate) async fn finish_and_verify(&self, id: &str, source: &[u8]) {
        let offset = self.offset(id).await;
        let start = usize::try_from(offset).expect("offset fits usize");
        let response = self.patch(id, offset, source[start..].to_vec()).await;
        assert_eq!(response.status(), 204, "resuming PATCH from {offset}");
        assert_eq!(
            parse_offset(&header(&response, "Upload-Offset")),
            source.len() as u64,
            "offset after the resuming PATCH"
        );
        let downloaded = self.download(id).await;
        assert_eq!(downloaded.len(), source.len(), "downloaded length");
        assert_eq!(
            sha256_hex(&downloaded),
            sha256_hex(source),
            "SHA-256 of the download"
        );
    }
}

/// The IETF draft's interop version the [`Ietf`] client speaks (the current one).
pub(crate) const IETF_VERSION: &str = "8";

/// A minimal client of the IETF draft "Resumable Uploads for HTTP" (interop version 8) for one
/// server: creation, offset retrieval, append, and the download.
pub(crate) struct Ietf {
    http: reqwest::Client,
    base: String,
}

impl Ietf {
    pub(crate) fn new(server: &Server) -> Ietf {
        Ietf {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("build http client"),
            base: server.base.clone(),
        }
    }

    pub(crate) fn url(&self, id: &str) -> String {
        format!("{}/files/{id}", self.base)
    }

    /// Creates an upload of `length` bytes without content (`Upload-Complete: ?0`,
    /// `Upload-Length`); returns its id (the last segment of `Location`).
    pub(crate) async fn create(&self, length: u64) -> String {
        let response = self
            .http
            .post(format!("{}/files/", self.base))
            .header("Upload-Draft-Interop-Version", IETF_VERSION)
            .header("Upload-Complete", "?0")
            .header("Upload-Length", length.to_string())
            .send()
            .await
            .expect("POST /files/");
        assert_eq!(response.status(), 201, "creation");
        let location = header(&response, "Location");
        let id = location
            .rsplit('/')
            .next()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| panic!("no id in Location {location:?}"));
        id.to_owned()
    }

    /// Offset retrieval (`HEAD`): the upload's `Upload-Offset`.
    pub(crate) async fn offset(&self, id: &str) -> u64 {
        let response = self
            .http
            .head(self.url(id))
            .header("Upload-Draft-Interop-Version", IETF_VERSION)
            .send()
            .await
            .expect("HEAD");
        assert_eq!(response.status(), 204, "HEAD {id}");
        assert_eq!(header(&response, "Cache-Control"), "no-store");
        parse_offset(&header(&response, "Upload-Offset"))
    }

    /// Appends `body` at `offset` (`application/partial-upload`), saying whether it completes
    /// the upload; the raw response.
    pub(crate) async fn patch(
        &self,
        id: &str,
        offset: u64,
        complete: bool,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.http
            .patch(self.url(id))
            .header("Upload-Draft-Interop-Version", IETF_VERSION)
            .header("Content-Type", "application/partial-upload")
            .header("Upload-Offset", offset.to_string())
            .header("Upload-Complete", if complete { "?1" } else { "?0" })
            .body(body)
            .send()
            .await
            .expect("PATCH")
    }

    /// The completed upload's bytes: a plain download (in interop 8 a `GET` naming the version
    /// is an offset retrieval).
    pub(crate) async fn download(&self, id: &str) -> Vec<u8> {
        let response = self.http.get(self.url(id)).send().await.expect("GET");
        assert_eq!(response.status(), 200, "download {id}");
        response.bytes().await.expect("download body").to_vec()
    }

    /// Appends the rest of `source` from the server's offset, completing the upload, then
    /// checks the download's SHA-256.
    pub(crate) async fn finish_and_verify(&self, id: &str, source: &[u8]) {
        let offset = self.offset(id).await;
        let start = usize::try_from(offset).expect("offset fits usize");
        let response = self.patch(id, offset, true, source[start..].to_vec()).await;
        assert_eq!(response.status(), 204, "resuming PATCH from {offset}");
        assert_eq!(header(&response, "Upload-Complete"), "?1");
        assert_eq!(
            parse_offset(&header(&response, "Upload-Offset")),
            source.len() as u64,
            "offset after the resuming PATCH"
        );
        let downloaded = self.download(id).await;
        assert_eq!(downloaded.len(), source.len(), "downloaded length");
        assert_eq!(
            sha256_hex(&downloaded),
            sha256_hex(source),
            "SHA-256 of the download"
        );
    }
}

/// A response header as text; fails the test when it is missing.
pub(crate) fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {response:?}"))
        .to_str()
        .expect("ASCII header")
        .to_owned()
}

fn parse_offset(text: &str) -> u64 {
    text.parse()
        .unwrap_or_else(|_| panic!("Upload-Offset {text:?} is not a number"))
}

/// Opens a tus PATCH over a raw socket and sends only its head, announcing `content_length`
/// body bytes: the test decides how much of the body ever arrives.
pub(crate) async fn open_patch(
    address: SocketAddr,
    id: &str,
    offset: u64,
    content_length: u64,
) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "PATCH /files/{id} HTTP/1.1\r\nHost: {address}\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n\
         Content-Length: {content_length}\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send PATCH head");
    stream
}

/// Opens an IETF draft append (interop 8, `application/partial-upload`, `Upload-Complete: ?1`:
/// the rest of the upload) over a raw socket and sends only its head, announcing
/// `content_length` body bytes: the test decides how much of the body ever arrives.
pub(crate) async fn open_ietf_patch(
    address: SocketAddr,
    id: &str,
    offset: u64,
    content_length: u64,
) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "PATCH /files/{id} HTTP/1.1\r\nHost: {address}\r\n\
         Upload-Draft-Interop-Version: {IETF_VERSION}\r\n\
         Content-Type: application/partial-upload\r\nUpload-Offset: {offset}\r\n\
         Upload-Complete: ?1\r\nContent-Length: {content_length}\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send PATCH head");
    stream
}

/// Writes `bytes` to `stream`, failing the test if the server stops reading for too long.
pub(crate) async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    tokio::time::timeout(Duration::from_secs(10), stream.write_all(bytes))
        .await
        .expect("server kept reading the body")
        .expect("send body bytes");
}

/// Reads whatever response arrives until the server closes the connection or `deadline` passes.
pub(crate) async fn read_response(stream: &mut TcpStream, deadline: Duration) -> String {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(deadline, stream.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).into_owned()
}

/// The value of header `name` in a raw HTTP response head, if present.
pub(crate) fn raw_header(response: &str, name: &str) -> Option<String> {
    response
        .split("\r\n\r\n")
        .next()?
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim().to_owned())
}

/// True when `text` mentions `needle`, ignoring case.
pub(crate) fn mentions(text: &str, needle: &str) -> bool {
    text.to_lowercase().contains(&needle.to_lowercase())
}
