//! moto's server mode: an S3 as strict as AWS about part sizes, which Garage is not.

use crate::process::{self, Process};
use crate::{Result, http};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use tempfile::TempDir;

const INSTALL: &str = "install moto's server into a venv: python3 -m venv ~/.cache/resumable/moto \
     && ~/.cache/resumable/moto/bin/pip install 'moto[server]' (./test.sh does)";

/// How many free ports to try: another process may take the one picked before moto binds it.
const PORT_ATTEMPTS: usize = 3;

/// A `moto_server` on 127.0.0.1 with one empty bucket. moto refuses to complete a multipart
/// upload whose parts other than the last are under 5 MiB (`EntityTooSmall`), as AWS does. It
/// checks no signatures: any credentials work, [`Moto::access_key_id`]'s included.
#[derive(Debug)]
pub struct Moto {
    port: u16,
    bucket: String,
    /// Declared before `_dir` so the process is killed before its directory is removed.
    _server: Process,
    _dir: TempDir,
}

impl Moto {
    /// Starts `$RESUMABLE_MOTO`, or else `~/.cache/resumable/moto/bin/moto_server`, on a free
    /// port, waits until it answers, and creates the bucket.
    pub fn start() -> Result<Moto> {
        let binary = process::binary(
            "RESUMABLE_MOTO",
            ".cache/resumable/moto/bin/moto_server",
            INSTALL,
        )?;
        let dir = process::scratch("moto")?;
        let log = dir.path().join("moto.log");
        let mut attempt = 0;
        let (port, server) = loop {
            attempt += 1;
            let port = process::free_port()?;
            let mut command = Command::new(&binary);
            command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .current_dir(dir.path());
            let mut server = Process::spawn("moto_server", command, &log)?;
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match server.wait_until("answering HTTP", || http::answers(address)) {
                Ok(()) => break (port, server),
                // Most likely the port was taken in the meantime.
                Err(_) if attempt < PORT_ATTEMPTS && server.exited() => continue,
                Err(error) => return Err(error),
            }
        };
        let moto = Moto {
            port,
            bucket: "resumable-test".into(),
            _server: server,
            _dir: dir,
        };
        moto.create_bucket(&moto.bucket)?;
        Ok(moto)
    }

    /// Makes another empty bucket (moto does on a plain, unsigned `PUT /BUCKET`): tests that
    /// each want a bucket of their own can share one server.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        match http::exchange(self.address(), "PUT", &format!("/{name}"), &[], b"") {
            Ok(response) if response.status == 200 => Ok(()),
            Ok(response) => Err(self._server.failure(format!(
                "PUT /{name} answered {}: {}",
                response.status,
                response.text()
            ))),
            Err(error) => Err(self._server.failure(format!("PUT /{name}: {error}"))),
        }
    }

    /// `http://127.0.0.1:PORT`; buckets are addressed by path (`/BUCKET/KEY`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address())
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `us-east-1`, moto's default region.
    pub fn region(&self) -> &str {
        "us-east-1"
    }

    /// An access key id; moto accepts any.
    pub fn access_key_id(&self) -> &str {
        "testing"
    }

    /// A secret key; moto accepts any.
    pub fn secret_access_key(&self) -> &str {
        "testing"
    }

    /// The bucket made at start, empty.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}
