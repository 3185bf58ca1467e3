//! The loopback limit: a listener that reads each request's body and throws it away, answering
//! like a tus server that stores nothing. Uploading to it with the same client code measures what
//! loopback and the client can carry, i.e. the ceiling for any server.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest request head it reads; ours are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// Listens on `127.0.0.1:0` and discards request bodies until the returned task is aborted.
/// Returns the address and the task.
pub async fn start() -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // A client that goes away ends its connection; nothing to report.
                let _ = serve(stream).await;
            });
        }
    });
    Ok((address, task))
}

/// Answers every request on `stream` as a tus server would if it stored what it read: `201`
/// with a `Location` for a `POST`, `204` with the new `Upload-Offset` for a `PATCH`, `200` with
/// it for anything else (`HEAD`). One upload per connection, like the bench client's.
async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = vec![0; 1 << 20];
    let mut filled = 0;
    let mut stored = 0;
    loop {
        let head_end = loop {
            if let Some(end) = find(&buffer[..filled], b"\r\n\r\n") {
                break end + 4;
            }
            if filled >= MAX_HEAD {
                return Ok(());
            }
            let read = stream.read(&mut buffer[filled..]).await?;
            if read == 0 {
                return Ok(());
            }
            filled += read;
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let content_length = header(&head, "content-length").unwrap_or(0);
        let offset = header(&head, "upload-offset").unwrap_or(0);
        // Discard the body: what is already buffered, then the rest as it comes.
        let buffered = (filled - head_end) as u64;
        let mut remaining = content_length.saturating_sub(buffered);
        let leftover = buffered.saturating_sub(content_length) as usize;
        buffer.copy_within(filled - leftover..filled, 0);
        filled = leftover;
        while remaining > 0 {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                return Ok(());
            }
            // A pipelined next request would arrive only after our answer: none is expected.
            remaining = remaining.saturating_sub(read as u64);
        }
        let answer = if head.starts_with("post ") {
            stored = 0;
            "HTTP/1.1 201 Created\r\nLocation: /discard\r\nContent-Length: 0\r\n\r\n".to_owned()
        } else if head.starts_with("patch ") {
            stored = offset + content_length;
            format!("HTTP/1.1 204 No Content\r\nUpload-Offset: {stored}\r\n\r\n")
        } else {
            format!("HTTP/1.1 200 OK\r\nUpload-Offset: {stored}\r\nContent-Length: 0\r\n\r\n")
        };
        stream.write_all(answer.as_bytes()).await?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A numeric header's value, from a lower-cased head.
fn header(head: &str, name: &str) -> Option<u64> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().parse().ok())?
    })
}
