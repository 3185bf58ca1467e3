//! The crash contract, against the real binary: whatever point a PATCH is at when the server is
//! killed (SIGKILL) or stopped (SIGTERM), a restart on the same data dir reports an offset no
//! larger than what was sent, every byte below it is the source's, and the upload resumes to a
//! file with the source's SHA-256. The SIGKILL cases run for a tus upload and for one of the IETF
//! draft (interop 8): the same engine under both.
//!
//! The in-flight PATCH goes over a raw socket so the test controls exactly how much of the body
//! arrives. Progress is observed on disk (the data file's length), never with HEAD: a HEAD asks
//! the server to cut the PATCH that holds the upload, which would change what is being tested.

mod common;

use common::{
    Ietf, Server, Tus, assert_prefix_of, committed_length, data_file, file_length, open_ietf_patch,
    open_patch, pseudo_random, raw_header, read_response, scratch, send, sha256_hex, wait_until,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

/// Big enough that the body spans many socket buffers and writer batches.
const SOURCE_LENGTH: usize = 24 << 20;
const MIB: usize = 1 << 20;
/// Bound on waiting for bytes to reach the disk.
const DISK_DEADLINE: Duration = Duration::from_secs(10);
/// "Promptly", for a server asked to stop.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// When the server gets SIGKILL, relative to the body bytes sent.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// Right after the socket accepted `sent` bytes: some may still be in flight.
    Sent(usize),
    /// Once all `sent` bytes are committed (synced, and recorded as the upload's length: a
    /// quiet body is committed within about a second).
    OnDisk(usize),
    /// Right after the PATCH head, with no body byte sent. (The server holds no file open while
    /// it waits for body bytes, so there is nothing on disk to wait for.)
    HeadSent,
}

/// The protocol a crash test uploads with: tus 1.0.0, or the IETF draft (interop 8) — the
/// same engine, so the same contract.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    Tus,
    Ietf,
}

impl Protocol {
    async fn create(self, server: &Server, length: u64) -> String {
        match self {
            Protocol::Tus => Tus::new(server).create(length).await,
            Protocol::Ietf => Ietf::new(server).create(length).await,
        }
    }

    /// A PATCH at `offset` whose head is sent, announcing `content_length` body bytes.
    async fn open_patch(self, server: &Server, id: &str, offset: u64, length: u64) -> TcpStream {
        match self {
            Protocol::Tus => open_patch(server.address, id, offset, length).await,
            Protocol::Ietf => open_ietf_patch(server.address, id, offset, length).await,
        }
    }

    /// The offset to resume from (`HEAD`).
    async fn offset(self, server: &Server, id: &str) -> u64 {
        match self {
            Protocol::Tus => Tus::new(server).offset(id).await,
            Protocol::Ietf => Ietf::new(server).offset(id).await,
        }
    }

    async fn finish_and_verify(self, server: &Server, id: &str, source: &[u8]) {
        match self {
            Protocol::Tus => Tus::new(server).finish_and_verify(id, source).await,
            Protocol::Ietf => Ietf::new(server).finish_and_verify(id, source).await,
        }
    }
}

async fn kill_mid_patch(kill_at: KillAt) {
    kill_mid_patch_with(Protocol::Tus, kill_at).await;
}

async fn kill_mid_patch_with(protocol: Protocol, kill_at: KillAt) {
    let scratch = scratch();
    let data_dir = scratch.path().join("data");
    let source = pseudo_random(SOURCE_LENGTH, 0x5EED_0001);
    let mut server = Server::serve(&data_dir, &[]);
    let id = protocol.create(&server, source.len() as u64).await;
    let data = data_file(&data_dir, &id);

    let mut patch = protocol
        .open_patch(&server, &id, 0, source.len() as u64)
        .await;
    let sent = match kill_at {
        KillAt::Sent(sent) | KillAt::OnDisk(sent) => sent,
        KillAt::HeadSent => 0,
    };
    send(&mut patch, &source[..sent]).await;
    match kill_at {
        KillAt::Sent(_) | KillAt::HeadSent => {}
        KillAt::OnDisk(sent) => {
            wait_until("every byte sent is committed", DISK_DEADLINE, || {
                committed_length(&data_dir, &id) >= sent as u64
            })
            .await;
        }
    }
    server.kill();
    let on_disk = file_length(&data);
    assert!(
        on_disk <= sent as u64,
        "{kill_at:?}: the data file holds {on_disk} bytes, only {sent} were sent"
    );
    drop(patch);
    drop(server);

    let server = Server::serve(&data_dir, &[]);
    let offset = protocol.offset(&server, &id).await;
    eprintln!(
        "{protocol:?} {kill_at:?}: {on_disk} bytes on disk at SIGKILL, offset {offset} after restart"
    );
    assert!(
        offset <= sent as u64,
        "{kill_at:?}: restart reports offset {offset}, only {sent} bytes were sent"
    );
    if let KillAt::OnDisk(sent) = kill_at {
        assert_eq!(offset, sent as u64, "bytes committed before SIGKILL");
    }
    // Bytes past the offset (written, never committed) may still be in the data file; the
    // next append cuts them off.
    let stored = std::fs::read(&data).expect("read the data file");
    assert!(
        stored.len() as u64 >= offset,
        "the data file holds {} bytes, the offset is {offset}",
        stored.len()
    );
    assert_prefix_of(&stored[..offset as usize], &source);
    protocol.finish_and_verify(&server, &id, &source).await;
}

