//! `resumable status`, `resumable download` and `resumable delete`: one existing upload.

use crate::options::HttpArgs;
use crate::report::seconds;
use crate::{Outcome, Usage};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use resumable_client::{Client, DownloadEvent, Url};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `resumable status`.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// The upload URL (as `resumable upload` printed it).
    url: Url,

    /// Print a JSON object instead of lines.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    http: HttpArgs,
}

#[derive(Serialize)]
struct StatusReport<'a> {
    url: &'a str,
    offset: u64,
    length: Option<u64>,
    complete: bool,
    filename: Option<&'a str>,
}

pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(args.http.client_config()?)?;
    let status = client.status(&args.url).await?;
    let report = StatusReport {
        url: args.url.as_str(),
        offset: status.offset,
        length: status.length,
        complete: status.is_complete(),
        filename: status.metadata.filename(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(Outcome::Success);
    }
    println!("url: {}", report.url);
    if let Some(filename) = report.filename {
        println!("filename: {filename}");
    }
    println!("offset: {}", report.offset);
    match report.length {
        Some(length) => println!("length: {length}"),
        None => println!("length: deferred"),
    }
    println!("complete: {}", if report.complete { "yes" } else { "no" });
    Ok(Outcome::Success)
}

/// Flags of `resumable delete`.
#[derive(Args, Debug)]
pub(crate) struct DeleteArgs {
    /// The upload URL.
    url: Url,

    #[command(flatten)]
    http: HttpArgs,
}

pub(crate) async fn delete(args: DeleteArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(args.http.client_config()?)?;
    client.terminate(&args.url).await?;
    println!("deleted {}", args.url);
    Ok(Outcome::Success)
}

/// Flags of `resumable download`.
#[derive(Args, Debug)]
pub(crate) struct DownloadArgs {
    /// The upload URL (it must be complete).
    url: Url,

    /// Where to write: a file, or a directory to put the upload's file name in (default: the
    /// current directory). A partial download is kept in OUTPUT.part and resumed by the next run.
    #[arg(long, short = 'o', value_name = "OUTPUT")]
    output: Option<PathBuf>,

    /// Overwrite OUTPUT if it exists.
    #[arg(long)]
    force: bool,

    #[command(flatten)]
    http: HttpArgs,
}

pub(crate) async fn download(args: DownloadArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(args.http.client_config()?)?;
    let output = match args.output {
        Some(dir) if dir.is_dir() => dir.join(client.suggested_file_name(&args.url).await?),
        Some(output) => output,
        None => PathBuf::from(client.suggested_file_name(&args.url).await?),
    };
    if output.exists() && !args.force {
        let message = format!("{} exists; pass --force to overwrite it", output.display());
        return Err(Usage(message).into());
    }
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        if let Ok(style) = ProgressStyle::with_template(
            "[{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta:>4}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let started = Instant::now();
    let show = |event: &DownloadEvent| show_download(bar.as_ref(), event);
    let result = client.download(&args.url, &output, &show).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let outcome = result?;
    println!(
        "saved {} ({} bytes) in {}",
        outcome.path.display(),
        outcome.length,
        seconds(started.elapsed())
    );
    Ok(Outcome::Success)
}

fn show_download(bar: Option<&ProgressBar>, event: &DownloadEvent) {
    match (event, bar) {
        (DownloadEvent::Progress { received, total }, Some(bar)) => {
            if let Some(total) = total {
                bar.set_length(*total);
            }
            bar.set_position(*received);
        }
        (DownloadEvent::Progress { .. }, None) => {}
        (DownloadEvent::Resumed { offset }, _) => {
            print_line(bar, &format!("resuming the download at {offset} bytes"));
        }
        (DownloadEvent::Retrying { error, delay }, _) => {
            print_line(bar, &format!("retrying in {}: {error}", seconds(*delay)));
        }
    }
}

fn print_line(bar: Option<&ProgressBar>, line: &str) {
    match bar {
        Some(bar) => bar.println(line),
        None => println!("{line}"),
    }
}
