//! Interim (1xx) responses on HTTP/1.1, such as the resumable-uploads draft's `104 Upload
//! Resumption Supported`, which hyper's server cannot send (it writes only its own automatic
//! `100 Continue`; a 1xx returned as a response becomes a 500).
//!
//! A handler queues one through the [`Interim`] extension of its request; the connection's IO,
//! an [`InterimIo`] around the socket, writes it out between hyper's own writes. The extension is
//! only on HTTP/1.1 requests: RFC 9110 §15.2 forbids 1xx to HTTP/1.0 clients, and on HTTP/2 raw
//! bytes would corrupt the framing (hyper keeps h2's `SendResponse::send_informational` private).
//!
//! # Why the bytes never split one of hyper's messages
//!
//! - hyper flushes only once it has handed over all it has buffered (its `pipeline_flush`, which
//!   would break this, stays off), so when a flush completes with no bytes accepted since,
//!   everything hyper has produced is on the wire and its next bytes start a message. Interim
//!   bytes go only then (*at a boundary*).
//! - hyper reads the next request's head as soon as the last response is buffered, not sent, so
//!   each request needs a flush of its own first: a boundary reached during an earlier request
//!   does not count (nothing is buffered before the first request).
//! - While a request is served hyper's only other message is its `100 Continue`, whole in one
//!   buffer. The final response may span many flushes, so queuing stops when the handler's
//!   response is produced ([`Requests::end`], before hyper can write its head); what is queued
//!   by then goes before hyper's next write or is dropped. A stale [`Interim`] (an earlier
//!   request's) fails by its request number.
//! - Interim bytes, once begun, are finished before hyper's bytes are accepted.
//!
//! Delivery: hyper polls its IO whenever its task wakes, so each poll drains what may go;
//! [`Interim::send`] wakes the task, for a client waiting on the 104 before sending its body.

use axum::http::{HeaderMap, Request, StatusCode, Version};
use futures_util::task::AtomicWaker;
use hyper::rt::{Read, ReadBufCursor, Write};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

/// Queues interim responses for one HTTP/1.1 request; a request extension.
#[derive(Clone)]
pub(crate) struct Interim {
    shared: Arc<Shared>,
    /// The request this is for.
    request: u64,
}

/// The connection's side: gives each request its [`Interim`] and closes it.
#[derive(Clone)]
pub(crate) struct Requests {
    shared: Arc<Shared>,
}

/// The connection's IO, writing queued interim responses between hyper's writes. What it writes
/// outside hyper's flushes it flushes itself, so a buffering IO (TLS, whose records wait in
/// rustls when the socket is full) sends it without waiting for hyper's next write.
///
/// Reads go straight through; the only cost per call is an atomic load and a waker check.
pub(crate) struct InterimIo<T> {
    inner: T,
    shared: Arc<Shared>,
    /// hyper has handed over bytes since its last flush: they may end mid-message.
    handed: bool,
    /// The request being served when a flush last completed.
    flushed_in: u64,
    /// Interim bytes were written since the inner IO was last flushed.
    unflushed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The state holds bytes to write; lets the IO skip the lock on every read.
    pending: AtomicBool,
    /// The number of the request being served, from 1; changed with `state` locked, and only
    /// on the connection's task, which the IO also runs on.
    request: AtomicU64,
    /// The connection task, which `send` wakes so that the IO is polled and drains.
    task: AtomicWaker,
}

