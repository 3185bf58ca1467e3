//! `Nginx`: consecutive requests alternate between the upstreams, the upload-server settings
//! hold (request bodies stream through, the client's Host reaches the upstream), and the
//! access log names each request's upstream.

use resumable_testkit::{Nginx, http, require};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What an upstream saw of one request.
#[derive(Debug)]
struct Seen {
    upstream: &'static str,
    host: String,
}

/// A tiny HTTP upstream named `name` on a free port. Every request's body is read as it comes;
/// once `early` bytes of it have arrived, that is reported on `events`, before the rest is read;
/// the response body is the upstream's name.
fn upstream(name: &'static str, early: usize, events: mpsc::Sender<Seen>) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an upstream");
    let address = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let events = events.clone();
            std::thread::spawn(move || {
                let _ = serve(name, early, stream, &events);
            });
        }
    });
    address
}

fn serve(
    name: &'static str,
    early: usize,
    stream: TcpStream,
    events: &mpsc::Sender<Seen>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let (mut length, mut host) = (0, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((key, value)) = line.split_once(':') {
            match key.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "host" => host = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    let first = early.min(length);
    reader.read_exact(&mut body[..first])?;
    let _ = events.send(Seen {
        upstream: name,
        host,
    });
    reader.read_exact(&mut body[first..])?;
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
        name.len()
    )?;
    stream.flush()
}

#[test]
fn requests_alternate_between_upstreams_and_bodies_stream_through() {
    let (events, seen) = mpsc::channel();
    const EARLY: usize = 5;
    let upstreams = [
        upstream("a", EARLY, events.clone()),
        upstream("b", EARLY, events.clone()),
    ];
    let Some(nginx) = require(Nginx::start(&upstreams), "RESUMABLE_REQUIRE_NGINX") else {
        return;
    };
    // `Nginx::start` probed it with a GET; that one went to an upstream too.
    let probe = seen
        .recv_timeout(Duration::from_secs(10))
        .expect("the probe");

    // Six requests, each on a new client connection: strictly alternating names.
    let mut names = Vec::new();
    for _ in 0..6 {
        let response = http::exchange(nginx.address(), "GET", "/", &[], b"").expect("a response");
        assert_eq!(response.status, 200, "{}", response.text());
        names.push(response.text());
        let event = seen.recv_timeout(Duration::from_secs(10)).expect("seen");
        assert_eq!(
            event.host,
            nginx.address().to_string(),
            "Host reaches the upstream with its port"
        );
    }
    let expected: Vec<String> = (0..6)
        .map(|index| {
            let other = if probe.upstream == "a" {
                ["b", "a"]
            } else {
                ["a", "b"]
            };
            other[index % 2].to_owned()
        })
        .collect();
    assert_eq!(names, expected, "round robin, request by request");

    // Request bodies are not buffered: the upstream sees the first bytes while the client still
    // holds back the rest.
    let mut client = TcpStream::connect(nginx.address()).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        client,
        "PATCH /files/x HTTP/1.1\r\nHost: {}\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello",
        nginx.address()
    )
    .expect("send the first half");
    let early = seen
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream got the first half before the client sent the second");
    assert!(["a", "b"].contains(&early.upstream));
    client.write_all(b"world").expect("send the second half");
    let mut response = String::new();
    client.read_to_string(&mut response).expect("the response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // nginx logs the request once the connection is closed (it lingers after a body).
    drop(client);

    // The access log names the upstream of every request; a request's line is written just
    // after its response.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(nginx.access_log()).expect("the access log");
        if log.lines().count() >= 8 || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let upstream_of = |line: &str| line.rsplit(' ').next().unwrap_or_default().to_owned();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 8, "{log}");
    assert!(lines[7].starts_with("PATCH /files/x 200 "), "{log}");
    for pair in lines.windows(2) {
        assert_ne!(upstream_of(pair[0]), upstream_of(pair[1]), "{log}");
    }
    let upstream_names: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
    assert!(
        lines
            .iter()
            .all(|line| upstream_names.contains(&upstream_of(line))),
        "{log}"
    );
}
