//! Real S3 servers for the tests, on 127.0.0.1, free ports, temporary directories, killed
//! when the last test using them drops them: moto's server mode (a strict S3: it refuses
//! non-last parts under 5 MiB) and a single-node Garage.
//!
//! A missing server fails the test binary when `RESUMABLE_REQUIRE_S3` is set (as `./test.sh`
//! does); without it, the binary says loudly on stderr that nothing was tested and exits 0.
//! Every test of a binary needs its server, so there is nothing left to run.

#![allow(dead_code, unreachable_pub)]

use resumable_core::{Clock, UploadId};
use resumable_s3::{S3Credentials, S3Store, S3StoreConfig};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A running S3 server.
pub struct Server {
    child: Child,
    pub endpoint: String,
    pub region: String,
    pub credentials: S3Credentials,
    /// Whether `ListMultipartUploads` tells when each was opened: moto answers a fixed
    /// 2010-11-10 for every one, so sweeping by age cannot be checked there.
    pub reports_initiated: bool,
    /// Holds the server's files; removed after the server is killed.
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().expect("poll the server") {
            panic!("{what} exited before listening: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Says that nothing was tested, or fails when the server is required.
fn missing(what: &str, why: &str) -> ! {
    assert!(
        std::env::var_os("RESUMABLE_REQUIRE_S3").is_none(),
        "{what} is missing ({why}); ./test.sh installs it"
    );
    // Straight to the process's stderr: libtest captures a passing test's output.
    let _ = writeln!(
        std::io::stderr(),
        "\nWARNING: {what} tests SKIPPED, nothing was tested: {why} \
         (./test.sh installs it; RESUMABLE_REQUIRE_S3=1 makes this an error)\n"
    );
    std::process::exit(0);
}

fn home_cache(path: &str) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/resumable").join(path)
}

fn executable(variable: &str, default: PathBuf) -> Option<PathBuf> {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or(default);
    path.is_file().then_some(path)
}

fn shared(slot: &'static Mutex<Weak<Server>>, start: fn() -> Server) -> Arc<Server> {
    let mut slot = slot.lock().unwrap_or_else(|poison| poison.into_inner());
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(start());
    *slot = Arc::downgrade(&server);
    server
}

/// moto's server mode, shared by the tests running at the same time.
pub fn moto() -> Arc<Server> {
    static SLOT: Mutex<Weak<Server>> = Mutex::new(Weak::new());
    shared(&SLOT, start_moto)
}

fn start_moto() -> Server {
    // The version ./test.sh installs (5.2.x answers ListParts with a root element the SDK
    // refuses).
    let default = home_cache("moto/bin/moto_server");
    let Some(binary) = executable("RESUMABLE_MOTO", default) else {
        missing("moto", "~/.cache/resumable/moto/bin/moto_server not found");
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let mut child = Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("moto.log")).expect("log file"))
        .spawn()
        .expect("start moto_server");
    wait_for_port(port, &mut child, "moto_server");
    Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        region: "us-east-1".into(),
        credentials: S3Credentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        },
        reports_initiated: false,
        _dir: dir,
    }
}

/// A single-node Garage, shared by the tests running at the same time.
pub fn garage() -> Arc<Server> {
    static SLOT: Mutex<Weak<Server>> = Mutex::new(Weak::new());
    shared(&SLOT, start_garage)
}

fn garage_command(binary: &Path, config: &Path, args: &[&str]) -> String {
    let output = Command::new(binary)
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run garage");
    assert!(
        output.status.success(),
        "garage {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn start_garage() -> Server {
    let Some(binary) = executable("RESUMABLE_GARAGE", home_cache("garage/bin/garage")) else {
        missing("Garage", "~/.cache/resumable/garage/bin/garage not found");
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let (rpc, s3) = (free_port(), free_port());
    // Two random ids: 64 hex digits, as Garage wants.
    let secret = format!("{}{}", UploadId::random(), UploadId::random());
    let config = dir.path().join("garage.toml");
    std::fs::write(
        &config,
        format!(
            "metadata_dir = \"{root}/meta\"\n\
             data_dir = \"{root}/data\"\n\
             db_engine = \"sqlite\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{secret}\"\n\
             [s3_api]\n\
             s3_region = \"garage\"\n\
             api_bind_addr = \"127.0.0.1:{s3}\"\n",
            root = dir.path().display()
        ),
    )
    .expect("write garage.toml");
    let mut child = Command::new(&binary)
        .arg("-c")
        .arg(&config)
        .arg("server")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("garage.log")).expect("log file"))
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start garage");
    wait_for_port(rpc, &mut child, "garage");
    wait_for_port(s3, &mut child, "garage");
    let node = garage_command(&binary, &config, &["node", "id", "-q"]);
    let node = node.trim().split('@').next().unwrap_or_default().to_owned();
    garage_command(
        &binary,
        &config,
        &["layout", "assign", "-z", "dc1", "-c", "1G", &node],
    );
    garage_command(&binary, &config, &["layout", "apply", "--version", "1"]);
    let key = garage_command(&binary, &config, &["key", "create", "test-key"]);
    let field = |name: &str| {
        key.lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .map(|value| value.trim_start_matches(':').trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in `garage key create`: {key}"))
    };
    let credentials = S3Credentials {
        access_key_id: field("Key ID"),
        secret_access_key: field("Secret key"),
    };
    garage_command(
        &binary,
        &config,
        &["key", "allow", "--create-bucket", "test-key"],
    );
    Server {
        child,
        endpoint: format!("http://127.0.0.1:{s3}"),
        region: "garage".into(),
        credentials,
        reports_initiated: true,
        _dir: dir,
    }
}

/// A store on a new bucket of `server`; the guard keeps the server (and the bucket's
/// temporary directory) alive.
pub struct Bucket {
    pub server: Arc<Server>,
    pub name: String,
    pub spill: tempfile::TempDir,
}

impl Bucket {
    pub async fn new(server: Arc<Server>) -> Bucket {
        let name = format!("b{}", &UploadId::random().as_str()[..20]);
        let bucket = Bucket {
            server,
            name,
            spill: tempfile::tempdir().expect("temporary directory"),
        };
        let store = bucket.store(bucket.config()).await;
        // A node whose layout was just applied may not take requests yet: retry a while.
        let started = Instant::now();
        loop {
            let created = store
                .client()
                .create_bucket()
                .bucket(&bucket.name)
                .send()
                .await;
            match created {
                Ok(_) => return bucket,
                Err(error) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!(
                    "create bucket: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&error)
                ),
            }
        }
    }

    pub fn config(&self) -> S3StoreConfig {
        let mut config = S3StoreConfig::new(&self.name);
        config.endpoint = Some(self.server.endpoint.clone());
        config.region = self.server.region.clone();
        config.credentials = Some(self.server.credentials.clone());
        config.prefix = "uploads".into();
        config.temp_dir = self.spill.path().to_owned();
        config
    }

    pub fn config_with_clock(&self, clock: Arc<dyn Clock>) -> S3StoreConfig {
        let mut config = self.config();
        config.clock = clock;
        config
    }

    pub async fn store(&self, config: S3StoreConfig) -> S3Store {
        S3Store::connect(config).await.expect("connect")
    }
}