#[derive(Default)]
struct State {
    /// The current request's handler may still queue.
    accepting: bool,
    /// Queued, not begun: they may go only at a boundary.
    queued: Vec<u8>,
    /// Begun: must be finished before hyper writes again.
    writing: Vec<u8>,
    written: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is whole between statements; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wraps a connection's IO; the [`Requests`] serve the requests on it.
pub(crate) fn wrap<T>(inner: T) -> (InterimIo<T>, Requests) {
    let shared = Arc::new(Shared {
        state: Mutex::default(),
        pending: AtomicBool::new(false),
        request: AtomicU64::new(0),
        task: AtomicWaker::new(),
    });
    let io = InterimIo {
        inner,
        shared: shared.clone(),
        handed: false,
        // hyper writes nothing before the first request: that one starts at a boundary.
        flushed_in: 1,
        unflushed: false,
    };
    (io, Requests { shared })
}

impl Requests {
    /// A request arrives: gives it an [`Interim`] if it is HTTP/1.1. Must be called for every
    /// request, from the service hyper calls (so in order with hyper's reading and writing).
    pub(crate) fn begin<B>(&self, request: &mut Request<B>) {
        let accepting = match request.version() {
            Version::HTTP_11 => true,
            Version::HTTP_10 | Version::HTTP_09 => false,
            // HTTP/2 (or later): requests are concurrent and nothing may be written raw.
            _ => return,
        };
        let mut state = self.shared.lock();
        let number = self.shared.request.load(Ordering::Relaxed) + 1;
        self.shared.request.store(number, Ordering::Relaxed);
        state.accepting = accepting;
        // Never begun, so never to be: the last response has been produced.
        state.queued.clear();
        drop(state);
        if accepting {
            request.extensions_mut().insert(Interim {
                shared: self.shared.clone(),
                request: number,
            });
        }
    }

    /// The handler's response is produced; hyper has not begun writing it.
    pub(crate) fn end(&self) {
        self.shared.lock().accepting = false;
    }
}

impl Interim {
    /// Queues `HTTP/1.1 <status> <reason>` with `headers` to go out before the final response.
    /// False, queuing nothing, if `status` is not 1xx or is 101, `reason` has control
    /// characters, or this request's response has been produced. True means it goes out before
    /// the final response or, if hyper is then mid-write, not at all; never after.
    pub(crate) fn send(
        &self,
        status: StatusCode,
        reason: &'static str,
        headers: &HeaderMap,
    ) -> bool {
        let reason_ok = reason.bytes().all(|b| b == b'\t' || !b.is_ascii_control());
        if !status.is_informational() || status == StatusCode::SWITCHING_PROTOCOLS || !reason_ok {
            return false;
        }
        let mut state = self.shared.lock();
        if !state.accepting || self.shared.request.load(Ordering::Relaxed) != self.request {
            return false;
        }
        let out = &mut state.queued;
        for part in [
            b"HTTP/1.1 ",
            status.as_str().as_bytes(),
            b" ",
            reason.as_bytes(),
            b"\r\n",
        ] {
            out.extend_from_slice(part);
        }
        for (name, value) in headers {
            for part in [name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
                out.extend_from_slice(part);
            }
        }
        out.extend_from_slice(b"\r\n");
        self.shared.pending.store(true, Ordering::Release);
        drop(state);
        self.shared.task.wake();
        true
    }
}

impl<T: Write + Unpin> InterimIo<T> {
    /// Writes what may go now. `before_hyper`: hyper is about to write, and once a request's
    /// response is produced this is the last moment its interim responses may go. Ready when
    /// nothing begun is left unwritten.
    fn drain(&mut self, cx: &mut Context<'_>, before_hyper: bool) -> Poll<io::Result<()>> {
        if !self.shared.pending.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        let mut state = self.shared.lock();
        loop {
            let State {
                writing, written, ..
            } = &mut *state;
            if *written < writing.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &writing[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
                self.unflushed = true;
                continue;
            }
            writing.clear();
            *written = 0;
            if state.queued.is_empty() {
                break;
            }
            let request = self.shared.request.load(Ordering::Relaxed);
            if !self.handed && self.flushed_in == request {
                let State {
                    queued, writing, ..
                } = &mut *state;
                std::mem::swap(queued, writing);
            } else if before_hyper && !state.accepting {
                // hyper's next bytes may be the final response's head.
                state.queued.clear();
            } else {
                return Poll::Ready(Ok(()));
            }
        }
        self.shared.pending.store(false, Ordering::Release);
        Poll::Ready(Ok(()))
    }

