//! `resumable serve`.

use crate::Usage;
use anyhow::Context;
use clap::Args;
use resumable_core::{MemoryLocker, ServiceConfig, SystemClock, UploadService};
use resumable_fs::{FileStore, FileStoreConfig};
use resumable_server::auth::{
    Auth, ForwardAuth, ForwardSettings, JwtAuth, JwtKeySource, JwtSettings, TokensAuth,
};
use resumable_server::tls::Tls;
use resumable_server::{CorsOrigins, Http2Config, ServerConfig};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Flags of `resumable serve`; each can also be set by its `RESUMABLE_*` environment variable.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, env = "RESUMABLE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Directory holding uploads (created if missing).
    #[arg(long, env = "RESUMABLE_DATA_DIR", default_value = "./uploads")]
    data_dir: PathBuf,

    /// Largest upload accepted: bytes, or with a unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB),
    /// or `unlimited`.
    #[arg(long, env = "RESUMABLE_MAX_SIZE", default_value = "1TiB", value_parser = parse_max_size)]
    max_size: MaxSize,

    /// How long a request waits for another request (or process) to let go of an upload.
    #[arg(long, env = "RESUMABLE_LOCK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    lock_timeout: Duration,

    /// How long an upload body may go without a byte before it is cut (its bytes are kept).
    #[arg(long, env = "RESUMABLE_BODY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    body_timeout: Duration,

    /// How long a connection may stay silent before sending a request (after it opens, and
    /// between requests on a kept-alive connection) before it is closed.
    #[arg(long, env = "RESUMABLE_HEAD_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    head_timeout: Duration,

    /// How long after its last write an unfinished upload expires and is removed (`never` to
    /// keep unfinished uploads forever). Finished uploads never expire.
    #[arg(long, env = "RESUMABLE_EXPIRE_AFTER", default_value = "24h", value_parser = parse_expiry)]
    expire_after: Expiry,

    /// Origins whose pages may upload from a browser: `*` for any, or a comma-separated list such
    /// as `https://a.example,https://b.example`; empty to refuse every cross-origin page.
    #[arg(long, env = "RESUMABLE_CORS_ORIGINS", default_value = "*", value_parser = parse_origins)]
    cors_origins: CorsOrigins,

    /// Build upload URLs from `Forwarded` / `X-Forwarded-Host` / `X-Forwarded-Proto`. Only for a
    /// server reachable solely through a proxy that sets those headers.
    #[arg(long, env = "RESUMABLE_BEHIND_PROXY")]
    behind_proxy: bool,

    /// Write every byte through the page cache instead of sending long runs straight to the disk
    /// (O_DIRECT). Direct writes use less CPU; file systems that refuse them fall back by
    /// themselves, so this is only for comparing the two.
    #[arg(long, env = "RESUMABLE_NO_DIRECT_IO")]
    no_direct_io: bool,

    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first, then any
    /// intermediates). Needs --tls-key. Both files are re-read on SIGHUP: new connections get
    /// the new certificate, open ones keep theirs. HTTP/2 or HTTP/1.1 is chosen by ALPN.
    #[arg(long, env = "RESUMABLE_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, env = "RESUMABLE_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// How many requests (streams) one HTTP/2 connection may have open at once; a client opens
    /// more as earlier ones end.
    #[arg(long, env = "RESUMABLE_HTTP2_MAX_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    http2_max_streams: u32,

    /// How long an HTTP/2 connection may go with no request open before it is closed
    /// (gracefully: GOAWAY). HTTP/1.1 connections have --head-timeout between requests.
    #[arg(long, env = "RESUMABLE_HTTP2_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    http2_idle_timeout: Duration,

    #[command(flatten)]
    auth: AuthArgs,

    #[command(flatten)]
    hooks: crate::hooks::HookArgs,

    /// The bytes each owner's uploads may hold together (finished or not; an upload of known
    /// length counts whole from its creation). Over it, creation is refused with 413 and an
    /// append stores what fits and stops with 413. A token's `quota_bytes` claim may lower it.
    #[arg(long, env = "RESUMABLE_QUOTA_BYTES", value_parser = crate::options::parse_size)]
    quota_bytes: Option<u64>,

    /// The unfinished uploads each owner may have at once; one more is refused with 429. A
    /// token's `quota_uploads` claim may lower it.
    #[arg(long, env = "RESUMABLE_QUOTA_UPLOADS")]
    quota_uploads: Option<u64>,
}

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthMode {
    /// Everyone is one anonymous principal: uploads are open to anyone who can reach the server.
    None,
    /// `Authorization: Bearer <JWT>`, verified with --jwt-secret-file, --jwt-public-key or
    /// --jwt-jwks; `sub` is the owner.
    Jwt,
    /// `Authorization: Bearer <token>`, looked up in --tokens-file.
    Tokens,
    /// The request's Authorization and Cookie go to --auth-forward-url, which names the owner.
    Forward,
}

