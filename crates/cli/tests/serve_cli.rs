//! `resumable serve` as users meet it: its help, its flags and `RESUMABLE_*` variables, and how
//! it refuses bad settings.

mod common;

use common::{
    Server, Tus, command, data_file, mentions, run_to_exit, scratch, serve_command, sha256_hex,
};
use std::time::Duration;

/// Bound on a run that should exit by itself.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn serve_help_lists_the_flags_and_their_variables() {
    let scratch = scratch();
    let finished = run_to_exit(
        command(scratch.path()).args(["serve", "--help"]),
        scratch.path(),
        EXIT_DEADLINE,
    );
    assert!(
        finished.status.success(),
        "serve --help: {}",
        finished.status
    );
    for expected in [
        "--listen",
        "--data-dir",
        "--max-size",
        "RESUMABLE_LISTEN",
        "RESUMABLE_DATA_DIR",
        "RESUMABLE_MAX_SIZE",
        // The limits, each with its variable and its default.
        "--max-connections",
        "RESUMABLE_MAX_CONNECTIONS",
        "--max-connections-per-client",
        "RESUMABLE_MAX_CONNECTIONS_PER_CLIENT",
        "--max-header-size",
        "RESUMABLE_MAX_HEADER_SIZE",
        "--min-body-rate",
        "RESUMABLE_MIN_BODY_RATE",
        "--min-body-rate-window",
        "RESUMABLE_MIN_BODY_RATE_WINDOW",
        "--max-metadata-size",
        "RESUMABLE_MAX_METADATA_SIZE",
        "--max-creations-per-minute",
        "RESUMABLE_MAX_CREATIONS_PER_MINUTE",
        "[default: 10000]",
        "[default: 256]",
        "[default: 32KiB]",
        "[default: 1KiB]",
        "[default: 4KiB]",
        "[default: 120]",
        "--metrics-listen",
        "RESUMABLE_METRICS_LISTEN",
        "--min-free-space",
        "RESUMABLE_MIN_FREE_SPACE",
    ] {
        assert!(
            finished.stdout.contains(expected),
            "serve --help does not mention {expected}:\n{}",
            finished.stdout
        );
    }
}

#[tokio::test]
async fn environment_variables_choose_the_address_and_the_data_dir() {
    let scratch = scratch();
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).expect("create working directory");
    let data_dir = scratch.path().join("nested").join("data");
    let mut command = command(&work);
    command
        .arg("serve")
        .env("RESUMABLE_LISTEN", "127.0.0.1:0")
        .env("RESUMABLE_DATA_DIR", &data_dir);
    let server = Server::start(&mut command, scratch.path());
    assert!(data_dir.is_dir(), "the data dir was not created");

    let tus = Tus::new(&server);
    let body = b"hello from the environment".to_vec();
    let id = tus.create(body.len() as u64).await;
    let response = tus.patch(&id, 0, body.clone()).await;
    assert_eq!(response.status(), 204, "PATCH");
    assert_eq!(
        std::fs::read(data_file(&data_dir, &id)).expect("read the data file"),
        body,
        "the upload is stored in RESUMABLE_DATA_DIR"
    );
    assert_eq!(sha256_hex(&tus.download(&id).await), sha256_hex(&body));
    assert!(
        !work.join("uploads").exists(),
        "the default ./uploads was used despite RESUMABLE_DATA_DIR"
    );
}

#[tokio::test]
async fn max_size_flag_limits_uploads() {
    let scratch = scratch();
    let server = Server::serve(&scratch.path().join("data"), &["--max-size", "1KiB"]);
    let http = reqwest::Client::new();
    let options = http
        .request(reqwest::Method::OPTIONS, format!("{}/files/", server.base))
        .send()
        .await
        .expect("OPTIONS /files/");
    assert_eq!(options.status(), 204, "OPTIONS");
    assert_eq!(common::header(&options, "Tus-Max-Size"), "1024");

    let tus = Tus::new(&server);
    assert_eq!(tus.post(2000).await.status(), 413, "2000 bytes over 1KiB");
    assert_eq!(tus.post(1024).await.status(), 201, "exactly 1KiB");
}

#[tokio::test]
async fn max_size_variable_limits_uploads() {
    let scratch = scratch();
    let mut command = serve_command(&scratch.path().join("data"), &[]);
    command.env("RESUMABLE_MAX_SIZE", "2KB");
    let server = Server::start(&mut command, scratch.path());
    let tus = Tus::new(&server);
    assert_eq!(tus.post(2001).await.status(), 413, "2001 bytes over 2KB");
    assert_eq!(tus.post(2000).await.status(), 201, "exactly 2KB");
}

