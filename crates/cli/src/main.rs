//! `resumable`: the resumable file-upload server (and, later, its command-line client).

mod serve;

use clap::{Parser, Subcommand};

/// Resumable file uploads: a server that never loses a byte it acknowledged.
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
    Serve(serve::ServeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RESUMABLE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli.command {
        Command::Serve(args) => serve::serve(args).await,
    }
}
