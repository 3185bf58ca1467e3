//! `redis-server` from the distribution, without persistence.

use crate::process::{self, Process};
use crate::{Error, Result, io_error};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

const INSTALL: &str =
    "install Debian's redis-server (apt-get install redis-server; ./test.sh does)";

/// How many free ports to try: another process may take the one picked before Redis binds it.
const PORT_ATTEMPTS: usize = 3;

/// A Redis server on 127.0.0.1 with nothing saved to disk (`--save "" --appendonly no`), so
/// every start begins empty and a stop loses everything, like a fresh node would.
#[derive(Debug)]
pub struct Redis {
    binary: PathBuf,
    port: u16,
    /// Its working directory; removed with the handle (after the process, which is declared
    /// first and so dropped first).
    server: Option<Process>,
    dir: TempDir,
}

impl Redis {
    /// Starts `redis-server` from `PATH` on a free port and waits until it answers `PING`.
    pub fn start() -> Result<Redis> {
        let binary = process::on_path("redis-server").ok_or(Error::Missing {
            program: "redis-server".into(),
            install: INSTALL,
        })?;
        let mut dir = process::scratch("redis")?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let mut redis = Redis {
                binary: binary.clone(),
                port: process::free_port()?,
                server: None,
                dir,
            };
            match redis.launch() {
                Ok(()) => return Ok(redis),
                Err(error) => {
                    last = Some(error);
                    dir = redis.into_dir();
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on, kept across [`Redis::stop`] and [`Redis::start_again`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: a crash, not a shutdown) and returns once it is gone, so
    /// connections to the port are refused from then on. The port is kept for
    /// [`Redis::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill();
        }
    }

    /// Starts a fresh, empty server on the same port (after [`Redis::stop`]; a running one is
    /// stopped first) and waits until it answers.
    pub fn start_again(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    /// Runs `redis-cli ARGS…` (from the same package) against the server and returns what it
    /// printed, trimmed: a test's view of the keys, independent of the client under test.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let binary = process::on_path("redis-cli").ok_or(Error::Missing {
            program: "redis-cli".into(),
            install: INSTALL,
        })?;
        let output = Command::new(binary)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map_err(io_error(format!("run redis-cli {}", args.join(" "))))?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn launch(&mut self) -> Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        let log = self.dir.path().join("redis.log");
        let mut server = Process::spawn("redis-server", command, &log)?;
        let address = self.address();
        server.wait_until("answering PING", || ping(address))?;
        self.server = Some(server);
        Ok(())
    }

    fn into_dir(mut self) -> TempDir {
        self.stop();
        self.dir
    }
}

/// Whether a Redis server at `address` answers `PING` with `+PONG` (raw RESP).
fn ping(address: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
        let mut reply = [0; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}