#[tokio::test]
async fn sigkill_before_any_body_byte_keeps_an_empty_resumable_upload() {
    kill_mid_patch(KillAt::HeadSent).await;
}

#[tokio::test]
async fn sigkill_right_after_one_mib_was_sent() {
    kill_mid_patch(KillAt::Sent(MIB + 4321)).await;
}

#[tokio::test]
async fn sigkill_right_after_ten_mib_were_sent() {
    kill_mid_patch(KillAt::Sent(10 * MIB + 17)).await;
}

#[tokio::test]
async fn sigkill_keeps_every_committed_byte() {
    kill_mid_patch(KillAt::OnDisk(5 * MIB + 12_345)).await;
}

// The same for an upload created and appended with the IETF draft (interop 8), resumed with
// its offset retrieval and append.

#[tokio::test]
async fn ietf_sigkill_before_any_body_byte_keeps_an_empty_resumable_upload() {
    kill_mid_patch_with(Protocol::Ietf, KillAt::HeadSent).await;
}

#[tokio::test]
async fn ietf_sigkill_right_after_one_mib_was_sent() {
    kill_mid_patch_with(Protocol::Ietf, KillAt::Sent(MIB + 4321)).await;
}

#[tokio::test]
async fn ietf_sigkill_right_after_ten_mib_were_sent() {
    kill_mid_patch_with(Protocol::Ietf, KillAt::Sent(10 * MIB + 17)).await;
}

#[tokio::test]
async fn ietf_sigkill_keeps_every_committed_byte() {
    kill_mid_patch_with(Protocol::Ietf, KillAt::OnDisk(5 * MIB + 12_345)).await;
}

/// SIGTERM while a PATCH waits for more body: the server stops reading, persists what arrived,
/// answers, and exits, without waiting for the body (or its idle timeout).
#[tokio::test]
async fn sigterm_during_an_idle_patch_exits_promptly_and_keeps_the_bytes() {
    let scratch = scratch();
    let data_dir = scratch.path().join("data");
    let source = pseudo_random(SOURCE_LENGTH, 0x5EED_0002);
    let mut server = Server::serve(&data_dir, &[]);
    let tus = Tus::new(&server);
    let id = tus.create(source.len() as u64).await;
    let data = data_file(&data_dir, &id);

    let sent = 3 * MIB + 7;
    let mut patch = open_patch(server.address, &id, 0, source.len() as u64).await;
    send(&mut patch, &source[..sent]).await;
    wait_until("the data file holds every byte sent", DISK_DEADLINE, || {
        file_length(&data) >= sent as u64
    })
    .await;

    let (status, took) = server.terminate(STOP_DEADLINE);
    assert!(status.success(), "exit after SIGTERM: {status}");
    let response = read_response(&mut patch, Duration::from_secs(1)).await;
    drop(server);

    let server = Server::serve(&data_dir, &[]);
    let tus = Tus::new(&server);
    let offset = tus.offset(&id).await;
    eprintln!("exited {took:?} after SIGTERM; PATCH response:\n{response}");
    assert_eq!(
        offset, sent as u64,
        "offset after restart (the server exited {took:?} after SIGTERM)"
    );
    // The server answers uploads in flight before it exits, so the answer is already here:
    // 503 with what it stored, which a client still listening resumes from.
    assert!(
        response.starts_with("HTTP/1.1 503"),
        "the interrupted PATCH got no 503 before the server exited; response:\n{response}"
    );
    let reported = raw_header(&response, "Upload-Offset").unwrap_or_else(|| {
        panic!("the interrupted PATCH reported no Upload-Offset; response:\n{response}")
    });
    assert_eq!(
        reported,
        offset.to_string(),
        "offset the interrupted PATCH reported vs. the stored one; response:\n{response}"
    );
    let stored = std::fs::read(&data).expect("read the data file");
    assert_prefix_of(&stored, &source);
    tus.finish_and_verify(&id, &source).await;
}

