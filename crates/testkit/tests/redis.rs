//! `Redis`: it answers, a stop makes it refuse, and it comes back on the same port.

use resumable_testkit::{Redis, require};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Sends one RESP command and reads the first reply line.
fn command(port: u16, parts: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("*{}\r\n", parts.len());
    for part in parts {
        request.push_str(&format!("${}\r\n{part}\r\n", part.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let mut byte = [0];
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte)?;
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

#[test]
fn redis_answers_refuses_when_stopped_and_comes_back_empty_on_the_same_port() {
    let started = Instant::now();
    let Some(mut redis) = require(Redis::start(), "RESUMABLE_REQUIRE_REDIS") else {
        return;
    };
    eprintln!("redis-server started in {:?}", started.elapsed());
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(command(port, &["PING"]).expect("PING"), "+PONG");
    assert_eq!(command(port, &["SET", "k", "v"]).expect("SET"), "+OK");
    // Nothing is persisted: a restart must not bring old locks back.
    assert_eq!(
        command(port, &["CONFIG", "GET", "save"]).expect("CONFIG"),
        "*2"
    );

    redis.stop();
    let refused = command(port, &["PING"]).expect_err("a stopped Redis must not answer");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    redis.start_again().expect("start again");
    assert_eq!(redis.port(), port);
    assert_eq!(command(port, &["PING"]).expect("PING again"), "+PONG");
    assert_eq!(command(port, &["EXISTS", "k"]).expect("EXISTS"), ":0");
}

#[test]
fn a_dropped_redis_is_gone() {
    let Some(redis) = require(Redis::start(), "RESUMABLE_REQUIRE_REDIS") else {
        return;
    };
    let port = redis.port();
    drop(redis);
    assert!(
        command(port, &["PING"]).is_err(),
        "Drop must kill the server"
    );
}