/// Flags of authentication.
#[derive(Args, Debug)]
struct AuthArgs {
    /// Who may upload: `none` (anyone who can reach the server), `jwt`, `tokens` or `forward`.
    /// Another owner's upload answers 404, as if it did not exist.
    #[arg(long, env = "RESUMABLE_AUTH", value_enum, default_value = "none")]
    auth: AuthMode,

    /// `--auth jwt`: a file holding the HS256 shared secret (at least 32 bytes; a trailing
    /// newline is ignored).
    #[arg(long, env = "RESUMABLE_JWT_SECRET_FILE", conflicts_with_all = ["jwt_public_key", "jwt_jwks"])]
    jwt_secret_file: Option<PathBuf>,

    /// `--auth jwt`: a PEM public key (RSA for RS256/PS256, EC P-256/P-384 for ES256/ES384, or
    /// Ed25519 for EdDSA); the key decides the algorithms a token may use.
    #[arg(long, env = "RESUMABLE_JWT_PUBLIC_KEY", conflicts_with = "jwt_jwks")]
    jwt_public_key: Option<PathBuf>,

    /// `--auth jwt`: a JSON Web Key Set file; a token's `kid` picks the key.
    #[arg(long, env = "RESUMABLE_JWT_JWKS")]
    jwt_jwks: Option<PathBuf>,

    /// `--auth jwt`: the issuer (`iss`) tokens must name.
    #[arg(long, env = "RESUMABLE_JWT_ISSUER")]
    jwt_issuer: Option<String>,

    /// `--auth jwt`: the audience (`aud`) tokens must name.
    #[arg(long, env = "RESUMABLE_JWT_AUDIENCE")]
    jwt_audience: Option<String>,

    /// `--auth jwt`: clock skew allowed on `exp` and `nbf`.
    #[arg(long, env = "RESUMABLE_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    jwt_leeway: Duration,

    /// `--auth tokens`: a file of `TOKEN OWNER` lines (`#` starts a comment), re-read when it
    /// changes and on SIGHUP.
    #[arg(long, env = "RESUMABLE_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,

    /// `--auth forward`: the application's endpoint. It gets a GET with the request's
    /// Authorization and Cookie, X-Forwarded-Method and X-Forwarded-Uri, and answers 2xx with
    /// the owner (a `Resumable-Owner` header, or JSON `{"owner": "..."}`), or 401/403.
    #[arg(long, env = "RESUMABLE_AUTH_FORWARD_URL")]
    auth_forward_url: Option<String>,

    /// `--auth forward`: how long an answer is reused for the same credentials, method and path.
    #[arg(long, env = "RESUMABLE_AUTH_FORWARD_CACHE", default_value = "10s", value_parser = humantime::parse_duration)]
    auth_forward_cache: Duration,

    /// `--auth forward`: how long the endpoint may take to answer (then 503).
    #[arg(long, env = "RESUMABLE_AUTH_FORWARD_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    auth_forward_timeout: Duration,
}

