//! The client subcommands against `resumable serve --auth tokens`: `--token`, `RESUMABLE_TOKEN`
//! and `--header` carry the credentials on every request; a refusal fails at once with the
//! server's reason; another owner's upload is not found; and no token is ever printed.

mod common;
mod uploader;

use common::{Finished, Server, mentions, scratch, sha256_hex};
use std::path::Path;
use std::time::{Duration, Instant};
use uploader::{resumable, single_report, text, tus_endpoint, write_source};

/// Two tokens of one owner (as a refreshed token would be) and one of another.
const ALICE: &str = "alice-token-7f3a9c";
const ALICE_AGAIN: &str = "alice-token-refreshed-41d2";
const BOB: &str = "bob-token-c0ffee";
/// A token the server does not know.
const UNKNOWN: &str = "stale-token-0000";
const EVERY_TOKEN: [&str; 4] = [ALICE, ALICE_AGAIN, BOB, UNKNOWN];

/// Longer than any success takes here, far shorter than the client's default 5-minute retrying:
/// a refusal that was retried would hit it.
const DEADLINE: Duration = Duration::from_secs(20);
const SIZE: u64 = 300_000;

/// A server that knows the tokens above, and a source file in a scratch dir.
struct Setup {
    _scratch: tempfile::TempDir,
    server: Server,
    work: std::path::PathBuf,
    source_sha: String,
}

fn setup() -> Setup {
    let scratch = scratch();
    let work = scratch.path().to_owned();
    let tokens = work.join("tokens");
    let lines = format!("# token owner\n{ALICE} alice\n{ALICE_AGAIN} alice\n{BOB} bob\n");
    std::fs::write(&tokens, lines).expect("write the tokens file");
    let tokens = tokens.to_str().expect("UTF-8 path").to_owned();
    let server = Server::serve(
        &work.join("data"),
        &["--auth", "tokens", "--tokens-file", &tokens],
    );
    let source_sha = write_source(&work.join("file.bin"), SIZE, 0xA07);
    Setup {
        _scratch: scratch,
        server,
        work,
        source_sha,
    }
}

impl Setup {
    /// `resumable ARGS...` with `RESUMABLE_TOKEN` set to `env_token` when given; checks that no
    /// token shows in its output.
    fn run(&self, args: &[&str], env_token: Option<&str>) -> Finished {
        let mut command = resumable(&self.work, args);
        if let Some(token) = env_token {
            command.env("RESUMABLE_TOKEN", token);
        }
        let finished = common::run_to_exit(&mut command, &self.work, DEADLINE);
        for token in EVERY_TOKEN {
            for (stream, output) in [("stdout", &finished.stdout), ("stderr", &finished.stderr)] {
                assert!(
                    !output.contains(token),
                    "the token {token} shows on {stream} of {args:?}:\n{output}"
                );
            }
        }
        finished
    }

    /// Uploads file.bin with `credentials` (flags) or `env_token`; the upload URL.
    fn upload(&self, credentials: &[&str], env_token: Option<&str>) -> String {
        let endpoint = tus_endpoint(&self.server);
        let mut args = vec!["upload", "file.bin", "--to", &endpoint];
        args.extend(["--state-dir", "state", "--json", "--chunk-size", "64KiB"]);
        args.extend_from_slice(credentials);
        let finished = self.run(&args, env_token);
        assert!(finished.status.success(), "upload: {}", finished.stderr);
        let report = single_report(&finished);
        assert_eq!(text(&report, "status"), "done");
        text(&report, "url").to_owned()
    }

    /// Downloads `url` with `credentials` and checks the bytes are file.bin's.
    fn assert_downloads(&self, url: &str, credentials: &[&str], output: &str) {
        let mut args = vec!["download", url, "-o", output];
        args.extend_from_slice(credentials);
        let finished = self.run(&args, None);
        assert!(finished.status.success(), "download: {}", finished.stderr);
        let bytes = std::fs::read(self.work.join(output)).expect("read the download");
        assert_eq!(bytes.len() as u64, SIZE);
        assert_eq!(sha256_hex(&bytes), self.source_sha, "downloaded bytes");
    }
}

/// Asserts `finished` failed with exit 1 and `resumable`'s message for refused credentials.
fn assert_refused(finished: &Finished, what: &str) {
    assert_eq!(
        finished.status.code(),
        Some(1),
        "{what}: {}",
        finished.stderr
    );
    assert!(
        finished
            .stderr
            .contains("the server refused the credentials: "),
        "{what}: {}",
        finished.stderr
    );
}

