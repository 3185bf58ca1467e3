//! One blocking HTTP/1.1 exchange over a `TcpStream`: enough to see whether a server answers
//! and to make a bucket, without an HTTP client's dependencies in every test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response: its status and its body, read to the end (the request asks the server to close).
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header block, as sent (lines separated by CRLF).
    pub headers: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    /// The body as text (lossy), for assertions and messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method target` with `headers` and `body` to `address` and reads the response.
/// `Host`, `Content-Length` and `Connection: close` are added.
pub fn exchange(
    address: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not an HTTP response: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            ),
        )
    })
}

fn parse(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let response = Response {
        status,
        headers: headers.to_owned(),
        body: Vec::new(),
    };
    let body = &raw[end + 4..];
    // Chunked bodies are decoded; anything else runs to the close.
    let body = match response.header("Transfer-Encoding") {
        Some(coding) if coding.eq_ignore_ascii_case("chunked") => dechunk(body)?,
        _ => body.to_vec(),
    };
    Some(Response { body, ..response })
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|window| window == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// Whether anything answers HTTP at `address` (any status).
pub(crate) fn answers(address: SocketAddr) -> bool {
    exchange(address, "GET", "/", &[], b"").is_ok()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn responses_are_parsed_with_plain_and_chunked_bodies() {
        let plain = parse(b"HTTP/1.1 404 Not Found\r\nETag: \"x\"\r\n\r\nnope").expect("valid");
        assert_eq!((plain.status, plain.text().as_str()), (404, "nope"));
        assert_eq!(plain.header("etag"), Some("\"x\""));
        let chunked =
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .expect("valid");
        assert_eq!(chunked.text(), "abcde");
        assert!(parse(b"garbage").is_none());
    }
}
