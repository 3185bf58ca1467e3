//! A server process that is killed when dropped, and the waits around starting one.

use crate::{Error, Result, io_error};
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer. Generous: the machine running the tests may be busy
/// compiling; a server that answers returns at once anyway.
pub(crate) const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running server, its output in `log`; killed (and reaped) on drop.
#[derive(Debug)]
pub(crate) struct Process {
    server: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub(crate) fn spawn(server: &'static str, mut command: Command, log: &Path) -> Result<Self> {
        let output = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_error(format!("create {}", log.display())))?;
        let errors = output
            .try_clone()
            .map_err(io_error("duplicate a file handle"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(io_error(format!("spawn {server}")))?;
        Ok(Process {
            server,
            child,
            log: log.to_owned(),
        })
    }

    /// Polls `ready` until it says yes, failing early if the process exits and after
    /// [`START_DEADLINE`].
    pub(crate) fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
        let started = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failure(format!("exited ({status}) before {what}")));
            }
            if started.elapsed() > START_DEADLINE {
                return Err(self.failure(format!("not {what} after {START_DEADLINE:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has exited.
    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// An [`Error::Start`] with `why` and the end of the server's log.
    pub(crate) fn failure(&self, why: String) -> Error {
        failure(self.server, why, &self.log)
    }

    /// Kills the process and waits for it, so its port is closed when this returns.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An [`Error::Start`] naming `server`, with `why` and the last lines of `log`.
pub(crate) fn failure(server: &'static str, why: String, log: &Path) -> Error {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    Error::Start {
        server,
        detail: format!("{why}; the end of {}:\n{tail}", log.display()),
    }
}

/// A port nobody listens on right now. Another process could take it before the server binds
/// it; the servers that fail to bind are started again on a new one.
pub(crate) fn free_port() -> Result<u16> {
    let probe =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_error("bind 127.0.0.1:0"))?;
    let address = probe
        .local_addr()
        .map_err(io_error("read a local address"))?;
    Ok(address.port())
}

/// `command` found on `PATH`, like a shell would.
pub(crate) fn on_path(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| candidate.is_file())
}

/// The binary at `$variable`, or else at `default` (under the home directory); `Missing` with
/// `install` when neither exists.
pub(crate) fn binary(variable: &str, default: &str, install: &'static str) -> Result<PathBuf> {
    let path = match std::env::var_os(variable) {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(default),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing {
            program: format!("{} (${variable})", path.display()),
            install,
        })
    }
}

/// A temporary directory for one server, named after it.
pub(crate) fn scratch(server: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("resumable-{server}-"))
        .tempdir()
        .map_err(io_error("create a temporary directory"))
}
