//! The S3 servers of `resumable_testkit` for the tests, each shared by the tests of a binary
//! running at the same time and killed when the last one drops it: moto's server mode (a
//! strict S3: it refuses non-last parts under 5 MiB) and a single-node Garage. Every test gets
//! a bucket of its own.
//!
//! A missing server fails the test binary when `RESUMABLE_REQUIRE_S3` is set (as `./test.sh`
//! does); without it, the binary says loudly on stderr that nothing was tested and exits 0.
//! Every test of a binary needs its server, so there is nothing left to run.

#![allow(dead_code, unreachable_pub)]

use resumable_core::{Clock, UploadId};
use resumable_s3::{S3Credentials, S3Store, S3StoreConfig};
use resumable_testkit::{Garage, Moto};
use std::sync::{Arc, Mutex, Weak};

/// A running S3 server.
pub struct Server {
    pub endpoint: String,
    pub region: String,
    pub credentials: S3Credentials,
    /// Whether `ListMultipartUploads` tells when each was opened: moto answers a fixed
    /// 2010-11-10 for every one, so sweeping by age cannot be checked there.
    pub reports_initiated: bool,
    /// The server itself, killed when this is dropped.
    kind: Kind,
}

enum Kind {
    Garage(Garage),
    Moto(Moto),
}

impl Server {
    /// Makes the bucket `name`, empty, which the credentials may use.
    fn create_bucket(&self, name: &str) -> resumable_testkit::Result<()> {
        match &self.kind {
            Kind::Garage(garage) => garage.create_bucket(name),
            Kind::Moto(moto) => moto.create_bucket(name),
        }
    }
}

/// The server `start` gives, or the end of the test binary when it is not installed and not
/// required (see the module's documentation).
fn started<T>(start: fn() -> resumable_testkit::Result<T>) -> T {
    match resumable_testkit::require(start(), "RESUMABLE_REQUIRE_S3") {
        Some(server) => server,
        None => std::process::exit(0),
    }
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
    shared(&SLOT, || {
        let moto = started(Moto::start);
        Server {
            endpoint: moto.endpoint(),
            region: moto.region().into(),
            credentials: S3Credentials {
                access_key_id: moto.access_key_id().into(),
                secret_access_key: moto.secret_access_key().into(),
            },
            reports_initiated: false,
            kind: Kind::Moto(moto),
        }
    })
}

/// A single-node Garage, shared by the tests running at the same time.
pub fn garage() -> Arc<Server> {
    static SLOT: Mutex<Weak<Server>> = Mutex::new(Weak::new());
    shared(&SLOT, || {
        let garage = started(Garage::start);
        Server {
            endpoint: garage.endpoint(),
            region: garage.region().into(),
            credentials: S3Credentials {
                access_key_id: garage.access_key_id().into(),
                secret_access_key: garage.secret_access_key().into(),
            },
            reports_initiated: true,
            kind: Kind::Garage(garage),
        }
    })
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
        // The testkit's servers are blocking (Garage's CLI, and a wait until the bucket lists).
        let made = {
            let (server, name) = (server.clone(), name.clone());
            tokio::task::spawn_blocking(move || server.create_bucket(&name))
        };
        if let Err(error) = made.await.expect("create the bucket") {
            panic!("create bucket {name}: {error}");
        }
        Bucket {
            server,
            name,
            spill: tempfile::tempdir().expect("temporary directory"),
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
