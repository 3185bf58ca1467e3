//! `resumable`: the resumable file-upload server and its command-line client.
//!
//! Thin on purpose: `serve` wires the server crates together; the client subcommands parse flags
//! and show progress, and leave the protocols, retries and resume state to `resumable-client`.

mod config;
mod hooks;
mod options;
mod remote;
mod report;
mod serve;
mod storage;
mod upload;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;

/// Resumable file uploads: a server that never loses a byte it acknowledged, and a client that
/// finishes whatever happens.
#[derive(Parser)]
#[command(name = "resumable", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the upload server (the seed's simple protocol on /status and /upload, tus 1.0.0 on
    /// /files/).
    Serve(Box<serve::ServeArgs>),
    /// Upload files, resuming across failures and runs: rerun the same command after Ctrl-C,
    /// a crash or a reboot and it continues where the server stands. Exit codes: 0 every upload
    /// finished, 1 some failed, 2 usage, 130 interrupted.
    Upload(upload::UploadArgs),
    /// Show where a tus upload stands: offset, length, complete.
    Status(remote::StatusArgs),
    /// Download a completed upload, resuming a partial download.
    Download(remote::DownloadArgs),
    /// Delete an upload (tus termination).
    Delete(remote::DeleteArgs),
}

/// How a subcommand ended, as an exit code.
pub(crate) enum Outcome {
    /// 0.
    Success,
    /// 1: some work failed (the reasons were printed).
    Failed,
    /// 128 + the signal number: stopped by SIGINT (130) or SIGTERM (143).
    Interrupted(Signal),
}

/// The signals that stop the client cleanly.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Signal {
    Interrupt,
    Terminate,
}

/// A command-line mistake: exit code 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Usage(pub(crate) String);

fn main() -> ExitCode {
    let resolved = match config::resolve(Cli::command(), std::env::args_os()) {
        Ok(resolved) => resolved,
        Err(config::Error::Clap(error)) => error.exit(),
        Err(config::Error::Config(message)) => {
            eprintln!("resumable: {message}");
            return ExitCode::from(2);
        }
    };
    if let Some(printed) = resolved.printed {
        print!("{printed}");
        return ExitCode::SUCCESS;
    }
    let cli = Cli::from_arg_matches(&resolved.matches).unwrap_or_else(|error| error.exit());
    init_logs(&cli.command);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("resumable: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Ok(Outcome::Interrupted(Signal::Interrupt)) => ExitCode::from(130),
        Ok(Outcome::Interrupted(Signal::Terminate)) => ExitCode::from(143),
        Err(error) => {
            eprintln!("resumable: {error:#}");
            if error.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Logs on stderr: the server logs its work (`--log-format` text or JSON); the client logs only
/// trouble (its output is the progress). `RESUMABLE_LOG` overrides the filter.
fn init_logs(command: &Command) {
    let (default_filter, format) = match command {
        Command::Serve(args) => ("info", args.log_format),
        _ => ("warn", serve::LogFormat::Text),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RESUMABLE_LOG")
        .unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        // Colours only for a terminal: a journal or a log file gets plain text.
        serve::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        serve::LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Serve(args) => serve::serve(*args).await.map(|()| Outcome::Success),
        Command::Upload(args) => upload::upload(args).await,
        Command::Status(args) => remote::status(args).await,
        Command::Download(args) => remote::download(args).await,
        Command::Delete(args) => remote::delete(args).await,
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub(crate) async fn interrupt() -> Signal {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            return tokio::select! {
                signal = interrupt => signal,
                _ = terminate.recv() => Signal::Terminate,
            };
        }
    }
    interrupt.await
}

/// This process's command line, quoted for a POSIX shell, to tell how to run it again; a
/// `--token` and credential `--header` values are replaced by placeholders (the line is printed).
pub(crate) fn command_line() -> String {
    let arguments = std::env::args_os().map(|argument| argument.to_string_lossy().into_owned());
    redact(arguments).join(" ")
}

/// Quotes each argument for a POSIX shell, hiding credentials.
fn redact(arguments: impl IntoIterator<Item = String>) -> Vec<String> {
    let quote = |argument: String| {
        let plain = !argument.is_empty()
            && argument
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&byte));
        if plain {
            argument
        } else {
            format!("'{}'", argument.replace('\'', r"'\''"))
        }
    };
    // A header is hidden from its colon on when its name is a credential's.
    let header = |value: &str| match value.split_once(':') {
        Some((name, _)) if !options::is_credential(name) => quote(value.to_owned()),
        Some((name, _)) => quote(format!("{name}: ...")),
        None => "'...'".to_owned(),
    };
    let mut shown = Vec::new();
    let mut arguments = arguments.into_iter();
    let mut options_ended = false;
    while let Some(argument) = arguments.next() {
        if options_ended {
            shown.push(quote(argument));
            continue;
        }
        if argument == "--" {
            options_ended = true;
            shown.push(argument);
        } else if argument == "--token" {
            shown.push(argument);
            if arguments.next().is_some() {
                shown.push("\"$RESUMABLE_TOKEN\"".to_owned());
            }
        } else if argument.starts_with("--token=") {
            shown.push("--token=\"$RESUMABLE_TOKEN\"".to_owned());
        } else if argument == "--header" || argument == "-H" {
            shown.push(argument);
            if let Some(value) = arguments.next() {
                shown.push(header(&value));
            }
        } else if let Some(value) = argument.strip_prefix("--header=") {
            shown.push(format!("--header={}", header(value)));
        } else if let Some(value) = argument.strip_prefix("-H") {
            shown.push(format!("-H{}", header(value)));
        } else {
            shown.push(quote(argument));
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::redact;

    fn shown(arguments: &[&str]) -> String {
        redact(arguments.iter().map(|argument| (*argument).to_owned())).join(" ")
    }

    #[test]
    fn credentials_are_left_out_of_the_command_to_rerun() {
        assert_eq!(
            shown(&[
                "resumable",
                "upload",
                "a b.bin",
                "--token",
                "s3cret",
                "--to",
                "http://x/"
            ]),
            r#"resumable upload 'a b.bin' --token "$RESUMABLE_TOKEN" --to http://x/"#
        );
        assert_eq!(
            shown(&[
                "resumable",
                "--token=s3cret",
                "-H",
                "Authorization: Bearer s3cret"
            ]),
            r#"resumable --token="$RESUMABLE_TOKEN" -H 'Authorization: ...'"#
        );
        assert_eq!(
            shown(&[
                "resumable",
                "-HX-Api-Key: s3cret",
                "--header=Cookie: s=s3cret"
            ]),
            "resumable -H'X-Api-Key: ...' --header='Cookie: ...'"
        );
        assert_eq!(
            shown(&["resumable", "--header", "X-Tenant: blue", "-H", "s3cret"]),
            "resumable --header 'X-Tenant: blue' -H '...'"
        );
    }
}