/// SIGTERM while the client is still sending, slowly: the server must not wait for the rest of
/// the body before exiting. Multi-threaded so the sender keeps going while the test blocks on
/// the server's exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_client_keeps_sending_exits_promptly() {
    let scratch = scratch();
    let data_dir = scratch.path().join("data");
    let source = Arc::new(pseudo_random(SOURCE_LENGTH, 0x5EED_0003));
    let mut server = Server::serve(&data_dir, &[]);
    let tus = Tus::new(&server);
    let id = tus.create(source.len() as u64).await;
    let data = data_file(&data_dir, &id);

    let mut patch = open_patch(server.address, &id, 0, source.len() as u64).await;
    let sent = Arc::new(AtomicU64::new(0));
    // 64 KiB every 10 ms (~6 MiB/s): the 24 MiB body would take ~4 s to finish.
    let sender = tokio::spawn({
        let (source, sent) = (source.clone(), sent.clone());
        async move {
            use tokio::io::AsyncWriteExt;
            for chunk in source.chunks(64 << 10) {
                // Counted before writing: an upper bound of what the server can have received.
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                if patch.write_all(chunk).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    wait_until("the data file holds a first MiB", DISK_DEADLINE, || {
        file_length(&data) >= MIB as u64
    })
    .await;

    let (status, took) = server.terminate(STOP_DEADLINE);
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(
        took < Duration::from_secs(3),
        "the server took {took:?} to exit after SIGTERM"
    );
    let sent_before_exit = sent.load(Ordering::SeqCst);
    sender.abort();
    drop(server);

    let server = Server::serve(&data_dir, &[]);
    let tus = Tus::new(&server);
    let offset = tus.offset(&id).await;
    eprintln!("exited {took:?} after SIGTERM; {sent_before_exit} bytes sent, offset {offset}");
    assert!(
        offset >= MIB as u64,
        "offset {offset} after restart, but a MiB was in the data file before SIGTERM"
    );
    assert!(
        offset <= sent_before_exit,
        "offset {offset} after restart, but only {sent_before_exit} bytes were sent"
    );
    let stored = std::fs::read(&data).expect("read the data file");
    assert_prefix_of(&stored, &source);
    tus.finish_and_verify(&id, &source).await;
}

/// The seed's client, around a SIGKILL: it sends the whole rest of the file in one `POST
/// /upload` without `X-File-Size`. Killed mid-body, the upload stays open at what reached the
/// disk (never complete: the body did not arrive whole); resumed from `/status` exactly as the
/// seed does, it completes and downloads with the source's SHA-256.
#[tokio::test]
async fn sigkill_mid_seed_post_then_the_seed_resumes_to_a_complete_upload() {
    use tokio::io::AsyncWriteExt;
    let scratch = scratch();
    let data_dir = scratch.path().join("data");
    let source = pseudo_random(SOURCE_LENGTH, 0x5EED_0004);
    let file_id = format!("seed.bin-{}-1700000000000", source.len());
    let mut server = Server::serve(&data_dir, &[]);

    let mut post = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nX-File-Id: {file_id}\r\nX-Start-Byte: 0\r\n\
         Content-Length: {}\r\n\r\n",
        server.address,
        source.len()
    );
    post.write_all(head.as_bytes()).await.unwrap();
    let sent = 5 * MIB + 12_345;
    send(&mut post, &source[..sent]).await;
    let uploads = data_dir.join("uploads");
    let data = wait_for_one_data_file(&uploads).await;
    let id = data.file_stem().unwrap().to_str().unwrap().to_owned();
    wait_until("every byte sent is committed", DISK_DEADLINE, || {
        committed_length(&data_dir, &id) >= sent as u64
    })
    .await;
    server.kill();
    drop(post);
    drop(server);

    let server = Server::serve(&data_dir, &[]);
    let http = reqwest::Client::new();
    let status = |http: reqwest::Client, base: String, file_id: String| async move {
        let response = http
            .get(format!("{base}/status"))
            .header("X-File-Id", file_id)
            .send()
            .await
            .unwrap();
        response.text().await.unwrap().parse::<u64>().unwrap()
    };
    let start = status(http.clone(), server.base.clone(), file_id.clone()).await;
    assert_eq!(start, sent as u64, "bytes committed before SIGKILL");
    assert_prefix_of(&std::fs::read(&data).unwrap()[..sent], &source);
    let download = format!("{}/files/{id}", server.base);
    let early = http.get(&download).send().await.unwrap();
    assert_eq!(
        early.status(),
        409,
        "a body cut by the crash completes nothing"
    );

    // The seed's step 3 again: the rest of the file from the server's count, no size.
    let resumed = http
        .post(format!("{}/upload", server.base))
        .header("X-File-Id", &file_id)
        .header("X-Start-Byte", start.to_string())
        .body(source[start as usize..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    assert_eq!(
        resumed.headers()["location"],
        format!("/files/{id}").as_str()
    );
    assert_eq!(resumed.text().await.unwrap(), source.len().to_string());
    let bytes = http
        .get(&download)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&bytes), sha256_hex(&source));
    let again = status(http.clone(), server.base.clone(), file_id.clone()).await;
    assert_eq!(again, source.len() as u64);
}

/// The one data file under `uploads`, once it exists.
async fn wait_for_one_data_file(uploads: &std::path::Path) -> std::path::PathBuf {
    let find = || {
        std::fs::read_dir(uploads)
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|extension| extension == "bin"))
    };
    wait_until("the upload's data file exists", DISK_DEADLINE, || {
        find().is_some()
    })
    .await;
    find().expect("found above")
}