#[test]
fn invalid_max_size_exits_naming_the_flag() {
    let scratch = scratch();
    let finished = run_to_exit(
        &mut serve_command(&scratch.path().join("data"), &["--max-size", "1e3"]),
        scratch.path(),
        EXIT_DEADLINE,
    );
    assert!(!finished.status.success(), "accepted --max-size 1e3");
    assert!(
        finished.stderr.contains("--max-size") && finished.stderr.contains("1e3"),
        "the error does not name the flag and value:\n{}",
        finished.stderr
    );
    assert!(
        !finished.stdout.contains("listening"),
        "it listened anyway: {}",
        finished.stdout
    );
}

#[test]
fn port_in_use_exits_with_a_clear_message() {
    let scratch = scratch();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("take a port");
    let address = taken.local_addr().expect("taken address").to_string();
    let mut command = command(scratch.path());
    command
        .arg("serve")
        .args(["--listen", &address, "--data-dir"])
        .arg(scratch.path().join("data"));
    let finished = run_to_exit(&mut command, scratch.path(), EXIT_DEADLINE);
    assert!(!finished.status.success(), "started on a taken port");
    assert!(
        finished.stderr.contains(&address) && mentions(&finished.stderr, "in use"),
        "the error does not say that {address} is in use:\n{}",
        finished.stderr
    );
    assert!(
        !finished.stdout.contains("listening"),
        "claims to listen: {}",
        finished.stdout
    );
    drop(taken);
}

/// `resumable serve --print-config` with `extra` flags and environment: the printed settings
/// as key → (value line, source comment).
fn printed_config(
    scratch: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::collections::BTreeMap<String, (String, String)> {
    let mut command = command(scratch);
    command.args(["serve", "--print-config"]).args(extra);
    for (name, value) in env {
        command.env(name, value);
    }
    let finished = run_to_exit(&mut command, scratch, EXIT_DEADLINE);
    assert!(
        finished.status.success(),
        "--print-config failed: {}",
        finished.stderr
    );
    finished
        .stdout
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (setting, source) = line.rsplit_once("  # ").expect("a source comment");
            let (key, value) = setting.split_once(" = ").expect("key = value");
            (key.to_owned(), (value.to_owned(), source.to_owned()))
        })
        .collect()
}

#[test]
fn config_file_settings_yield_to_environment_and_flags() {
    let scratch = scratch();
    let file = scratch.path().join("resumable.toml");
    std::fs::write(
        &file,
        "max-size = \"1KiB\"\nbody-timeout = \"11s\"\nhead-timeout = \"12s\"\nbehind-proxy = true\n",
    )
    .expect("write the config file");
    let file = file.to_str().expect("UTF-8 path");
    let printed = printed_config(
        scratch.path(),
        &["--config", file, "--head-timeout", "32s"],
        &[
            ("RESUMABLE_BODY_TIMEOUT", "21s"),
            ("RESUMABLE_HEAD_TIMEOUT", "22s"),
        ],
    );
    let setting = |key: &str| {
        let (value, source) = &printed[key];
        (value.as_str(), source.as_str())
    };
    assert_eq!(
        setting("max-size"),
        ("\"1KiB\"", "config file"),
        "file > default"
    );
    assert_eq!(
        setting("body-timeout"),
        ("\"21s\"", "env RESUMABLE_BODY_TIMEOUT"),
        "env > file"
    );
    assert_eq!(
        setting("head-timeout"),
        ("\"32s\"", "--head-timeout"),
        "flag > env > file"
    );
    assert_eq!(setting("behind-proxy"), ("true", "config file"));
    assert_eq!(setting("lock-timeout"), ("\"10s\"", "default"));

    // RESUMABLE_CONFIG names the file too.
    let printed = printed_config(scratch.path(), &[], &[("RESUMABLE_CONFIG", file)]);
    assert_eq!(printed["max-size"].0, "\"1KiB\"");
}

#[tokio::test]
async fn a_config_file_configures_the_server() {
    let scratch = scratch();
    let data_dir = scratch.path().join("data");
    let file = scratch.path().join("resumable.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\ndata-dir = {:?}\nmax-size = 1024\n",
            data_dir.to_str().expect("UTF-8 path")
        ),
    )
    .expect("write the config file");
    let mut command = command(scratch.path());
    command.arg("serve").arg("--config").arg(&file);
    let server = Server::start(&mut command, scratch.path());
    assert!(data_dir.is_dir(), "data-dir from the file was not used");
    let tus = Tus::new(&server);
    assert_eq!(tus.post(1025).await.status(), 413, "max-size from the file");
    assert_eq!(tus.post(1024).await.status(), 201);
}

