//! `resumable serve`.

use crate::Usage;
use anyhow::Context;
use clap::Args;
use resumable_core::{MinRate, ServiceConfig, SystemClock, UploadService};
use resumable_server::auth::{
    Auth, ForwardAuth, ForwardSettings, JwtAuth, JwtKeySource, JwtSettings, TokensAuth,
};
use resumable_server::ready::{Checks, DirWritable, FreeSpace, MinFreeSpace};
use resumable_server::tls::Tls;
use resumable_server::{
    ConnectionLimits, CorsOrigins, Http2Config, MAX_HEADER_SIZE_LIMIT, Metrics, MetricsExport,
    PublicUrl, ServerConfig,
};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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

    /// The base of every upload URL (`Location`), e.g. `https://uploads.example.com/base`,
    /// instead of the request's `Host` (wins over --behind-proxy). A path is a prefix a proxy
    /// adds in front of the server's paths and strips before passing requests on.
    #[arg(long, env = "RESUMABLE_PUBLIC_URL", value_name = "URL", value_parser = parse_public_url)]
    public_url: Option<PublicUrl>,

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
    storage: crate::storage::StorageArgs,

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

    /// How logs are written on stderr: `text` for people, `json` (one object per line) for log
    /// pipelines. RESUMABLE_LOG picks what is logged (e.g. `debug`, or `info,resumable::request=warn`
    /// without the line per request).
    #[arg(long, env = "RESUMABLE_LOG_FORMAT", value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,

    /// A TOML file of settings, each key a flag's name without the dashes (`max-size = "1MiB"`,
    /// `behind-proxy = true`); flags and RESUMABLE_* variables take precedence over it.
    #[arg(long, env = "RESUMABLE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Print the effective configuration as TOML (every setting, its value and where it came
    /// from; secrets masked) and exit.
    #[arg(long)]
    print_config: bool,

    /// Serve the Prometheus metrics (`/metrics`) on this address instead of the main listener,
    /// e.g. 127.0.0.1:9100 (port 0 picks one; it is printed on stdout after the main
    /// address). The main listener then has no /metrics. Without it, /metrics is on the main
    /// listener, without authentication like /healthz: prefer a private address here.
    #[arg(long, env = "RESUMABLE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,

    /// /readyz answers 503 when the data directory's file system has less free space than
    /// this: bytes, a size such as 1GiB or 500MB, or a percentage of its size such as 5%.
    #[arg(long, env = "RESUMABLE_MIN_FREE_SPACE", default_value = "1GiB", value_parser = parse_min_free_space)]
    min_free_space: MinFreeSpace,

    #[command(flatten)]
    limits: LimitArgs,
}

/// Limits that protect the server from too many or too demanding clients.
#[derive(Args, Debug)]
struct LimitArgs {
    /// Open connections in all (0: no limit). Past it, a new connection is closed as soon as
    /// it is accepted (the client sees it closed or reset and retries later); each refusal is
    /// logged at debug level, and a count as a warning at most every 10 s. Each connection
    /// takes a file descriptor (two more while its upload writes): at start-up the open-file
    /// limit (RLIMIT_NOFILE) is raised to fit, up to its hard limit, with a warning if it
    /// cannot be.
    #[arg(long, env = "RESUMABLE_MAX_CONNECTIONS", default_value = "10000")]
    max_connections: usize,

    /// Open connections per client address, IPv6 per /64 (0: no limit). Past it, the client's
    /// next connection is closed as soon as it is accepted. Not applied with --behind-proxy:
    /// there every connection is the proxy's, shared by its clients (limit them at the proxy).
    #[arg(
        long,
        env = "RESUMABLE_MAX_CONNECTIONS_PER_CLIENT",
        default_value = "256"
    )]
    max_connections_per_client: usize,

    /// Largest request head: the request line and header fields (on HTTP/2, the header list),
    /// from 1KiB to 256KiB. Past it, the answer is 431 Request Header Fields Too Large and the
    /// connection is closed.
    #[arg(long, env = "RESUMABLE_MAX_HEADER_SIZE", default_value = "32KiB", value_parser = parse_header_size)]
    max_header_size: usize,

    /// Slowest an upload body may arrive, in bytes per second (`1KiB`, `500`; 0: no
    /// minimum), measured over each --min-body-rate-window from the body's start, so the first
    /// window is a grace period. A body below it is cut, every byte that arrived stored, and
    /// answered like a stalled one: 408 with Upload-Offset (the client resumes from there).
    #[arg(long, env = "RESUMABLE_MIN_BODY_RATE", default_value = "1KiB", value_parser = crate::options::parse_size)]
    min_body_rate: u64,

    /// The window --min-body-rate is measured over.
    #[arg(long, env = "RESUMABLE_MIN_BODY_RATE_WINDOW", default_value = "30s", value_parser = parse_window)]
    min_body_rate_window: Duration,

    /// Largest metadata a new upload may have, in bytes of its tus Upload-Metadata encoding
    /// (an IETF draft upload's file name and type count as tus's `filename` and `filetype`), at
    /// most 16KiB. Past it, creation is refused with 431 and a message naming the limit;
    /// nothing is created.
    #[arg(long, env = "RESUMABLE_MAX_METADATA_SIZE", default_value = "4KiB", value_parser = parse_metadata_size)]
    max_metadata_size: usize,

    /// New uploads each client may create per minute, in bursts of up to as many (0: no
    /// limit). A client is its owner with --auth, else its address (IPv6 per /64; with
    /// --behind-proxy the one the proxy forwards). Past it, creation is refused with 429 Too
    /// Many Requests and Retry-After; nothing is created.
    #[arg(
        long,
        env = "RESUMABLE_MAX_CREATIONS_PER_MINUTE",
        default_value = "120"
    )]
    max_creations_per_minute: u32,
}

