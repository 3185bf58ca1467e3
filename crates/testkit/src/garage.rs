//! Garage, a real S3-compatible object store, as a single node.

use crate::process::{self, Process, START_DEADLINE};
use crate::sigv4::{self, Signer, Unsigned};
use crate::{Error, Result, http, io_error};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};
use tempfile::TempDir;

const INSTALL: &str = "build Garage: cargo install --locked garage --version 2.5.0 --root \
     ~/.cache/resumable/garage (./test.sh does; about 15 minutes)";

/// How many times to pick free ports: another process may take one before Garage binds it.
const PORT_ATTEMPTS: usize = 3;

/// The name of the one access key, which the CLI's `bucket allow` names.
const KEY_NAME: &str = "resumable-test";

/// A single-node Garage (`replication_factor = 1`, LMDB metadata: Garage's default; its sqlite engine once left a part request unanswered under load, "database is locked") on 127.0.0.1, with one
/// access key allowed to read, write and own one empty bucket. Garage checks signatures, so
/// requests must be signed with [`Garage::access_key_id`] and [`Garage::secret_access_key`]
/// for [`Garage::region`] (see [`crate::sigv4`]).
#[derive(Debug)]
pub struct Garage {
    binary: PathBuf,
    s3_port: u16,
    access_key_id: String,
    secret_access_key: String,
    bucket: String,
    /// Declared before `dir` so the process is killed before its directory is removed.
    _server: Process,
    dir: TempDir,
}

/// The node as it comes up, before it has a key and a bucket.
struct Node {
    binary: PathBuf,
    config: PathBuf,
    rpc_port: u16,
    s3_port: u16,
    server: Process,
}

impl Garage {
    /// The region Garage is configured with; requests are signed for it.
    pub const REGION: &'static str = "garage";

    /// Starts `$RESUMABLE_GARAGE`, or else `~/.cache/resumable/garage/bin/garage`: the server,
    /// then with its CLI a layout of the one node, a key and a bucket; returns once a signed
    /// request lists the bucket.
    pub fn start() -> Result<Garage> {
        let binary = process::binary(
            "RESUMABLE_GARAGE",
            ".cache/resumable/garage/bin/garage",
            INSTALL,
        )?;
        let dir = process::scratch("garage")?;
        let mut attempt = 0;
        let node = loop {
            attempt += 1;
            let mut node = Node::spawn(&binary, dir.path())?;
            match node.wait_for_rpc() {
                Ok(()) => break node,
                // Most likely a port was taken in the meantime.
                Err(_) if attempt < PORT_ATTEMPTS && node.server.exited() => continue,
                Err(error) => return Err(error),
            }
        };
        node.lay_out()?;
        let bucket = "resumable-test";
        let key = node.cli(&["key", "create", KEY_NAME])?;
        let access_key_id = field(&key, "Key ID").ok_or_else(|| node.unparsed("key", &key))?;
        let secret_access_key =
            field(&key, "Secret key").ok_or_else(|| node.unparsed("key", &key))?;
        make_bucket(|args| node.cli(args), bucket)?;
        let garage = Garage {
            binary: node.binary,
            s3_port: node.s3_port,
            access_key_id,
            secret_access_key,
            bucket: bucket.into(),
            _server: node.server,
            dir,
        };
        // Layout changes and new keys reach the S3 front-end shortly after the CLI returns.
        let (address, list) = (garage.address(), garage.list_request(bucket));
        let mut garage = garage;
        garage._server.wait_until("listing the bucket", || {
            list(address).is_ok_and(|response| response.status == 200)
        })?;
        Ok(garage)
    }