impl AuthArgs {
    /// The authenticator these flags describe; an error names the missing or unusable flag.
    fn authenticator(&self) -> anyhow::Result<Auth> {
        let auth = match self.auth {
            AuthMode::None => Auth::None,
            AuthMode::Jwt => {
                let keys = match (&self.jwt_secret_file, &self.jwt_public_key, &self.jwt_jwks) {
                    (Some(path), None, None) => JwtKeySource::SecretFile(path.clone()),
                    (None, Some(path), None) => JwtKeySource::PublicKeyFile(path.clone()),
                    (None, None, Some(path)) => JwtKeySource::JwksFile(path.clone()),
                    _ => anyhow::bail!(
                        "--auth jwt needs one of --jwt-secret-file, --jwt-public-key, --jwt-jwks"
                    ),
                };
                let settings = JwtSettings {
                    keys,
                    issuer: self.jwt_issuer.clone(),
                    audience: self.jwt_audience.clone(),
                    leeway: self.jwt_leeway,
                };
                Auth::Jwt(JwtAuth::new(&settings).map_err(anyhow::Error::msg)?)
            }
            AuthMode::Tokens => {
                let path = self
                    .tokens_file
                    .clone()
                    .context("--auth tokens needs --tokens-file")?;
                Auth::Tokens(TokensAuth::new(path).map_err(anyhow::Error::msg)?)
            }
            AuthMode::Forward => {
                let url = self
                    .auth_forward_url
                    .clone()
                    .context("--auth forward needs --auth-forward-url")?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    anyhow::bail!("--auth-forward-url must be an http:// URL, not {url:?}");
                }
                let settings = ForwardSettings {
                    url,
                    cache_for: self.auth_forward_cache,
                    timeout: self.auth_forward_timeout,
                };
                Auth::Forward(ForwardAuth::new(settings).map_err(anyhow::Error::msg)?)
            }
        };
        Ok(auth)
    }
}

/// An expiry period, or none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expiry(Option<Duration>);

fn parse_expiry(text: &str) -> Result<Expiry, String> {
    if text.trim().eq_ignore_ascii_case("never") {
        return Ok(Expiry(None));
    }
    let period = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if period.is_zero() {
        return Err("use `never` to disable expiry".into());
    }
    Ok(Expiry(Some(period)))
}

fn parse_origins(text: &str) -> Result<CorsOrigins, String> {
    if text.trim() == "*" {
        return Ok(CorsOrigins::Any);
    }
    let origins: Vec<String> = text
        .split(',')
        .map(|origin| origin.trim().trim_end_matches('/').to_owned())
        .filter(|origin| !origin.is_empty())
        .collect();
    if let Some(bad) = origins
        .iter()
        .find(|origin| !(origin.starts_with("http://") || origin.starts_with("https://")))
    {
        return Err(format!("{bad:?} is not an origin like https://example.com"));
    }
    Ok(CorsOrigins::List(origins))
}

/// A size limit, or none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxSize(Option<u64>);

fn parse_max_size(text: &str) -> Result<MaxSize, String> {
    if text.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(MaxSize(None));
    }
    crate::options::parse_size(text).map(|bytes| MaxSize(Some(bytes)))
}

/// A duration that is not zero.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if timeout.is_zero() {
        return Err("must be longer than 0s".into());
    }
    Ok(timeout)
}