#[test]
fn token_uploads_and_downloads_the_same_bytes() {
    let setup = setup();
    let url = setup.upload(&["--token", ALICE], None);
    // A refreshed token of the same owner reaches the same upload.
    setup.assert_downloads(&url, &["--token", ALICE_AGAIN], "copy.bin");
    let status = setup.run(&["status", &url, "--json", "--token", ALICE], None);
    assert!(status.status.success(), "{}", status.stderr);
    assert!(
        status.stdout.contains(r#""complete":true"#),
        "{}",
        status.stdout
    );
}

#[test]
fn a_header_works_like_a_token() {
    let setup = setup();
    let bearer = format!("Authorization: Bearer {ALICE}");
    let url = setup.upload(&["--header", &bearer], None);
    setup.assert_downloads(&url, &["-H", &bearer], "copy.bin");
}

#[test]
fn the_environment_carries_the_token() {
    let setup = setup();
    let url = setup.upload(&[], Some(ALICE));
    let status = setup.run(&["status", &url], Some(ALICE));
    assert!(status.status.success(), "{}", status.stderr);
    assert!(status.stdout.contains("complete: yes"), "{}", status.stdout);
    let deleted = setup.run(&["delete", &url], Some(ALICE_AGAIN));
    assert!(deleted.status.success(), "{}", deleted.stderr);
}

#[test]
fn missing_or_unknown_credentials_fail_at_once_with_the_servers_reason() {
    let setup = setup();
    let endpoint = tus_endpoint(&setup.server);
    let upload = [
        "upload",
        "file.bin",
        "--to",
        &endpoint,
        "--state-dir",
        "state",
    ];

    let started = Instant::now();
    let anonymous = setup.run(&upload, None);
    assert_refused(&anonymous, "no token");
    assert!(
        mentions(&anonymous.stderr, "authentication required"),
        "the server's reason: {}",
        anonymous.stderr
    );
    assert!(
        anonymous.stderr.contains("--token"),
        "a hint: {}",
        anonymous.stderr
    );

    let unknown = setup.run(&[&upload[..], &["--token", UNKNOWN]].concat(), None);
    assert_refused(&unknown, "an unknown token");
    assert!(
        mentions(&unknown.stderr, "unknown token"),
        "{}",
        unknown.stderr
    );
    // Both runs together took a fraction of the 5 minutes a retrying client would spend.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refusals took {:?}: retried?",
        started.elapsed()
    );

    // The other subcommands too: an existing upload, asked about without credentials.
    let url = setup.upload(&["--token", ALICE], None);
    let output = setup.work.join("copy.bin");
    let output = output.to_str().expect("UTF-8 path");
    for args in [
        vec!["status", &url],
        vec!["download", &url, "-o", output],
        vec!["delete", &url],
    ] {
        assert_refused(&setup.run(&args, None), args[0]);
    }
    assert!(!Path::new(output).exists(), "nothing was downloaded");
}

#[test]
fn another_owners_upload_is_not_found() {
    let setup = setup();
    let url = setup.upload(&["--token", ALICE], None);
    let output = setup.work.join("stolen.bin");
    let output = output.to_str().expect("UTF-8 path");
    for args in [
        vec!["status", &url, "--token", BOB],
        vec!["download", &url, "-o", output, "--token", BOB],
        vec!["delete", &url, "--token", BOB],
    ] {
        let finished = setup.run(&args, None);
        assert_eq!(
            finished.status.code(),
            Some(1),
            "{args:?}: {}",
            finished.stderr
        );
        assert!(
            finished.stderr.contains("no longer exists (404 Not Found)"),
            "{args:?}: {}",
            finished.stderr
        );
    }
    assert!(!Path::new(output).exists(), "nothing was downloaded");
    // Bob's delete deleted nothing.
    setup.assert_downloads(&url, &["--token", ALICE], "copy.bin");
}

#[test]
fn malformed_credentials_are_usage_errors() {
    let setup = setup();
    let endpoint = tus_endpoint(&setup.server);
    let upload = ["upload", "file.bin", "--to", &endpoint];
    let no_colon = format!("Authorization Bearer {ALICE}");
    let both = format!("Authorization: Bearer {ALICE}");
    for (extra, expected) in [
        (vec!["--header", &no_colon], "with a colon after the name"),
        (
            vec!["--token", "two\nlines"],
            "characters a header cannot carry",
        ),
        (vec!["--token", ALICE, "-H", &both], "give one"),
    ] {
        let finished = setup.run(&[&upload[..], &extra].concat(), None);
        assert_eq!(
            finished.status.code(),
            Some(2),
            "{extra:?}: {}",
            finished.stderr
        );
        assert!(
            finished.stderr.contains(expected),
            "{extra:?}: {}",
            finished.stderr
        );
    }
}