    /// `http://127.0.0.1:PORT`; buckets are addressed by path (`/BUCKET/KEY`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address())
    }

    /// The S3 API's address.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.s3_port))
    }

    /// [`Garage::REGION`].
    pub fn region(&self) -> &str {
        Self::REGION
    }

    /// The access key's id (`GK…`).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The access key's secret.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The bucket made at start, empty, which the key may read, write and own.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A signer with the key, for the region.
    pub fn signer(&self) -> Signer {
        Signer::new(&self.access_key_id, &self.secret_access_key, Self::REGION)
    }

    /// The node's directory: `garage.toml`, `garage.log`, `meta/`, `data/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Makes another empty bucket with the CLI (the key may not create buckets itself), which
    /// the key may read, write and own, and returns once a signed request lists it: tests that
    /// each want a bucket of their own can share one node.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let config = self.dir.path().join("garage.toml");
        make_bucket(
            |args| run_cli(&self.binary, &config, args).map_err(|why| self._server.failure(why)),
            name,
        )?;
        // Permissions reach the S3 front-end shortly after the CLI returns.
        let (address, list) = (self.address(), self.list_request(name));
        let started = Instant::now();
        while !list(address).is_ok_and(|response| response.status == 200) {
            if started.elapsed() > START_DEADLINE {
                return Err(self
                    ._server
                    .failure(format!("bucket {name} not listed after {START_DEADLINE:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// A signed `ListObjectsV2` of `bucket`, to send to the address given.
    fn list_request(
        &self,
        bucket: &str,
    ) -> impl Fn(SocketAddr) -> std::io::Result<http::Response> + use<> {
        let (signer, bucket) = (self.signer(), bucket.to_owned());
        move |address| {
            let host = address.to_string();
            let path = format!("/{bucket}");
            let query = [("list-type", "2")];
            let unsigned = Unsigned {
                method: "GET",
                host: &host,
                path: &path,
                query: &query,
                headers: &[],
                payload_sha256: &sigv4::sha256_hex(b""),
            };
            let signed = signer.sign(&unsigned, SystemTime::now());
            let headers: Vec<(&str, &str)> = signed
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            let target = format!("{path}?{}", sigv4::canonical_query(&query));
            http::exchange(address, "GET", &target, &headers, b"")
        }
    }
}

impl Node {
    /// Writes a config with fresh ports into `dir` and starts the server.
    fn spawn(binary: &Path, dir: &Path) -> Result<Node> {
        let (rpc_port, s3_port) = (process::free_port()?, process::free_port()?);
        let config = dir.join("garage.toml");
        let text = format!(
            "metadata_dir = \"{meta}\"\n\
             data_dir = \"{data}\"\n\
             db_engine = \"lmdb\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_secret = \"{secret}\"\n\
             \n\
             [s3_api]\n\
             s3_region = \"{region}\"\n\
             api_bind_addr = \"127.0.0.1:{s3_port}\"\n",
            meta = dir.join("meta").display(),
            data = dir.join("data").display(),
            secret = rpc_secret()?,
            region = Garage::REGION,
        );
        std::fs::write(&config, text).map_err(io_error(format!("write {}", config.display())))?;
        let mut command = Command::new(binary);
        command.arg("-c").arg(&config).arg("server");
        let server = Process::spawn("garage", command, &dir.join("garage.log"))?;
        Ok(Node {
            binary: binary.to_owned(),
            config,
            rpc_port,
            s3_port,
            server,
        })
    }

    /// Waits until the CLI can reach the server.
    fn wait_for_rpc(&mut self) -> Result<()> {
        let rpc = SocketAddr::from((Ipv4Addr::LOCALHOST, self.rpc_port));
        let (binary, config) = (self.binary.clone(), self.config.clone());
        self.server.wait_until("answering RPC", || {
            TcpStream::connect(rpc).is_ok() && run_cli(&binary, &config, &["status"]).is_ok()
        })
    }

    /// Gives the one node a zone and a capacity and applies that as the first layout.
    fn lay_out(&self) -> Result<()> {
        let printed = self.cli(&["node", "id", "-q"])?;
        let id = printed
            .split_whitespace()
            .find_map(|word| word.split_once('@').map(|(id, _)| id.to_owned()))
            .ok_or_else(|| self.unparsed("node id", &printed))?;
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id])?;
        self.cli(&["layout", "apply", "--version", "1"])?;
        Ok(())
    }

    /// Runs `garage -c CONFIG ARGS…` and returns its stdout.
    fn cli(&self, args: &[&str]) -> Result<String> {
        run_cli(&self.binary, &self.config, args).map_err(|why| self.server.failure(why))
    }

    fn unparsed(&self, command: &str, printed: &str) -> Error {
        self.server.failure(format!(
            "could not read `garage {command}`'s output: {printed}"
        ))
    }
}

/// Creates `bucket` and lets the key read, write and own it, running the CLI with `cli`.
fn make_bucket(cli: impl Fn(&[&str]) -> Result<String>, bucket: &str) -> Result<()> {
    cli(&["bucket", "create", bucket])?;
    cli(&[
        "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", KEY_NAME,
    ])?;
    Ok(())
}

/// `garage -c CONFIG ARGS…`'s stdout, or why it failed.
fn run_cli(binary: &Path, config: &Path, args: &[&str]) -> std::result::Result<String, String> {
    let output = Command::new(binary)
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .map_err(|error| format!("garage {}: {error}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "garage {} failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The value of a `Name: value` line of the CLI's output.
fn field(printed: &str, name: &str) -> Option<String> {
    printed.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_owned())
    })
}

/// 32 random bytes in hex: the secret the node's RPC requires.
fn rpc_secret() -> Result<String> {
    let mut bytes = [0; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(io_error("read /dev/urandom"))?;
    Ok(hex::encode(bytes))
}