    /// Flushes interim bytes written outside hyper's flushes. Pending leaves the task woken
    /// when the IO can take more, and the next poll tries again.
    fn flush_interim(&mut self, cx: &mut Context<'_>) {
        if self.unflushed && Pin::new(&mut self.inner).poll_flush(cx).is_ready() {
            self.unflushed = false;
        }
    }
}

impl<T: Read + Write + Unpin> Read for InterimIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Before looking for work, so that a `send` after the look still wakes us.
        this.shared.task.register(cx.waker());
        // Not relied on (hyper flushes, and so drains, on every turn of its loop after reading)
        // but sends a 104 before the read, not after. A full socket must not hold up reading; a
        // write error resurfaces on hyper's writes.
        let _ = this.drain(cx, false);
        this.flush_interim(cx);
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for InterimIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx, true))?;
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.handed |= n > 0;
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx, true))?;
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.handed |= n > 0;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shared.task.register(cx.waker());
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        // hyper flushes only with its buffer empty: all it has produced is out.
        this.handed = false;
        this.unflushed = false;
        // (A flush before the first request counts for it, as nothing is produced before it.)
        let request = this.shared.request.load(Ordering::Relaxed);
        this.flushed_in = this.flushed_in.max(request);
        // hyper flushes on every turn of its loop, so this is where a wake-up lands.
        let _ = this.drain(cx, false);
        this.flush_interim(cx);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections;
    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::extract::State;
    use axum::http::{HeaderValue, header};
    use axum::routing::{any, post};
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};

    const INTERIM: &[u8] = b"HTTP/1.1 104 Upload Resumption Supported\r\n\
        location: /files/abc\r\nupload-draft-interop-version: 7\r\n\r\n";
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

    fn send_104(interim: &Interim) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("/files/abc"));
        headers.insert(
            "upload-draft-interop-version",
            HeaderValue::from_static("7"),
        );
        interim.send(
            StatusCode::from_u16(104).unwrap(),
            "Upload Resumption Supported",
            &headers,
        )
    }

    /// An [`Interim`] a handler keeps past its response.
    type Stash = Arc<Mutex<Option<Interim>>>;

    fn router(stash: Stash) -> Router {
        Router::new()
            .route("/creation", post(creation))
            .route("/spawned", post(spawned))
            .route("/immediate", post(immediate))
            .route("/stash", post(stash_it))
            .route("/plain", any(plain))
            .with_state(stash)
    }

    /// Queues the 104 and then reads the body, as an upload creation does.
    async fn creation(request: Request<Body>) -> (StatusCode, String) {
        let queued = request.extensions().get::<Interim>().map(send_104);
        let body = to_bytes(request.into_body(), usize::MAX).await.unwrap();
        (
            StatusCode::CREATED,
            format!("{} bytes, queued {queued:?}", body.len()),
        )
    }

    /// Reads the body while another task queues the 104: only a wake-up can send it.
    async fn spawned(request: Request<Body>) -> (StatusCode, String) {
        let interim = request.extensions().get::<Interim>().cloned().unwrap();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            send_104(&interim)
        });
        let body = to_bytes(request.into_body(), usize::MAX).await.unwrap();
        let queued = Some(sender.await.unwrap());
        (
            StatusCode::CREATED,
            format!("{} bytes, queued {queued:?}", body.len()),
        )
    }

    /// Queues the 104 and answers in the same poll, without reading the body.
    async fn immediate(request: Request<Body>) -> (StatusCode, String) {
        let queued = request.extensions().get::<Interim>().map(send_104);
        (StatusCode::CREATED, format!("queued {queued:?}"))
    }

    async fn stash_it(State(stash): State<Stash>, request: Request<Body>) -> String {
        let interim = request.extensions().get::<Interim>().cloned().unwrap();
        let ok = interim.send(StatusCode::OK, "OK", &HeaderMap::new());
        let switching = interim.send(StatusCode::SWITCHING_PROTOCOLS, "Hi", &HeaderMap::new());
        let bad_reason = interim.send(StatusCode::CONTINUE, "A\r\nB: c", &HeaderMap::new());
        *stash.lock().unwrap() = Some(interim);
        format!("sent 200 {ok}, 101 {switching}, bad reason {bad_reason}")
    }

    /// Queues nothing; tries a stashed Interim of an earlier request.
    async fn plain(State(stash): State<Stash>, request: Request<Body>) -> String {
        let present = request.extensions().get::<Interim>().is_some();
        let stale = stash.lock().unwrap().take().map(|old| send_104(&old));
        to_bytes(request.into_body(), usize::MAX).await.unwrap();
        format!("interim {present}, stale sent {stale:?}")
    }

    async fn start() -> (SocketAddr, Stash) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stash = Stash::default();
        let settings = connections::Settings::of(&crate::ServerConfig {
            head_timeout: Duration::from_secs(10),
            ..crate::ServerConfig::default()
        });
        let serve = connections::serve(
            listener,
            router(stash.clone()),
            settings,
            std::future::pending(),
        );
        tokio::spawn(serve);
        (address, stash)
    }

    async fn connect(address: SocketAddr, request: &str) -> TcpStream {
        let mut client = TcpStream::connect(address).await.unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        client
    }

    fn request_head(path: &str, extra: &str) -> String {
        format!("POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 5\r\n\r\n")
    }

    /// Reads exactly `expected`, within two seconds.
    async fn expect_bytes(stream: &mut (impl AsyncRead + Unpin), expected: &[u8]) {
        let mut got = vec![0; expected.len()];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut got));
        read.await.expect("nothing in time").unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }

    /// Reads a final response: its head without the date header, and its body.
    async fn response(stream: &mut (impl AsyncRead + Unpin)) -> (String, String) {
        let read = async {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(stream.read_u8().await.unwrap());
            }
            let head = String::from_utf8(head).unwrap();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "));
            let mut body = vec![0; length.unwrap().parse().unwrap()];
            stream.read_exact(&mut body).await.unwrap();
            let head = head.lines().filter(|line| !line.starts_with("date: "));
            let head: String = head.map(|line| format!("{line}\n")).collect();
            (head, String::from_utf8(body).unwrap())
        };
        tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .expect("no response in time")
    }

    fn answer(status: &str, body: &str) -> (String, String) {
        let head = format!(
            "HTTP/1.1 {status}\ncontent-type: text/plain; charset=utf-8\ncontent-length: {}\n\n",
            body.len()
        );
        (head, body.to_owned())
    }

    fn created(body: &str) -> (String, String) {
        answer("201 Created", body)
    }

    async fn expect_silence(stream: &mut TcpStream) {
        let mut byte = [0];
        let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut byte));
        assert!(read.await.is_err(), "more bytes: {byte:?}");
    }

    #[tokio::test]
    async fn the_104_arrives_before_the_client_sends_the_body() {
        let (address, _) = start().await;
        for path in ["/creation", "/spawned"] {
            let mut client = connect(address, &request_head(path, "")).await;
            expect_bytes(&mut client, INTERIM).await;
            client.write_all(b"hello").await.unwrap();
            assert_eq!(
                response(&mut client).await,
                created("5 bytes, queued Some(true)")
            );
            expect_silence(&mut client).await;
        }
    }

    #[tokio::test]
    async fn on_a_connection_not_yet_told_from_http2_too() {
        let (address, _) = start().await;
        // "P" may begin the HTTP/2 preface: hyper-util decides, with our IO under it.
        let mut client = connect(address, "P").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        client
            .write_all(&request_head("/creation", "").as_bytes()[1..])
            .await
            .unwrap();
        expect_bytes(&mut client, INTERIM).await;
        client.write_all(b"hello").await.unwrap();
        assert_eq!(
            response(&mut client).await,
            created("5 bytes, queued Some(true)")
        );
    }

    #[tokio::test]
    async fn with_100_continue_both_arrive_whole_in_the_order_queued() {
        let (address, _) = start().await;
        // Queued before the body is polled (which sends the 100), and after.
        let expected = [
            ("/creation", [INTERIM, CONTINUE]),
            ("/spawned", [CONTINUE, INTERIM]),
        ];
        for (path, interims) in expected {
            let mut client =
                connect(address, &request_head(path, "Expect: 100-continue\r\n")).await;
            expect_bytes(&mut client, &interims.concat()).await;
            client.write_all(b"hello").await.unwrap();
            assert_eq!(
                response(&mut client).await,
                created("5 bytes, queued Some(true)")
            );
            expect_silence(&mut client).await;
        }
    }

    #[tokio::test]
    async fn a_kept_alive_connection_sends_the_104_only_for_its_request() {
        let (address, _) = start().await;
        let mut client = connect(address, &(request_head("/creation", "") + "hello")).await;
        expect_bytes(&mut client, INTERIM).await;
        assert_eq!(
            response(&mut client).await,
            created("5 bytes, queued Some(true)")
        );
        client
            .write_all((request_head("/plain", "") + "hello").as_bytes())
            .await
            .unwrap();
        let plain = "interim true, stale sent None";
        assert_eq!(response(&mut client).await, answer("200 OK", plain));
        expect_silence(&mut client).await;
    }

    #[tokio::test]
    async fn a_104_queued_with_the_response_goes_first_or_not_at_all() {
        let (address, _) = start().await;
        let request = "POST /immediate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
        let mut client = connect(address, request).await;
        // A connection's first request starts at a boundary: the 104 precedes the response.
        expect_bytes(&mut client, INTERIM).await;
        assert_eq!(response(&mut client).await, created("queued Some(true)"));
        // A later one has had no flush of its own when the response comes: hyper may still
        // hold the end of the last response, so the 104 is dropped rather than sent late.
        client.write_all(request.as_bytes()).await.unwrap();
        assert_eq!(response(&mut client).await, created("queued Some(true)"));
        expect_silence(&mut client).await;
        // hyper flushes while it waits for the rest of a first head; that counts as a boundary.
        let (start, rest) = request.split_at(20);
        let mut client = connect(address, start).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(rest.as_bytes()).await.unwrap();
        expect_bytes(&mut client, INTERIM).await;
        assert_eq!(response(&mut client).await, created("queued Some(true)"));
    }

    #[tokio::test]
    async fn nothing_is_sent_after_the_response_or_for_another_status() {
        let (address, stash) = start().await;
        let mut client = connect(address, &(request_head("/stash", "") + "hello")).await;
        let refused = "sent 200 false, 101 false, bad reason false";
        assert_eq!(response(&mut client).await, answer("200 OK", refused));
        let after = stash.lock().unwrap().clone().unwrap();
        assert!(!send_104(&after), "queued after the response");
        // The next request on the connection finds it stale.
        client
            .write_all((request_head("/plain", "") + "hello").as_bytes())
            .await
            .unwrap();
        let plain = "interim true, stale sent Some(false)";
        assert_eq!(response(&mut client).await, answer("200 OK", plain));
        expect_silence(&mut client).await;
    }

    #[tokio::test]
    async fn an_http_1_0_request_has_no_interim() {
        let (address, _) = start().await;
        let request = "POST /creation HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello";
        let mut client = connect(address, request).await;
        let mut all = String::new();
        client.read_to_string(&mut all).await.unwrap();
        assert!(all.starts_with("HTTP/1.0 201 Created\r\n"), "{all}");
        assert!(all.ends_with("\r\n\r\n5 bytes, queued None"), "{all}");
    }

    #[tokio::test]
    async fn an_http2_request_has_no_interim() {
        let (address, _) = start().await;
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        for (path, expected) in [
            ("creation", "5 bytes, queued None"),
            ("plain", "interim false, stale sent None"),
        ] {
            let response = client
                .post(format!("http://{address}/{path}"))
                .body("hello")
                .send();
            let response = response.await.unwrap();
            assert_eq!(response.version(), reqwest::Version::HTTP_2);
            assert_eq!(response.text().await.unwrap(), expected);
        }
    }

    #[tokio::test]
    async fn an_http_client_reads_the_final_response_after_a_104() {
        let (address, _) = start().await;
        let client = reqwest::Client::builder().http1_only().build().unwrap();
        for _ in 0..2 {
            let response = client
                .post(format!("http://{address}/creation"))
                .body("hello")
                .send();
            let response = response.await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            assert_eq!(response.text().await.unwrap(), "5 bytes, queued Some(true)");
        }
    }

    /// A connection's server side that takes writes only while its gate is open, and if it
    /// stutters, 8 bytes at a time and only every other call (as a socket whose buffer frees
    /// between two writes).
    struct Gated {
        inner: DuplexStream,
        gate: Arc<Gate>,
    }

    #[derive(Default)]
    struct Gate {
        closed: AtomicBool,
        waker: AtomicWaker,
        stutter: AtomicBool,
        refuse_next: AtomicBool,
    }

    impl Gate {
        fn set(&self, closed: bool) {
            self.closed.store(closed, Ordering::SeqCst);
            self.waker.wake();
        }
    }

    impl AsyncRead for Gated {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Gated {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.gate.waker.register(cx.waker());
            if self.gate.closed.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
            if self.gate.stutter.load(Ordering::SeqCst) {
                if self.gate.refuse_next.fetch_xor(true, Ordering::SeqCst) {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                return Pin::new(&mut self.inner).poll_write(cx, &buf[..buf.len().min(8)]);
            }
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Serves `router` through hyper on an in-memory connection that holds `capacity` bytes.
    fn serve_in_memory(router: Router, capacity: usize) -> (DuplexStream, Arc<Gate>) {
        let (client, server) = tokio::io::duplex(capacity);
        let gate = Arc::new(Gate::default());
        let gated = Gated {
            inner: server,
            gate: gate.clone(),
        };
        let (io, requests) = wrap(TokioIo::new(gated));
        let service = TowerToHyperService::new(connections::per_connection(
            router,
            requests,
            connections::OpenRequests::unwatched(),
            None,
        ));
        let mut builder = hyper::server::conn::http1::Builder::new();
        tokio::spawn(
            builder
                .timer(TokioTimer::new())
                .serve_connection(io, service),
        );
        (client, gate)
    }

    #[tokio::test]
    async fn a_104_waits_for_a_partly_written_100_continue() {
        let (mut client, _) = serve_in_memory(router(Stash::default()), 8);
        let request = request_head("/spawned", "Expect: 100-continue\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        // hyper has written 8 bytes of its 100 when the 104 is queued.
        tokio::time::sleep(Duration::from_millis(100)).await;
        expect_bytes(&mut client, &[CONTINUE, INTERIM].concat()).await;
        client.write_all(b"hello").await.unwrap();
        assert_eq!(
            response(&mut client).await,
            created("5 bytes, queued Some(true)")
        );
    }

    #[tokio::test]
    async fn hyper_writes_only_once_a_begun_104_is_written() {
        // The 104 is mid-write when hyper has its response to write, and the next write fits.
        let (mut client, gate) = serve_in_memory(router(Stash::default()), 64 * 1024);
        gate.stutter.store(true, Ordering::SeqCst);
        let request = "POST /immediate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
        client.write_all(request.as_bytes()).await.unwrap();
        expect_bytes(&mut client, INTERIM).await;
        assert_eq!(response(&mut client).await, created("queued Some(true)"));
    }

    #[tokio::test]
    async fn a_104_waits_for_the_rest_of_the_last_response() {
        // Answers at once and reads the body later: the request ends after its response.
        let later = |request: Request<Body>| async move {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                to_bytes(request.into_body(), usize::MAX).await.unwrap();
            });
            "later"
        };
        let router = router(Stash::default()).route("/later", post(later));
        let (mut client, gate) = serve_in_memory(router, 64 * 1024);
        gate.set(true);
        let first = request_head("/later", "") + "hel";
        client.write_all(first.as_bytes()).await.unwrap();
        // hyper reads a body's first bytes unasked; the rest (and with it the request) it reads
        // when the handler's task asks, after the response is buffered, and then reads the
        // second head with that response still in its buffer.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let rest = "lo".to_owned() + &request_head("/creation", "");
        client.write_all(rest.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        gate.set(false);
        assert_eq!(response(&mut client).await, answer("200 OK", "later"));
        expect_bytes(&mut client, INTERIM).await;
        client.write_all(b"hello").await.unwrap();
        assert_eq!(
            response(&mut client).await,
            created("5 bytes, queued Some(true)")
        );
    }
}