/// The certificate and key of `--tls-cert` / `--tls-key`, if both are given.
fn tls(args: &ServeArgs) -> anyhow::Result<Option<Arc<Tls>>> {
    match (&args.tls_cert, &args.tls_key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            let tls = Tls::load(cert, key).map_err(anyhow::Error::msg)?;
            Ok(Some(Arc::new(tls)))
        }
        (Some(_), None) => Err(Usage(
            "--tls-cert needs --tls-key (RESUMABLE_TLS_KEY): give both or neither".into(),
        )
        .into()),
        (None, Some(_)) => Err(Usage(
            "--tls-key needs --tls-cert (RESUMABLE_TLS_CERT): give both or neither".into(),
        )
        .into()),
    }
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let tls = tls(&args)?;
    let auth = Arc::new(args.auth.authenticator()?);
    let clock = Arc::new(SystemClock);
    let store = FileStore::open(FileStoreConfig {
        root: args.data_dir.clone(),
        lock_timeout: args.lock_timeout,
        clock: clock.clone(),
        direct_io: !args.no_direct_io,
    })
    .await
    .with_context(|| format!("cannot use data directory {}", args.data_dir.display()))?;
    let config = ServiceConfig {
        max_size: args.max_size.0,
        body_idle_timeout: args.body_timeout,
        expire_after: args.expire_after.0,
        quota_bytes: args.quota_bytes,
        quota_uploads: args.quota_uploads,
    };
    let hooks = args.hooks.hooks(&args.data_dir, clock.clone()).await?;
    let mut service = UploadService::new(
        Arc::new(store),
        Arc::new(MemoryLocker::new(args.lock_timeout)),
        clock,
        config,
    );
    if let Some(hooks) = &hooks {
        service = service.with_hooks(hooks.clone());
    }
    let service = Arc::new(service);
    let delivery = hooks.map(|hooks| crate::hooks::start(hooks, service.clone()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let server_config = ServerConfig {
        cors_origins: args.cors_origins,
        behind_proxy: args.behind_proxy,
        head_timeout: args.head_timeout,
        auth: auth.clone(),
        tls: tls.clone(),
        http2: Http2Config {
            max_concurrent_streams: args.http2_max_streams,
            idle_timeout: args.http2_idle_timeout,
            ..Http2Config::default()
        },
    };
    // One line on stdout, for people and for scripts that start us on port 0.
    let mut stdout = std::io::stdout();
    let scheme = server_config.scheme();
    writeln!(stdout, "resumable listening on {scheme}://{address}")?;
    stdout.flush()?;
    tracing::info!(%address, data_dir = %args.data_dir.display(), auth = auth.mode(), "serving uploads");
    if let Some(tls) = &tls {
        tracing::info!(
            certificate = %tls.cert_path().display(),
            sha256 = %tls.fingerprint(),
            "TLS: HTTP/2 and HTTP/1.1 by ALPN"
        );
    }
    if let Auth::None = *auth {
        tracing::warn!(
            "--auth none: uploads are open to anyone who can reach the server (see --auth)"
        );
    }
    reload_on_hangup(auth, tls);
    let served = resumable_server::run(listener, service, server_config, shutdown_signal()).await;
    if let Some(delivery) = delivery {
        delivery.stop().await;
    }
    served?;
    Ok(())
}

/// Re-reads the authentication's files (the tokens file) and the TLS certificate and key on
/// SIGHUP. What fails to load is logged and the previous one kept.
fn reload_on_hangup(auth: Arc<Auth>, tls: Option<Arc<Tls>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!(
                "cannot watch SIGHUP: the TLS certificate is never re-read; the tokens file still is when it changes"
            );
            return;
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if let Err(error) = auth.reload() {
                    tracing::error!(%error, "reload on SIGHUP failed; keeping the previous tokens");
                }
                let Some(tls) = &tls else { continue };
                match tls.reload() {
                    Ok(()) => tracing::info!(
                        certificate = %tls.cert_path().display(),
                        sha256 = %tls.fingerprint(),
                        "TLS certificate reloaded on SIGHUP: new connections get it"
                    ),
                    Err(error) => tracing::error!(
                        %error,
                        sha256 = %tls.fingerprint(),
                        "TLS reload on SIGHUP failed; keeping the previous certificate"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop((auth, tls));
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_sizes_take_units_or_unlimited() {
        assert_eq!(parse_max_size("5000").unwrap().0, Some(5000));
        assert_eq!(parse_max_size("512MiB").unwrap().0, Some(512 << 20));
        assert_eq!(parse_max_size("2GB").unwrap().0, Some(2_000_000_000));
        assert_eq!(parse_max_size("1TiB").unwrap().0, Some(1 << 40));
        assert_eq!(parse_max_size("unlimited").unwrap().0, None);
        assert!(parse_max_size("1e3").is_err());
        assert!(parse_max_size("-1").is_err());
        assert!(parse_max_size("99999999999TiB").is_err());
        assert!(parse_max_size("5 parsecs").is_err());
    }

    #[test]
    fn expiry_is_a_duration_or_never() {
        assert_eq!(
            parse_expiry("24h").unwrap().0,
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_expiry("never").unwrap().0, None);
        assert!(parse_expiry("0s").is_err());
        assert!(parse_expiry("soon").is_err());
    }

    #[test]
    fn origins_are_any_or_a_list() {
        assert_eq!(parse_origins("*").unwrap(), CorsOrigins::Any);
        assert_eq!(
            parse_origins("https://a.example/, http://b.example:8080").unwrap(),
            CorsOrigins::List(vec![
                "https://a.example".into(),
                "http://b.example:8080".into()
            ])
        );
        assert_eq!(parse_origins("").unwrap(), CorsOrigins::List(Vec::new()));
        assert!(parse_origins("example.com").is_err());
    }
}
