//! `resumable-bench`: the load generator of `bench/run.sh`. Each subcommand prints one JSON line
//! per result on stdout.

use clap::{Parser, Subcommand};
use resumable_bench::body::Pattern;
use resumable_bench::scenario::{self, IdlePlan, UploadPlan};
use resumable_bench::tus::Endpoint;
use resumable_bench::{ByteSize, discard, s3};
use resumable_testkit::sigv4::Signer;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Benchmark client for tus servers (plain tus over one keep-alive connection per upload) and
/// for S3 stores (multipart, parts in parallel).
#[derive(Parser)]
#[command(name = "resumable-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Uploads: create, PATCH chunk after chunk, HEAD; several at once.
    Upload {
        /// The tus creation URL, http://IP:PORT/PATH.
        #[arg(long)]
        endpoint: String,
        /// Speak HTTP/2 with prior knowledge (cleartext h2c) instead of HTTP/1.1.
        #[arg(long)]
        http2: bool,
        #[command(flatten)]
        shape: UploadShape,
    },
    /// The S3 limit: objects sent straight to an S3 endpoint with multipart uploads, parts in
    /// parallel (a `PutObject` each when an object fits in one part).
    S3Direct {
        /// The S3 endpoint, http://IP:PORT (path-style buckets).
        #[arg(long)]
        endpoint: String,
        /// The bucket; objects are `PREFIX0`, `PREFIX1`, …
        #[arg(long)]
        bucket: String,
        /// The region requests are signed for.
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// The access key's id.
        #[arg(long, env = "AWS_ACCESS_KEY_ID")]
        access_key_id: String,
        /// The access key's secret.
        #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
        secret_access_key: String,
        /// Bytes per object.
        #[arg(long)]
        size: ByteSize,
        /// How many objects.
        #[arg(long, default_value_t = 1)]
        uploads: usize,
        /// Bytes per part (at least 5MiB, S3's minimum).
        #[arg(long, default_value = "16MiB")]
        part_size: ByteSize,
        /// Parts in flight at once over all objects, one connection each.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Prepended to each object's number to make its key.
        #[arg(long, default_value = "direct/")]
        prefix: String,
        /// Sign each part's bytes (a SHA-256 of them in the signature, which the store checks)
        /// instead of sending them as `UNSIGNED-PAYLOAD`.
        #[arg(long)]
        signed_payload: bool,
        /// Longest the whole run may take.
        #[arg(long, default_value = "300s")]
        deadline: humantime::Duration,
    },
    /// The loopback limit: the same uploads to a listener of its own that discards bodies.
    Discard {
        #[command(flatten)]
        shape: UploadShape,
    },
    /// Holds connections open mid-PATCH. Prints a "holding" line once they are set up, waits for
    /// a line on stdin (or --hold), uploads a probe file while they are held, prints a "probe"
    /// line, then drops every connection.
    Idle {
        /// The tus creation URL, http://IP:PORT/PATH.
        #[arg(long)]
        endpoint: String,
        /// How many connections to hold.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// How many are being set up at once.
        #[arg(long, default_value_t = 256)]
        setup_concurrency: usize,
        /// Longest the setup may take.
        #[arg(long, default_value = "120s")]
        setup_deadline: humantime::Duration,
        /// Longest to hold before probing if stdin says nothing.
        #[arg(long, default_value = "60s")]
        hold: humantime::Duration,
        /// Size of the upload sent while the connections are held.
        #[arg(long, default_value = "1MiB")]
        probe_size: ByteSize,
    },
    /// HEAD requests per second: each connection creates an upload then HEADs it back to back.
    Heads {
        /// The tus creation URL, http://IP:PORT/PATH.
        #[arg(long)]
        endpoint: String,
        /// Connections, each with its own upload.
        #[arg(long, default_value_t = 20)]
        connections: usize,
        /// How long to send HEADs.
        #[arg(long, default_value = "5s")]
        duration: humantime::Duration,
    },
}

#[derive(clap::Args)]
struct UploadShape {
    /// Bytes per upload.
    #[arg(long)]
    size: ByteSize,
    /// Bytes per PATCH (default: the whole upload in one).
    #[arg(long)]
    chunk: Option<ByteSize>,
    /// How many uploads.
    #[arg(long, default_value_t = 1)]
    uploads: usize,
    /// How many at once (default: all of them).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Longest the whole run may take.
    #[arg(long, default_value = "300s")]
    deadline: humantime::Duration,
}