#[test]
fn an_unknown_config_key_stops_start_up_naming_it() {
    let scratch = scratch();
    let file = scratch.path().join("resumable.toml");
    std::fs::write(&file, "max-size = \"1KiB\"\nlock-timout = \"3s\"\n")
        .expect("write the config file");
    let mut command = serve_command(&scratch.path().join("data"), &[]);
    command.arg("--config").arg(&file);
    let finished = run_to_exit(&mut command, scratch.path(), EXIT_DEADLINE);
    assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("unknown key `lock-timout`")
            && finished.stderr.contains("did you mean `lock-timeout`")
            && finished.stderr.contains("resumable.toml"),
        "{}",
        finished.stderr
    );
    assert!(
        !finished.stdout.contains("listening"),
        "{}",
        finished.stdout
    );

    std::fs::write(&file, "body-timeout = 30\n").expect("write the config file");
    let finished = run_to_exit(&mut command, scratch.path(), EXIT_DEADLINE);
    assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("`body-timeout`: invalid value \"30\""),
        "{}",
        finished.stderr
    );
}

#[test]
fn print_config_masks_credentials() {
    let scratch = scratch();
    let printed = printed_config(
        scratch.path(),
        &["--hook-url", "http://hooks:Hunter2@hooks.example/in"],
        &[(
            "RESUMABLE_AUTH_FORWARD_URL",
            "https://app:Hunter3@app.example/auth",
        )],
    );
    assert_eq!(
        printed["hook-url"],
        (
            "\"http://hooks:***@hooks.example/in\"".to_owned(),
            "--hook-url, masked".to_owned()
        )
    );
    assert_eq!(
        printed["auth-forward-url"].0,
        "\"https://app:***@app.example/auth\""
    );
}

/// The log lines of a server whose stderr is JSON, parsed.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line:?}")))
        .collect()
}