impl LimitArgs {
    fn connection_limits(&self) -> ConnectionLimits {
        let limit = |value: usize| (value > 0).then_some(value);
        ConnectionLimits {
            max_connections: limit(self.max_connections),
            max_per_client: limit(self.max_connections_per_client),
        }
    }

    fn min_body_rate(&self) -> Option<MinRate> {
        (self.min_body_rate > 0).then_some(MinRate {
            bytes_per_second: self.min_body_rate,
            window: self.min_body_rate_window,
        })
    }
}

fn parse_header_size(text: &str) -> Result<usize, String> {
    let size = crate::options::parse_size(text)?;
    if !(1024..=MAX_HEADER_SIZE_LIMIT as u64).contains(&size) {
        return Err(format!(
            "must be from 1KiB to {}KiB",
            MAX_HEADER_SIZE_LIMIT / 1024
        ));
    }
    Ok(size as usize)
}

fn parse_metadata_size(text: &str) -> Result<usize, String> {
    let size = crate::options::parse_size(text)?;
    let most = resumable_proto::metadata::MAX_ENCODED_LEN;
    if size > most as u64 {
        return Err(format!("must be at most {}KiB", most / 1024));
    }
    Ok(size as usize)
}

fn parse_window(text: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if window < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(window)
}

pub(crate) fn parse_min_free_space(text: &str) -> Result<MinFreeSpace, String> {
    let text = text.trim();
    let Some(percent) = text.strip_suffix('%') else {
        return crate::options::parse_size(text).map(MinFreeSpace::Bytes);
    };
    match percent.trim().parse::<f64>() {
        Ok(percent) if (0.0..=100.0).contains(&percent) => Ok(MinFreeSpace::Percent(percent)),
        _ => Err(format!("{text:?} is not a percentage from 0% to 100%")),
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
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

pub(crate) fn parse_expiry(text: &str) -> Result<Expiry, String> {
    if text.trim().eq_ignore_ascii_case("never") {
        return Ok(Expiry(None));
    }
    let period = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if period.is_zero() {
        return Err("use `never` to disable expiry".into());
    }
    Ok(Expiry(Some(period)))
}

pub(crate) fn parse_origins(text: &str) -> Result<CorsOrigins, String> {
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

pub(crate) fn parse_public_url(text: &str) -> Result<PublicUrl, String> {
    PublicUrl::parse(text)
}

/// A size limit, or none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxSize(Option<u64>);

pub(crate) fn parse_max_size(text: &str) -> Result<MaxSize, String> {
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
    let connection_limits = args.limits.connection_limits();
    fit_open_files(connection_limits.max_connections);
    let clock = Arc::new(SystemClock);
    let storage = args
        .storage
        .open(
            &args.data_dir,
            args.lock_timeout,
            !args.no_direct_io,
            clock.clone(),
        )
        .await?;
    let config = ServiceConfig {
        max_size: args.max_size.0,
        body_idle_timeout: args.body_timeout,
        expire_after: args.expire_after.0,
        quota_bytes: args.quota_bytes,
        quota_uploads: args.quota_uploads,
        min_body_rate: args.limits.min_body_rate(),
        max_metadata_size: Some(args.limits.max_metadata_size),
        max_creations_per_minute: Some(args.limits.max_creations_per_minute)
            .filter(|per_minute| *per_minute > 0),
    };
    let metrics = Metrics::new();
    let hooks = args
        .hooks
        .hooks(&args.data_dir, clock.clone(), metrics.clone())
        .await?;
    let mut service = UploadService::new(
        metrics.measure_store(storage.store),
        metrics.measure_locker(storage.locker),
        clock,
        config,
    )
    .with_observer(metrics.clone());
    if let Some(hooks) = &hooks {
        service = service.with_hooks(hooks.clone());
    }
    let service = Arc::new(service);
    let delivery = hooks.map(|hooks| crate::hooks::start(hooks, service.clone()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let metrics_listener = match args.metrics_listen {
        Some(metrics_address) => Some(
            tokio::net::TcpListener::bind(metrics_address)
                .await
                .with_context(|| format!("cannot listen for metrics on {metrics_address}"))?,
        ),
        None => None,
    };
    // One line on stdout (two with --metrics-listen), for people and for scripts that start us
    // on port 0.
    let mut stdout = std::io::stdout();
    let scheme = if tls.is_some() { "https" } else { "http" };
    writeln!(stdout, "resumable listening on {scheme}://{address}")?;
    if let Some(metrics_listener) = &metrics_listener {
        let metrics_address = metrics_listener.local_addr()?;
        writeln!(
            stdout,
            "resumable metrics on http://{metrics_address}/metrics"
        )?;
    }
    stdout.flush()?;
    tracing::info!(
        %address,
        data_dir = %args.data_dir.display(),
        store = %storage.description,
        locks = if args.storage.redis.is_some() { "redis" } else { "in-process" },
        auth = auth.mode(),
        public_url = args.public_url.as_ref().map(ToString::to_string),
        "serving uploads"
    );
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
    reload_on_hangup(auth.clone(), tls.clone());
    let mut readiness = Checks::new()
        .with(DirWritable::new(&args.data_dir))
        .with(FreeSpace::new(&args.data_dir, args.min_free_space));
    if let Some(redis) = storage.redis_check {
        readiness = readiness.with(redis);
    }
    let stop_metrics = CancellationToken::new();
    let metrics_server = metrics_listener.map(|metrics_listener| {
        let stopped = stop_metrics.clone().cancelled_owned();
        tokio::spawn(resumable_server::run_metrics(
            metrics_listener,
            metrics.clone(),
            stopped,
        ))
    });
    let server_config = ServerConfig {
        cors_origins: args.cors_origins,
        behind_proxy: args.behind_proxy,
        public_url: args.public_url,
        head_timeout: args.head_timeout,
        auth,
        connection_limits,
        max_header_size: args.limits.max_header_size,
        metrics: match metrics_server {
            Some(_) => MetricsExport::Separate(metrics),
            None => MetricsExport::Main(metrics),
        },
        readiness,
        tls,
        http2: Http2Config {
            max_concurrent_streams: args.http2_max_streams,
            idle_timeout: args.http2_idle_timeout,
            ..Http2Config::default()
        },
    };
    let served = resumable_server::run(listener, service, server_config, shutdown_signal()).await;
    // Metrics are served until the uploads in flight have answered.
    stop_metrics.cancel();
    if let Some(metrics_server) = metrics_server {
        match metrics_server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the metrics listener failed"),
            Err(error) => tracing::warn!(%error, "the metrics listener panicked"),
        }
    }
    if let Some(delivery) = delivery {
        delivery.stop().await;
    }
    served?;
    Ok(())
}

/// Descriptors the server needs beside one per connection: the listener, logs, the data
/// directory, hook deliveries, and the files uploads write (each append opens its file, and
/// O_DIRECT a second descriptor, only while it writes; blocking writes run on at most 512
/// threads).
const SPARE_FILES: u64 = 1024 + 2 * 512;

/// Raises the soft open-file limit (RLIMIT_NOFILE) so that `max_connections` fit, up to the
/// hard limit; warns when even that is short (connections past it would fail to be accepted,
/// or uploads to open their files, instead of being refused cleanly).
fn fit_open_files(max_connections: Option<usize>) {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let needed = match max_connections {
            Some(max) => max as u64 + SPARE_FILES,
            // No limit: as many as the hard limit allows.
            None => u64::MAX,
        };
        let limit = getrlimit(Resource::Nofile);
        let (soft, hard) = (
            limit.current.unwrap_or(u64::MAX),
            limit.maximum.unwrap_or(u64::MAX),
        );
        if soft >= needed {
            return;
        }
        let wanted = needed.min(hard);
        let raised = if wanted > soft {
            let new = Rlimit {
                current: Some(wanted),
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, new) {
                Ok(()) => {
                    tracing::debug!(from = soft, to = wanted, "raised the open-file limit");
                    wanted
                }
                Err(error) => {
                    tracing::debug!(%error, "could not raise the open-file limit");
                    soft
                }
            }
        } else {
            soft
        };
        if raised < needed && max_connections.is_some() {
            tracing::warn!(
                open_file_limit = raised,
                needed,
                "the open-file limit (ulimit -n) is below what --max-connections needs: \
                 raise it, or lower --max-connections to about {}",
                raised.saturating_sub(SPARE_FILES).max(raised / 2)
            );
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
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
    fn limits_have_bounds() {
        assert_eq!(parse_header_size("32KiB").unwrap(), 32 * 1024);
        assert!(parse_header_size("512").is_err());
        assert!(parse_header_size("1MiB").is_err());
        assert_eq!(parse_metadata_size("4KiB").unwrap(), 4096);
        assert!(parse_metadata_size("17KiB").is_err());
        assert!(parse_window("0s").is_err());
        assert_eq!(parse_window("30s").unwrap(), Duration::from_secs(30));
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
    fn free_space_minimums_are_sizes_or_percentages() {
        assert_eq!(
            parse_min_free_space("1GiB").unwrap(),
            MinFreeSpace::Bytes(1 << 30)
        );
        assert_eq!(
            parse_min_free_space("5%").unwrap(),
            MinFreeSpace::Percent(5.0)
        );
        assert_eq!(parse_min_free_space("0").unwrap(), MinFreeSpace::Bytes(0));
        assert!(parse_min_free_space("101%").is_err());
        assert!(parse_min_free_space("lots").is_err());
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