impl UploadShape {
    fn plan(&self) -> UploadPlan {
        UploadPlan {
            size: self.size.0,
            chunk: self.chunk.unwrap_or(self.size).0,
            uploads: self.uploads,
            concurrency: self.concurrency.unwrap_or(self.uploads),
            deadline: self.deadline.into(),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pattern = Pattern::new();
    match cli.command {
        Command::Upload {
            endpoint,
            http2,
            shape,
        } => {
            let mut endpoint = Endpoint::parse(&endpoint)?;
            if http2 {
                endpoint = endpoint.http2();
            }
            print(&scenario::upload_many(&endpoint, &pattern, shape.plan()).await);
        }
        Command::S3Direct {
            endpoint,
            bucket,
            region,
            access_key_id,
            secret_access_key,
            size,
            uploads,
            part_size,
            connections,
            prefix,
            signed_payload,
            deadline,
        } => {
            if part_size.0 < s3::MIN_PART_SIZE {
                anyhow::bail!("--part-size must be at least 5MiB (S3 refuses smaller parts)");
            }
            let bucket = s3::Bucket {
                endpoint: Endpoint::parse(&endpoint)?,
                name: bucket,
                signer: Signer::new(&access_key_id, &secret_access_key, &region),
            };
            let plan = s3::DirectPlan {
                size: size.0,
                objects: uploads,
                part_size: part_size.0,
                connections,
                prefix,
                deadline: deadline.into(),
                sign_payloads: signed_payload,
            };
            print(&s3::upload_direct(&bucket, &pattern, plan).await);
        }
        Command::Discard { shape } => {
            let (address, listener) = discard::start().await?;
            let endpoint = Endpoint::parse(&format!("http://{address}/discard"))?;
            print(&scenario::upload_many(&endpoint, &pattern, shape.plan()).await);
            listener.abort();
        }
        Command::Idle {
            endpoint,
            connections,
            setup_concurrency,
            setup_deadline,
            hold,
            probe_size,
        } => {
            let endpoint = Endpoint::parse(&endpoint)?;
            let plan = IdlePlan {
                connections,
                setup_concurrency,
                upload_length: probe_size.0.max(1 << 20),
                head_bytes: 16,
                deadline: setup_deadline.into(),
            };
            let probe = async {
                // The orchestrator measures the server while we wait here.
                let (mut stdin, mut line) = (BufReader::new(tokio::io::stdin()), String::new());
                let _ = tokio::time::timeout(hold.into(), stdin.read_line(&mut line)).await;
                probe_upload(&endpoint, &pattern, probe_size.0).await
            };
            let on_holding = |report: scenario::HoldingReport| {
                print(&Phase {
                    phase: "holding",
                    report,
                })
            };
            let (probe, counts) =
                scenario::hold_idle(&endpoint, &pattern, plan, on_holding, probe).await;
            let still_holding = counts.holding.load(Ordering::Relaxed);
            print(&Phase {
                phase: "probe",
                report: ProbeReport {
                    still_holding,
                    answered_while_held: counts.answered.load(Ordering::Relaxed),
                    first_answer: counts.first_answer.lock().expect("not poisoned").clone(),
                    ..probe
                },
            });
        }
        Command::Heads {
            endpoint,
            connections,
            duration,
        } => {
            let endpoint = Endpoint::parse(&endpoint)?;
            print(&scenario::heads(&endpoint, connections, duration.into()).await);
        }
    }
    Ok(())
}

/// One line of the idle subcommand's output.
#[derive(Serialize)]
struct Phase<T> {
    phase: &'static str,
    #[serde(flatten)]
    report: T,
}

/// The upload made while connections are held.
#[derive(Serialize)]
struct ProbeReport {
    probe_ok: bool,
    probe_seconds: f64,
    probe_error: Option<String>,
    still_holding: usize,
    answered_while_held: usize,
    /// What the first held request that ended got (see `IdleCounts::first_answer`).
    first_answer: Option<String>,
}

async fn probe_upload(endpoint: &Endpoint, pattern: &Pattern, size: u64) -> ProbeReport {
    let started = Instant::now();
    let acknowledged = AtomicU64::new(0);
    let upload = scenario::upload_one(endpoint, pattern, size, size, &acknowledged);
    let outcome = tokio::time::timeout(Duration::from_secs(60), upload).await;
    let probe_error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some("the probe upload took over 60 s".into()),
    };
    ProbeReport {
        probe_ok: probe_error.is_none(),
        probe_seconds: started.elapsed().as_secs_f64(),
        probe_error,
        still_holding: 0,
        answered_while_held: 0,
        first_answer: None,
    }
}

fn print(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("reports serialize")
    );
}