/// The first JSON log line with `message`, waiting for it: a request's line is written once
/// its response has been sent, which may be just after the client has it.
async fn wait_for_line(
    server: &Server,
    test: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = json_lines(&server.log())
            .into_iter()
            .find(|line| test(line))
        {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no such log line:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn json_logs_have_one_line_per_request_and_the_request_id() {
    let scratch = scratch();
    let server = Server::serve(&scratch.path().join("data"), &["--log-format", "json"]);
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/files/", server.base))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "5")
        .header("X-Request-Id", "client-chose-this-1")
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 201);
    assert_eq!(
        common::header(&created, "X-Request-Id"),
        "client-chose-this-1"
    );
    let location = common::header(&created, "Location");
    let id = location.rsplit('/').next().expect("an id").to_owned();
    let patched = http
        .patch(&location)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("X-Request-Id", "not sane: has spaces")
        .body("hello")
        .send()
        .await
        .expect("PATCH");
    assert_eq!(patched.status(), 204);
    let generated = common::header(&patched, "X-Request-Id");
    assert!(
        generated.len() == 16 && !generated.contains(' '),
        "a fresh id replaces an insane one: {generated:?}"
    );

    let post = wait_for_line(&server, |line| {
        line["message"] == "request" && line["request_id"] == "client-chose-this-1"
    })
    .await;
    assert_eq!(post["target"], "resumable::request");
    assert_eq!(post["level"], "INFO");
    assert_eq!(post["method"], "POST");
    assert_eq!(post["route"], "/files/");
    assert_eq!(post["status"], 201);
    assert!(post["duration_ms"].is_number(), "{post}");
    assert!(post.get("upload").is_none(), "{post}");
    let patch = wait_for_line(&server, |line| {
        line["message"] == "request" && line["request_id"] == generated.as_str()
    })
    .await;
    assert_eq!(patch["method"], "PATCH");
    assert_eq!(patch["route"], "/files/{id}", "the pattern, not the path");
    assert_eq!(patch["upload"], id.as_str());
    assert_eq!(patch["status"], 204);
    assert_eq!(patch["received"], 5);
    assert_eq!(patch["sent"], 0);

    // Lifecycle events carry the upload and, through the request's span, the request id.
    let created = wait_for_line(&server, |line| line["message"] == "upload created").await;
    assert_eq!(created["upload"], id.as_str());
    assert_eq!(created["span"]["request_id"], "client-chose-this-1");
    let completed = wait_for_line(&server, |line| line["message"] == "upload completed").await;
    assert_eq!(completed["upload"], id.as_str());
    assert_eq!(completed["span"]["request_id"], generated.as_str());

    let downloaded = http.get(&location).send().await.expect("GET");
    assert_eq!(downloaded.bytes().await.expect("body").as_ref(), b"hello");
    let get = wait_for_line(&server, |line| {
        line["message"] == "request" && line["method"] == "GET" && line["route"] == "/files/{id}"
    })
    .await;
    assert_eq!(get["sent"], 5, "the bytes sent");
    let deleted = http
        .delete(&location)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);
    let terminated = wait_for_line(&server, |line| line["message"] == "upload terminated").await;
    assert_eq!(terminated["upload"], id.as_str());

    let missing = http
        .get(format!("{}/no/such/path?sig=x", server.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    let unrouted = wait_for_line(&server, |line| {
        line["message"] == "request" && line["status"] == 404
    })
    .await;
    assert_eq!(unrouted["route"], "-", "no raw path: {unrouted}");
}

/// An `--auth forward` endpoint on a free port: `Bearer SECRET123` is alice, anything else 401.
async fn forward_auth_endpoint() -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let check = |headers: HeaderMap| async move {
        let good = headers
            .get("authorization")
            .is_some_and(|value| value == "Bearer SECRET123");
        if good {
            [("Resumable-Owner", "alice")].into_response()
        } else {
            StatusCode::UNAUTHORIZED.into_response()
        }
    };
    let app = axum::Router::new().route("/auth", axum::routing::get(check));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the auth endpoint");
    let address = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/auth")
}

#[tokio::test]
async fn credentials_never_reach_the_logs_even_at_debug_level() {
    let scratch = scratch();
    let endpoint = forward_auth_endpoint().await;
    // Forward authentication: the request's Authorization and Cookie travel on to the
    // endpoint, through an HTTP client that logs at debug and trace levels.
    let mut command = serve_command(
        &scratch.path().join("data"),
        &["--auth", "forward", "--auth-forward-url", &endpoint],
    );
    command.env("RESUMABLE_LOG", "trace");
    let server = Server::start(&mut command, scratch.path());
    let http = reqwest::Client::new();
    let authorized = |request: reqwest::RequestBuilder| {
        request
            .header("Authorization", "Bearer SECRET123")
            .header("Cookie", "session=SECRET123")
            .header("Tus-Resumable", "1.0.0")
    };
    let created = authorized(http.post(format!("{}/files/?token=SECRET123", server.base)))
        .header("Upload-Length", "3")
        .header("Upload-Metadata", "filename YS50eHQ=")
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 201, "the token is good");
    let location = common::header(&created, "Location");
    let patched = authorized(http.patch(&location))
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body("abc")
        .send()
        .await
        .expect("PATCH");
    assert_eq!(patched.status(), 204);
    let refused = http
        .head(&location)
        .header("Tus-Resumable", "1.0.0")
        .header("Authorization", "Bearer SECRET123-but-wrong")
        .send()
        .await
        .expect("HEAD");
    assert_eq!(refused.status(), 401);
    wait_for_text(&server, "status=401").await;
    let log = server.log();
    assert!(
        log.contains("DEBUG") || log.contains("TRACE"),
        "debug logging is on:\n{log}"
    );
    assert!(
        !log.contains("SECRET123"),
        "a credential was logged:\n{log}"
    );
}

/// Waits until the server's log holds `text`.
async fn wait_for_text(server: &Server, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !server.log().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "{text:?} never logged:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn public_url_is_the_base_of_upload_urls() {
    let scratch = scratch();
    let mut command = serve_command(&scratch.path().join("data"), &[]);
    command.env("RESUMABLE_PUBLIC_URL", "https://uploads.example.com/base/");
    let server = Server::start(&mut command, scratch.path());
    let tus = Tus::new(&server);
    let created = tus.post(3).await;
    assert_eq!(created.status(), 201);
    let location = common::header(&created, "Location");
    let id = location
        .strip_prefix("https://uploads.example.com/base/files/")
        .unwrap_or_else(|| panic!("Location {location:?} is not under the public URL"));
    assert_eq!(id.len(), 32, "{location}");
    // The proxy strips the prefix: the server's own routes are unchanged.
    assert_eq!(tus.offset(id).await, 0);
}
