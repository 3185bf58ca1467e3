//! A whole fleet on one machine: Garage, Redis, several `resumable serve` nodes sharing them,
//! and nginx in front, so clients can be pointed at one URL whose requests land on every node
//! in turn.

use crate::process::{self, Process};
use crate::{Error, Garage, Nginx, Redis, Result, http, io_error};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// The key prefix the nodes keep their uploads under, in Garage's bucket.
const PREFIX: &str = "fleet";

/// What a node prints once it listens.
const LISTENING: &str = "resumable listening on http://";

/// The fleet. Dropping it stops nginx, then the nodes, then Redis and Garage (the fields'
/// order), and removes their directories.
#[derive(Debug)]
pub struct Fleet {
    nginx: Nginx,
    nodes: Vec<Node>,
    redis: Redis,
    garage: Garage,
}

/// One `resumable serve`.
#[derive(Debug)]
pub struct Node {
    address: SocketAddr,
    log: PathBuf,
    /// Declared before `dir` so the process is killed before its directory is removed.
    _server: Process,
    dir: TempDir,
}

impl Fleet {
    /// Starts Garage and Redis, then `count` nodes of `binary` (`resumable`) with their own
    /// `--data-dir`s, `--store s3://BUCKET/fleet` on Garage, `--redis`, `--behind-proxy` and
    /// `extra` flags, then nginx over them; returns once every node is ready (`/readyz`) and
    /// nginx answers.
    pub fn start(binary: &Path, count: usize, extra: &[String]) -> Result<Fleet> {
        if !binary.is_file() {
            return Err(Error::Missing {
                program: binary.display().to_string(),
                install: "build it: cargo build --release --bin resumable",
            });
        }
        let garage = Garage::start()?;
        let redis = Redis::start()?;
        let nodes = (0..count)
            .map(|number| Node::start(binary, number, &garage, &redis, extra))
            .collect::<Result<Vec<_>>>()?;
        let addresses: Vec<SocketAddr> = nodes.iter().map(|node| node.address).collect();
        let nginx = Nginx::start(&addresses)?;
        Ok(Fleet {
            nginx,
            nodes,
            redis,
            garage,
        })
    }

    /// The load balancer in front of the nodes.
    pub fn nginx(&self) -> &Nginx {
        &self.nginx
    }

    /// The nodes, in the order nginx's round robin names them.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The nodes' Redis.
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// The nodes' S3 store.
    pub fn garage(&self) -> &Garage {
        &self.garage
    }

    /// The `--store` every node names.
    pub fn store_url(&self) -> String {
        format!("s3://{}/{PREFIX}", self.garage.bucket())
    }
}

impl Node {
    fn start(
        binary: &Path,
        number: usize,
        garage: &Garage,
        redis: &Redis,
        extra: &[String],
    ) -> Result<Node> {
        let dir = process::scratch(&format!("node{number}"))?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(io_error(format!("create {}", data.display())))?;
        let mut command = Command::new(binary);
        // No inherited setting may change what the fleet is.
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("RESUMABLE_") || name_text.starts_with("AWS_") {
                command.env_remove(&name);
            }
        }
        command
            .current_dir(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--store")
            .arg(format!("s3://{}/{PREFIX}", garage.bucket()))
            .args(["--s3-endpoint", &garage.endpoint()])
            .args(["--s3-region", garage.region()])
            .args(["--redis", &redis.url()])
            .arg("--behind-proxy")
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", garage.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", garage.secret_access_key());
        let log = dir.path().join("node.log");
        let mut server = Process::spawn("resumable serve", command, &log)?;
        let mut address = None;
        server.wait_until("listening", || {
            address = listening_address(&log);
            address.is_some()
        })?;
        let address = address.expect("waited for it");
        server.wait_until("ready (/readyz)", || {
            http::exchange(address, "GET", "/readyz", &[], b"")
                .is_ok_and(|response| response.status == 200)
        })?;
        Ok(Node {
            address,
            log,
            _server: server,
            dir,
        })
    }

    /// `http://127.0.0.1:PORT`: the node itself, bypassing nginx.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its stdout and stderr.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// The address of the `resumable listening on http://ADDR` line in `log`, once it is there.
fn listening_address(log: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix(LISTENING))
        .and_then(|address| address.parse().ok())
}
