//! A TCP proxy that holds request bodies until the test lets bytes through.
//!
//! Why it exists: the tests that stop an upload mid-way (SIGINT, SIGKILL, a server killed under
//! the client) need the upload to still be running when they act. Pacing the client with
//! `--limit-rate` made that a race against the machine's speed: on a loaded machine the test
//! looked too late and the upload had finished. Behind a [`Gate`] the client's request is in
//! flight for as long as the test wants, and the server has received exactly the body bytes the
//! test allowed, so a test can also say exactly what the server must have stored.
//!
//! What it does, per connection from the client: it connects to the upstream server (a refused
//! connection drops the client's, as a down server would), copies responses back untouched, and
//! reads requests as HTTP/1.1: each request head goes through at once, its body (framed by
//! `Content-Length`; chunked bodies are not supported and end the connection) only as far as the
//! budget shared by all connections allows. The rest waits in the client's socket buffers: the
//! proxy holds at most one read buffer of it.
//!
//! A client that dies while the gate holds its body cannot be seen from here (its kernel's FIN
//! sits behind the bytes nobody reads), so the test ends its connections with [`Gate::sever`],
//! which is what the server would see of a dead client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// Body bytes copied per read.
const BUFFER: usize = 64 * 1024;
/// A request head longer than this ends the connection (the CLI's are a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;

/// A running gate proxy in front of one server; stops (ending every connection) when dropped.
pub(crate) struct Gate {
    /// Where it listens (loopback).
    pub(crate) address: SocketAddr,
    /// `http://127.0.0.1:PORT`: the URL to give the client instead of the server's.
    pub(crate) base: String,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the budget grows.
    budget_grew: Notify,
}

#[derive(Default)]
struct State {
    /// Body bytes the test has allowed in all (`u64::MAX` once open).
    allowed: u64,
    /// Body bytes handed to connections to read and forward.
    taken: u64,
    /// Body bytes written to the server.
    passed: u64,
    /// Connections with body bytes to forward and no budget for them.
    waiting: usize,
    /// The connection tasks, for [`Gate::sever`].
    connections: Vec<AbortHandle>,
}

impl Gate {
    /// Listens on a free loopback port and forwards to `upstream`; the gate starts closed.
    pub(crate) fn start(upstream: SocketAddr) -> Gate {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gate")
            .enable_all()
            .build()
            .expect("build the gate's runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the gate");
        listener.set_nonblocking(true).expect("nonblocking gate");
        let address = listener.local_addr().expect("the gate's address");
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("register the gate");
            while let Ok((client, _)) = listener.accept().await {
                // Spawned under the lock, so a concurrent `sever` cannot miss it.
                let mut state = accepting.lock();
                let task = tokio::spawn(connection(client, upstream, Arc::clone(&accepting)));
                state.connections.retain(|task| !task.is_finished());
                state.connections.push(task.abort_handle());
            }
        });
        Gate {
            address,
            base: format!("http://{address}"),
            shared,
            runtime: Some(runtime),
        }
    }

    /// Lets `bytes` more request-body bytes through (to whichever connections want them).
    pub(crate) fn allow(&self, bytes: u64) {
        {
            let mut state = self.shared.lock();
            state.allowed = state.allowed.saturating_add(bytes);
        }
        self.shared.budget_grew.notify_waiters();
    }

    /// Lets everything through from now on.
    pub(crate) fn open(&self) {
        self.allow(u64::MAX);
    }

    /// Request-body bytes written to the server so far.
    pub(crate) fn passed(&self) -> u64 {
        self.shared.lock().passed
    }

    /// Whether some request is in flight with body bytes the gate holds back: the client is
    /// provably still sending.
    pub(crate) fn holding(&self) -> bool {
        self.shared.lock().waiting > 0
    }

    /// Ends every connection open now (both sides), as the death of the client would if nothing
    /// held its bytes. Connections made afterwards are served as usual.
    pub(crate) fn sever(&self) {
        let connections = std::mem::take(&mut self.shared.lock().connections);
        for connection in connections {
            connection.abort();
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until the budget has room, and takes up to `wanted` bytes of it.
    async fn take(self: &Arc<Self>, wanted: u64) -> Grant {
        let mut waiting = None;
        loop {
            // Created before the check: `notify_waiters` wakes it even if it is not polled yet.
            let grew = self.budget_grew.notified();
            {
                let mut state = self.lock();
                let free = state.allowed - state.taken;
                if free > 0 {
                    let bytes = free.min(wanted);
                    state.taken += bytes;
                    drop(state);
                    drop(waiting);
                    return Grant {
                        shared: Arc::clone(self),
                        bytes,
                    };
                }
                if waiting.is_none() {
                    state.waiting += 1;
                    waiting = Some(Waiting(Arc::clone(self)));
                }
            }
            grew.await;
        }
    }
}

/// Counts a connection as waiting at the gate until dropped (also when its task is aborted).
struct Waiting(Arc<Shared>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

/// Budget taken by one connection; what it does not use goes back when dropped.
struct Grant {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Grant {
    /// `bytes` of the grant reached the server.
    fn passed(&mut self, bytes: u64) {
        self.bytes -= bytes;
        self.shared.lock().passed += bytes;
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let returned = self.bytes;
        if returned > 0 {
            self.shared.lock().taken -= returned;
            self.shared.budget_grew.notify_waiters();
        }
    }
}

/// One client connection: requests through the gate, responses straight back. Either side
/// ending ends both.
async fn connection(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, server_write) = server.into_split();
    tokio::select! {
        forwarded = requests(BufReader::new(client_read), server_write, &shared) => {
            if let Err(error) = forwarded
                && error.kind() == std::io::ErrorKind::InvalidData
            {
                eprintln!("gate: ended a connection: {error}");
            }
        }
        _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
    }
}

/// Forwards request after request: the head at once, the body as the budget allows.
async fn requests(
    mut client: BufReader<tokio::net::tcp::OwnedReadHalf>,
    mut server: tokio::net::tcp::OwnedWriteHalf,
    shared: &Arc<Shared>,
) -> std::io::Result<()> {
    let mut buffer = vec![0; BUFFER];
    loop {
        let Some(head) = read_head(&mut client).await? else {
            return Ok(());
        };
        let mut remaining = body_length(&head)?;
        server.write_all(&head).await?;
        while remaining > 0 {
            let mut grant = shared.take(remaining.min(BUFFER as u64)).await;
            let wanted = usize::try_from(grant.bytes).expect("at most BUFFER");
            let read = client.read(&mut buffer[..wanted]).await?;
            if read == 0 {
                return Ok(());
            }
            server.write_all(&buffer[..read]).await?;
            grant.passed(read as u64);
            remaining -= read as u64;
        }
    }
}

/// The next request head, through its blank line; `None` when the client closed between requests.
async fn read_head(
    client: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        if client.read_until(b'\n', &mut head).await? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(invalid("the client closed inside a request head"))
            };
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Err(invalid("request head too long"));
        }
    }
}

/// The body length a request head announces (0 without `Content-Length`).
fn body_length(head: &[u8]) -> std::io::Result<u64> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("request head is not UTF-8"))?;
    let mut length = 0;
    for (name, value) in text.lines().skip(1).filter_map(|line| line.split_once(':')) {
        if name.trim().eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("the gate forwards only Content-Length bodies"));
        }
        if name.trim().eq_ignore_ascii_case("content-length") {
            length = value
                .trim()
                .parse()
                .map_err(|_| invalid("unparsable Content-Length"))?;
        }
    }
    Ok(length)
}

fn invalid(message: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}
