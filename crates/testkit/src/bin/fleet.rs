//! `resumable-fleet [SERVE-FLAGS…]`: Garage, Redis, two `resumable serve` nodes on them
//! (`$RESUMABLE_BIN`, each with SERVE-FLAGS added) and nginx's round robin in front, for tests
//! in other languages (tests/e2e) and for trying a fleet by hand.
//!
//! Once everything answers it prints one JSON line on stdout:
//! `{"url": "http://127.0.0.1:PORT", "nodes": [{"url": …, "log": …}, …], "nginx_access_log": …,
//! "redis": …, "s3_endpoint": …, "store": …}`. It stops everything, and exits, when its stdin
//! closes or on SIGTERM or SIGINT.

use resumable_testkit::fleet::Fleet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

const NODES: usize = 2;

fn main() -> ExitCode {
    let Some(binary) = std::env::var_os("RESUMABLE_BIN").map(PathBuf::from) else {
        eprintln!(
            "resumable-fleet: RESUMABLE_BIN is not set; point it at the resumable binary, e.g. \
             RESUMABLE_BIN=target/release/resumable resumable-fleet"
        );
        return ExitCode::from(2);
    };
    let extra: Vec<String> = std::env::args().skip(1).collect();
    let fleet = match Fleet::start(&binary, NODES, &extra) {
        Ok(fleet) => fleet,
        Err(error) => {
            eprintln!("resumable-fleet: {error}");
            return ExitCode::FAILURE;
        }
    };
    let nodes: Vec<serde_json::Value> = fleet
        .nodes()
        .iter()
        .map(|node| serde_json::json!({"url": node.url(), "log": node.log()}))
        .collect();
    let line = serde_json::json!({
        "url": fleet.nginx().url(),
        "nodes": nodes,
        "nginx_access_log": fleet.nginx().access_log(),
        "redis": fleet.redis().url(),
        "s3_endpoint": fleet.garage().endpoint(),
        "store": fleet.store_url(),
    });
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("resumable-fleet: {error}");
            return ExitCode::FAILURE;
        }
    };
    let waited = runtime.block_on(until_told_to_stop());
    // Not dropped: that would wait for the stdin reader, which may be blocked in read(2) for
    // good (a signal came, stdin is still open).
    runtime.shutdown_background();
    drop(fleet);
    match waited {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("resumable-fleet: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Returns when stdin reaches its end (or fails), or on SIGTERM or SIGINT.
async fn until_told_to_stop() -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let stdin = async {
        let mut input = tokio::io::stdin();
        let mut buffer = [0; 1024];
        while let Ok(read) = input.read(&mut buffer).await {
            if read == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
        () = stdin => {}
    }
    Ok(())
}
