//! Debian's nginx as a round-robin load balancer in front of several upload servers.

use crate::process::{self, Process};
use crate::{Error, Result, http, io_error};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

const INSTALL: &str = "install Debian's nginx (apt-get install nginx; ./test.sh does)";

/// How many free ports to try: another process may take the one picked before nginx binds it.
const PORT_ATTEMPTS: usize = 3;

/// nginx on 127.0.0.1 passing every request to the next of its upstreams in turn.
///
/// Upstream connections are not kept alive, so each request opens its own and round robin
/// alternates request by request, whatever the client's connection reuse: consecutive PATCHes
/// of one upload land on different nodes, which is what a fleet must survive. Request and
/// response bodies stream through (`proxy_request_buffering off`, `proxy_buffering off`), with
/// no size limit, as an upload server needs. The access log names the upstream of every request
/// (`METHOD URI STATUS UPSTREAM`), see [`Nginx::access_log`].
///
/// nginx runs in the foreground as one process (`master_process off`, `daemon off`), so killing
/// it leaves no worker behind.
#[derive(Debug)]
pub struct Nginx {
    port: u16,
    /// Declared before `dir` so the process is killed before its directory is removed.
    _server: Process,
    dir: TempDir,
}

impl Nginx {
    /// Starts `$RESUMABLE_NGINX`, or else `nginx` from `PATH` or `/usr/sbin`, in front of
    /// `upstreams`, and returns once it answers HTTP.
    pub fn start(upstreams: &[SocketAddr]) -> Result<Nginx> {
        if upstreams.is_empty() {
            return Err(Error::Start {
                server: "nginx",
                detail: "no upstream to balance".into(),
            });
        }
        let binary = binary()?;
        let dir = process::scratch("nginx")?;
        for temp in TEMP_DIRS {
            let path = dir.path().join("temp").join(temp);
            std::fs::create_dir_all(&path)
                .map_err(io_error(format!("create {}", path.display())))?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = process::free_port()?;
            let config = dir.path().join("nginx.conf");
            std::fs::write(&config, config_text(dir.path(), port, upstreams))
                .map_err(io_error(format!("write {}", config.display())))?;
            let mut command = Command::new(&binary);
            command
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&config)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .args(["-g", "daemon off;"]);
            let mut server = Process::spawn("nginx", command, &dir.path().join("nginx.log"))?;
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match server.wait_until("answering HTTP", || http::answers(address)) {
                Ok(()) => {
                    return Ok(Nginx {
                        port,
                        _server: server,
                        dir,
                    });
                }
                // Most likely the port was taken in the meantime.
                Err(_) if attempt < PORT_ATTEMPTS && server.exited() => continue,
                Err(error) => {
                    let log = dir.path().join("error.log");
                    return Err(match error {
                        Error::Start { detail, .. } => process::failure(
                            "nginx",
                            format!("{detail}\n(nginx's own log follows)"),
                            &log,
                        ),
                        other => other,
                    });
                }
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address())
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// One line per finished request: `METHOD URI STATUS UPSTREAM` (the upstream's address).
    pub fn access_log(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// Its directory: `nginx.conf`, `access.log`, `error.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The temp paths nginx insists on creating at start; its defaults are under /var/lib.
const TEMP_DIRS: [&str; 5] = ["body", "proxy", "fastcgi", "uwsgi", "scgi"];

fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("RESUMABLE_NGINX") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Missing {
                program: format!("{} ($RESUMABLE_NGINX)", path.display()),
                install: INSTALL,
            })
        };
    }
    // Debian puts it in /usr/sbin, which is not on every user's PATH.
    process::on_path("nginx")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|path| path.is_file()))
        .ok_or(Error::Missing {
            program: "nginx".into(),
            install: INSTALL,
        })
}

/// The configuration: what an upload server behind a load balancer needs, and nothing else.
fn config_text(dir: &Path, port: u16, upstreams: &[SocketAddr]) -> String {
    let servers: String = upstreams
        .iter()
        .map(|address| format!("        server {address};\n"))
        .collect();
    let temp = dir.join("temp");
    let temp = temp.display();
    let dir = dir.display();
    format!(
        r#"# One process in the foreground: nothing outlives a kill.
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;

events {{
    worker_connections 1024;
}}

http {{
    log_format upstreams '$request_method $request_uri $status $upstream_addr';
    access_log {dir}/access.log upstreams;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;

    # Round robin. No `keepalive`: every request takes a fresh upstream connection, so
    # consecutive requests of one client go to different nodes.
    upstream resumable {{
{servers}    }}

    server {{
        listen 127.0.0.1:{port};

        location / {{
            proxy_pass http://resumable;
            proxy_http_version 1.1;
            # Stream bodies both ways: a PATCH reaches the node as it arrives (the node keeps
            # what came when the client is cut off), a download is not spooled to disk.
            proxy_request_buffering off;
            proxy_buffering off;
            # No body size limit here: the server enforces --max-size.
            client_max_body_size 0;
            # A slow upload is not a dead one.
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            # Upload URLs are built from these (resumable serve --behind-proxy); $http_host
            # keeps the port, $host would drop it.
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"#
    )
}
