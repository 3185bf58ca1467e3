//! Authentication and isolation over real HTTP: every route of every protocol against the
//! owner, another owner, no credentials, a bad signature and an expired token, with the status
//! each must get and, for every refusal, nothing changed on disk.

mod common;

use common::{OCTETS, TestServer, config, path_of, tus};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use resumable_core::ServiceConfig;
use resumable_server::ServerConfig;
use resumable_server::auth::{
    Auth, ForwardAuth, ForwardSettings, JwtAuth, JwtKeySource, JwtSettings, TokensAuth,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

fn token_for(owner: &str) -> String {
    hs256(json!({"sub": owner, "exp": now() + 3600}), SECRET)
}

fn secret_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    // A trailing newline, as `echo` or an editor leaves it: not part of the secret.
    std::fs::write(file.path(), [SECRET, b"\n"].concat()).unwrap();
    file
}

async fn jwt_server(settings: JwtSettings, service: ServiceConfig) -> TestServer {
    let auth = Auth::Jwt(JwtAuth::new(&settings).unwrap());
    server_with(auth, service).await
}

async fn server_with(auth: Auth, service: ServiceConfig) -> TestServer {
    let server_config = ServerConfig {
        auth: Arc::new(auth),
        ..ServerConfig::default()
    };
    TestServer::start_full(service, server_config).await
}

fn hs256_settings(secret: &Path) -> JwtSettings {
    JwtSettings {
        keys: JwtKeySource::SecretFile(secret.to_owned()),
        issuer: None,
        audience: None,
        leeway: Duration::from_secs(30),
    }
}

/// Every file under the data dir with its size, content digest and modification time.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u64, String, Option<SystemTime>)> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                pending.push(entry.path());
                continue;
            }
            let bytes = std::fs::read(entry.path()).unwrap();
            let relative = entry.path().strip_prefix(root).unwrap().to_owned();
            let stamp = (
                metadata.len(),
                common::sha256(&bytes),
                metadata.modified().ok(),
            );
            files.insert(relative, stamp);
        }
    }
    files
}

/// Who a matrix request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Owner,
    OtherOwner,
    NoToken,
    BadSignature,
    Expired,
}

impl Caller {
    fn authorization(self) -> Option<String> {
        let bearer = |token: String| Some(format!("Bearer {token}"));
        match self {
            Caller::Owner => bearer(token_for("alice")),
            Caller::OtherOwner => bearer(token_for("bob")),
            Caller::NoToken => None,
            Caller::BadSignature => bearer(hs256(
                json!({"sub": "alice", "exp": now() + 3600}),
                b"another-secret-another-secret-another-secret",
            )),
            // Past the 30 s leeway.
            Caller::Expired => bearer(hs256(json!({"sub": "alice", "exp": now() - 120}), SECRET)),
        }
    }
}

/// One request of the matrix.
struct Route {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// The owner's status, and the other owner's.
    owner: StatusCode,
    other: StatusCode,
    /// The other owner's answer body, when it matters (the simple protocol's count).
    other_body: Option<&'static str>,
}

async fn send(server: &TestServer, route: &Route, caller: Caller) -> (StatusCode, String) {
    let mut request = server
        .client
        .request(route.method.clone(), server.url(&route.path))
        .body(route.body.clone());
    for (name, value) in &route.headers {
        request = request.header(*name, value);
    }
    if let Some(authorization) = caller.authorization() {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let challenge = response.headers().get("www-authenticate").cloned();
    let body = response.text().await.unwrap();
    if status == StatusCode::UNAUTHORIZED {
        let challenge = challenge.expect("a 401 carries WWW-Authenticate");
        assert!(
            challenge
                .to_str()
                .unwrap()
                .starts_with("Bearer realm=\"resumable\""),
            "{challenge:?}"
        );
    }
    (status, body)
}

/// As the owner, over tus: an upload of `length` (partial if asked), with `bytes` appended.
async fn owned_upload(server: &TestServer, length: usize, bytes: &[u8], partial: bool) -> String {
    let mut create = tus(server, Method::POST, "/files/")
        .header("authorization", Caller::Owner.authorization().unwrap())
        .header("upload-length", length.to_string());
    if partial {
        create = create.header("upload-concat", "partial");
    }
    let response = create.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let path = path_of(&response);
    if !bytes.is_empty() {
        let response = tus(server, Method::PATCH, &path)
            .header("authorization", Caller::Owner.authorization().unwrap())
            .header("content-type", OCTETS)
            .header("upload-offset", "0")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    path
}

#[tokio::test]
async fn every_route_answers_owner_other_owner_no_token_bad_signature_and_expired_token() {
    let secret = secret_file();
    let server = jwt_server(hs256_settings(secret.path()), config()).await;

    let unfinished = owned_upload(&server, 6, b"abc", false).await;
    let finished = owned_upload(&server, 3, b"xyz", false).await;
    let doomed = owned_upload(&server, 3, b"", false).await;
    let part = owned_upload(&server, 2, b"pq", true).await;
    // The simple protocol's upload of alice: 2 of 4 bytes.
    let response = server
        .client
        .post(server.url("/upload"))
        .header("authorization", Caller::Owner.authorization().unwrap())
        .header("x-file-id", "a.txt-4-1")
        .header("x-start-byte", "0")
        .header("x-file-size", "4")
        .body("ab")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let tus_version = ("tus-resumable", "1.0.0".to_owned());
    let routes = vec![
        Route {
            name: "tus HEAD",
            method: Method::HEAD,
            path: unfinished.clone(),
            headers: vec![tus_version.clone()],
            body: Vec::new(),
            owner: StatusCode::OK,
            other: StatusCode::NOT_FOUND,
            other_body: None,
        },
        Route {
            name: "tus PATCH",
            method: Method::PATCH,
            path: unfinished.clone(),
            headers: vec![
                tus_version.clone(),
                ("content-type", OCTETS.to_owned()),
                ("upload-offset", "3".to_owned()),
            ],
            body: b"def".to_vec(),
            owner: StatusCode::NO_CONTENT,
            other: StatusCode::NOT_FOUND,
            other_body: None,
        },
        Route {
            name: "download GET",
            method: Method::GET,
            path: finished.clone(),
            headers: Vec::new(),
            body: Vec::new(),
            owner: StatusCode::OK,
            other: StatusCode::NOT_FOUND,
            other_body: None,
        },
        Route {
            name: "tus DELETE",
            method: Method::DELETE,
            path: doomed.clone(),
            headers: vec![tus_version.clone()],
            body: Vec::new(),
            owner: StatusCode::NO_CONTENT,
            other: StatusCode::NOT_FOUND,
            other_body: None,
        },
        Route {
            name: "tus final upload of a part",
            method: Method::POST,
            path: "/files/".to_owned(),
            headers: vec![
                tus_version.clone(),
                ("upload-concat", format!("final;{part}")),
            ],
            body: Vec::new(),
            owner: StatusCode::CREATED,
            // Bob's final would name a part that, for him, does not exist.
            other: StatusCode::BAD_REQUEST,
            other_body: None,
        },
        Route {
            name: "simple GET /status",
            method: Method::GET,
            path: "/status".to_owned(),
            headers: vec![("x-file-id", "a.txt-4-1".to_owned())],
            body: Vec::new(),
            owner: StatusCode::OK,
            // File ids are scoped per owner: bob's "a.txt-4-1" is his own, and empty.
            other: StatusCode::OK,
            other_body: Some("0"),
        },
        Route {
            name: "simple POST /upload",
            method: Method::POST,
            path: "/upload".to_owned(),
            headers: vec![
                ("x-file-id", "a.txt-4-1".to_owned()),
                ("x-start-byte", "2".to_owned()),
                ("x-file-size", "4".to_owned()),
            ],
            body: b"cd".to_vec(),
            owner: StatusCode::OK,
            // Bob has no bytes of his own "a.txt-4-1": a mismatch at his count, 0.
            other: StatusCode::CONFLICT,
            other_body: Some("0"),
        },
    ];

    for route in &routes {
        for caller in [
            Caller::OtherOwner,
            Caller::NoToken,
            Caller::BadSignature,
            Caller::Expired,
        ] {
            let before = snapshot(&server.data_dir);
            let (status, body) = send(&server, route, caller).await;
            let expected = match caller {
                Caller::OtherOwner => route.other,
                _ => StatusCode::UNAUTHORIZED,
            };
            assert_eq!(status, expected, "{} as {caller:?}: {body}", route.name);
            if let (Caller::OtherOwner, Some(expected)) = (caller, route.other_body) {
                assert_eq!(body, expected, "{} as {caller:?}", route.name);
            }
            assert_eq!(
                snapshot(&server.data_dir),
                before,
                "{} as {caller:?} changed the data directory",
                route.name
            );
        }
        let (status, body) = send(&server, route, Caller::Owner).await;
        assert_eq!(status, route.owner, "{} as the owner: {body}", route.name);
    }
    // The owner's requests did what they say.
    let owner = Caller::Owner.authorization().unwrap();
    let completed = server
        .client
        .get(server.url(&unfinished))
        .header("authorization", &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(completed.bytes().await.unwrap(), &b"abcdef"[..]);
    let gone = tus(&server, Method::HEAD, &doomed)
        .header("authorization", &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cors_preflights_and_health_need_no_credentials() {
    let secret = secret_file();
    let server = jwt_server(hs256_settings(secret.path()), config()).await;
    let preflight = server
        .client
        .request(Method::OPTIONS, server.url("/files/"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, tus-resumable",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    // Tokens travel in headers: cookies are not invited.
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-credentials")
    );
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // A browser can read why it was refused.
    let refused = tus(&server, Method::POST, "/files/")
        .header("origin", "https://app.example")
        .header("upload-length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let exposed = refused.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("WWW-Authenticate"), "{exposed}");
}

#[tokio::test]
async fn jwt_refuses_alg_none_algorithm_confusion_and_wrong_issuer_or_audience() {
    let public_key = fixture("rsa-public.pem");
    let settings = JwtSettings {
        keys: JwtKeySource::PublicKeyFile(public_key.clone()),
        issuer: Some("https://auth.example".into()),
        audience: Some("uploads".into()),
        leeway: Duration::from_secs(30),
    };
    let server = jwt_server(settings, config()).await;
    let private = std::fs::read(fixture("rsa-private.pem")).unwrap();
    let rs256 = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&private).unwrap(),
        )
        .unwrap()
    };
    let good =
        json!({"sub": "alice", "exp": now() + 60, "iss": "https://auth.example", "aud": "uploads"});
    let create = |token: String| {
        tus(&server, Method::POST, "/files/")
            .header("authorization", format!("Bearer {token}"))
            .header("upload-length", "1")
            .send()
    };
    assert_eq!(
        create(rs256(good.clone())).await.unwrap().status(),
        StatusCode::CREATED
    );

    // `alg: none`: an unsigned token with a valid body.
    let b64 = |value: serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(good.clone())
    );
    // Algorithm confusion: HS256 "signed" with the public key as the HMAC secret.
    let confused = hs256(good.clone(), &std::fs::read(&public_key).unwrap());
    let mut wrong_issuer = good.clone();
    wrong_issuer["iss"] = json!("https://evil.example");
    let mut wrong_audience = good.clone();
    wrong_audience["aud"] = json!("other-app");
    let mut no_subject = good.clone();
    no_subject.as_object_mut().unwrap().remove("sub");
    let mut no_expiry = good.clone();
    no_expiry.as_object_mut().unwrap().remove("exp");
    for (name, token) in [
        ("alg none", unsigned),
        ("HS256 with the public key", confused),
        ("wrong issuer", rs256(wrong_issuer)),
        ("wrong audience", rs256(wrong_audience)),
        ("no subject", rs256(no_subject)),
        ("no expiry", rs256(no_expiry)),
        ("not a JWT", "garbage".to_owned()),
    ] {
        let before = server.upload_count();
        let response = create(token).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(server.upload_count(), before, "{name}");
    }
}

#[tokio::test]
async fn jwt_verifies_ec_and_ed25519_keys_and_jwks_by_kid() {
    let cases = [
        ("ec-public.pem", "ec-private.pem", Algorithm::ES256),
        ("ed-public.pem", "ed-private.pem", Algorithm::EdDSA),
    ];
    for (public, private, algorithm) in cases {
        let settings = JwtSettings {
            keys: JwtKeySource::PublicKeyFile(fixture(public)),
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
        };
        let server = jwt_server(settings, config()).await;
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
            _ => EncodingKey::from_ed_pem(&pem).unwrap(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(algorithm),
            &json!({"sub": "alice", "exp": now() + 60}),
            &key,
        )
        .unwrap();
        let response = tus(&server, Method::POST, "/files/")
            .header("authorization", format!("Bearer {token}"))
            .header("upload-length", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{algorithm:?}");
    }

    // A JWK set of two secrets: the token's kid picks one.
    let jwks = tempfile::NamedTempFile::new().unwrap();
    let k = |secret: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    };
    let set = json!({"keys": [
        {"kty": "oct", "kid": "one", "alg": "HS256", "k": k(SECRET)},
        {"kty": "oct", "kid": "two", "alg": "HS256", "k": k(b"the-second-secret-the-second-secret")},
    ]});
    std::fs::write(jwks.path(), set.to_string()).unwrap();
    let settings = JwtSettings {
        keys: JwtKeySource::JwksFile(jwks.path().to_owned()),
        issuer: None,
        audience: None,
        leeway: Duration::from_secs(30),
    };
    let server = jwt_server(settings, config()).await;
    let signed = |kid: &str, secret: &[u8]| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(
            &header,
            &json!({"sub": "alice", "exp": now() + 60}),
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    };
    for (kid, secret, expected) in [
        (
            "two",
            &b"the-second-secret-the-second-secret"[..],
            StatusCode::CREATED,
        ),
        ("one", SECRET, StatusCode::CREATED),
        // The right secret under the wrong kid, and an unknown kid.
        (
            "one",
            &b"the-second-secret-the-second-secret"[..],
            StatusCode::UNAUTHORIZED,
        ),
        ("three", SECRET, StatusCode::UNAUTHORIZED),
    ] {
        let response = tus(&server, Method::POST, "/files/")
            .header("authorization", format!("Bearer {}", signed(kid, secret)))
            .header("upload-length", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "kid {kid}");
    }
}

#[tokio::test]
async fn token_claims_narrow_the_size_limit_and_the_protocols() {
    let secret = secret_file();
    let server = jwt_server(hs256_settings(secret.path()), config()).await;
    let token = hs256(
        json!({"sub": "alice", "exp": now() + 60, "max_size": 10, "protocols": ["tus"]}),
        SECRET,
    );
    let create = |length: u64| {
        tus(&server, Method::POST, "/files/")
            .header("authorization", format!("Bearer {token}"))
            .header("upload-length", length.to_string())
            .send()
    };
    assert_eq!(create(10).await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(
        create(11).await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let simple = server
        .client
        .get(server.url("/status"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-file-id", "a-1-1")
        .send()
        .await
        .unwrap();
    assert_eq!(simple.status(), StatusCode::FORBIDDEN);
    assert!(simple.text().await.unwrap().contains("simple protocol"));
    // The IETF draft shares tus's routes but is its own protocol.
    let ietf = |token: String| {
        server
            .client
            .post(server.url("/files/"))
            .header("authorization", format!("Bearer {token}"))
            .header("upload-draft-interop-version", "8")
            .header("upload-complete", "?0")
            .send()
    };
    let refused = ietf(token.clone()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("IETF"));
    let allowed = hs256(
        json!({"sub": "alice", "exp": now() + 60, "protocols": ["ietf"]}),
        SECRET,
    );
    let ietf = ietf(allowed).await.unwrap();
    assert_eq!(ietf.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn tokens_file_maps_tokens_to_owners_and_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# owners\nt-alice alice\nt-bob bob\n").unwrap();
    let auth = Arc::new(Auth::Tokens(TokensAuth::new(tokens.clone()).unwrap()));
    let server_config = ServerConfig {
        auth: auth.clone(),
        ..ServerConfig::default()
    };
    let server = TestServer::start_full(config(), server_config).await;
    let head = |token: &'static str, path: String| {
        tus(&server, Method::HEAD, &path)
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    let created = tus(&server, Method::POST, "/files/")
        .header("authorization", "Bearer t-alice")
        .header("upload-length", "5")
        .send()
        .await
        .unwrap();
    let path = path_of(&created);
    assert_eq!(
        head("t-alice", path.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        head("t-bob", path.clone()).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        head("t-carol", path.clone()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // A second token for alice, and bob's revoked: both take effect without a restart.
    std::fs::write(&tokens, "t-alice alice\nt-alice-2 alice\n").unwrap();
    server
        .eventually(|| {
            let path = path.clone();
            let head = &head;
            async move {
                (head("t-alice-2", path).await.unwrap().status() == StatusCode::OK).then_some(())
            }
        })
        .await;
    assert_eq!(
        head("t-bob", path.clone()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // A broken file keeps the tokens that were there (the re-read on a change and on SIGHUP
    // is the same `reload`).
    std::fs::write(&tokens, "this line has three fields\n").unwrap();
    let refused = auth.reload().unwrap_err();
    assert!(refused.contains("line 1"), "{refused}");
    assert_eq!(
        head("t-alice-2", path).await.unwrap().status(),
        StatusCode::OK
    );
}

/// The application's endpoint for `--auth forward`: the cookie `session=<owner>` names the
/// owner, `session=down` answers 500, anything else 401; it counts the questions it gets.
async fn forward_endpoint(questions: Arc<AtomicUsize>) -> String {
    use axum::http::HeaderMap;
    let app = axum::Router::new().route(
        "/whoami",
        axum::routing::get(move |headers: HeaderMap| {
            let questions = questions.clone();
            async move {
                questions.fetch_add(1, Ordering::SeqCst);
                assert!(headers.contains_key("x-forwarded-method"));
                assert!(headers.contains_key("x-forwarded-uri"));
                let cookie = headers
                    .get("cookie")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                match cookie.strip_prefix("session=") {
                    Some("down") => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                    Some(owner) if !owner.is_empty() && owner != "nobody" => {
                        (StatusCode::OK, json!({"owner": owner}).to_string())
                    }
                    _ => (StatusCode::UNAUTHORIZED, String::new()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/whoami")
}

#[tokio::test]
async fn forward_asks_the_application_and_caches_its_answers() {
    let questions = Arc::new(AtomicUsize::new(0));
    let url = forward_endpoint(questions.clone()).await;
    let auth = ForwardAuth::new(ForwardSettings {
        url,
        cache_for: Duration::from_secs(60),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let server_config = ServerConfig {
        auth: Arc::new(Auth::Forward(auth)),
        cors_origins: resumable_server::CorsOrigins::List(vec!["https://app.example".into()]),
        ..ServerConfig::default()
    };
    let server = TestServer::start_full(config(), server_config).await;
    // A page of a listed origin may send its session cookie.
    let preflight = server
        .client
        .request(Method::OPTIONS, server.url("/files/"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-credentials"],
        "true"
    );
    let create = |cookie: &'static str| {
        tus(&server, Method::POST, "/files/")
            .header("cookie", cookie)
            .header("upload-length", "5")
            .send()
    };
    let created = create("session=alice").await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let path = path_of(&created);
    let head = |cookie: &'static str| {
        tus(&server, Method::HEAD, &path)
            .header("cookie", cookie)
            .send()
    };
    assert_eq!(
        head("session=alice").await.unwrap().status(),
        StatusCode::OK
    );
    let asked = questions.load(Ordering::SeqCst);
    assert_eq!(
        head("session=alice").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        questions.load(Ordering::SeqCst),
        asked,
        "the answer was cached"
    );
    assert_eq!(
        head("session=bob").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        head("session=nobody").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let before = server.upload_count();
    assert_eq!(
        create("session=down").await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(server.upload_count(), before);
    let no_credentials = tus(&server, Method::HEAD, &path).send().await.unwrap();
    assert_eq!(no_credentials.status(), StatusCode::UNAUTHORIZED);
    // Credentials whose grammar has commas are passed on whole; two of them are refused.
    let with_params = tus(&server, Method::HEAD, &path)
        .header("cookie", "session=alice")
        .header("authorization", r#"Digest realm="x", nonce="y""#)
        .send()
        .await
        .unwrap();
    assert_eq!(with_params.status(), StatusCode::OK);
    let twice = tus(&server, Method::HEAD, &path)
        .header("cookie", "session=alice")
        .header("authorization", "Bearer a")
        .header("authorization", "Bearer b")
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn quotas_answer_413_with_the_offset_kept_and_429_and_hold_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "t-alice alice\nt-bob bob\n").unwrap();
    let service = ServiceConfig {
        quota_bytes: Some(10),
        quota_uploads: Some(3),
        ..config()
    };
    let server = server_with(Auth::Tokens(TokensAuth::new(tokens).unwrap()), service).await;
    let create = |token: &'static str, length: Option<u64>| {
        let request = tus(&server, Method::POST, "/files/")
            .header("authorization", format!("Bearer {token}"));
        match length {
            Some(length) => request.header("upload-length", length.to_string()),
            None => request.header("upload-defer-length", "1"),
        }
        .send()
    };
    // Many creations at once: only what fits in 10 bytes is created.
    let attempts = (0..16).map(|_| create("t-alice", Some(4)));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|response| response.unwrap().status())
        .collect();
    let created = statuses
        .iter()
        .filter(|status| **status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 2, "{statuses:?}");
    assert!(
        statuses.iter().all(
            |status| *status == StatusCode::CREATED || *status == StatusCode::PAYLOAD_TOO_LARGE
        ),
        "{statuses:?}"
    );
    // 2 bytes of room: a deferred upload takes them and is cut there, offset said.
    let deferred = create("t-alice", None).await.unwrap();
    assert_eq!(deferred.status(), StatusCode::CREATED);
    let path = path_of(&deferred);
    let patch = tus(&server, Method::PATCH, &path)
        .header("authorization", "Bearer t-alice")
        .header("content-type", OCTETS)
        .header("upload-offset", "0")
        .body(common::chunked(&[b"abc", b"def"]))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(patch.headers()["upload-offset"], "2");
    assert!(patch.text().await.unwrap().contains("quota"));
    let head = tus(&server, Method::HEAD, &path)
        .header("authorization", "Bearer t-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["upload-offset"], "2");
    // Three unfinished uploads: a fourth (even empty-sized) is one too many.
    let fourth = create("t-alice", Some(0)).await.unwrap();
    assert_eq!(fourth.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(fourth.text().await.unwrap().contains("unfinished uploads"));
    // Bob's quota is his own.
    assert_eq!(
        create("t-bob", Some(10)).await.unwrap().status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_final_upload_takes_only_this_servers_urls_of_the_callers_parts_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "t-alice alice\nt-bob bob\n").unwrap();
    let service = ServiceConfig {
        quota_bytes: Some(64),
        ..config()
    };
    let server = server_with(Auth::Tokens(TokensAuth::new(tokens).unwrap()), service).await;
    let partial = |token: &'static str| {
        tus(&server, Method::POST, "/files/")
            .header("authorization", format!("Bearer {token}"))
            .header("upload-length", "16")
            .header("upload-concat", "partial")
            .send()
    };
    let part = path_of(&partial("t-alice").await.unwrap());
    let bobs = path_of(&partial("t-bob").await.unwrap());
    for (token, path) in [("t-alice", &part), ("t-bob", &bobs)] {
        let response = tus(&server, Method::PATCH, path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", OCTETS)
            .header("upload-offset", "0")
            .body(vec![7u8; 16])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let id = &part["/files/".len()..];
    let host = server.address.to_string();
    let final_of = |urls: String| {
        tus(&server, Method::POST, "/files/")
            .header("authorization", "Bearer t-alice")
            .header("upload-concat", format!("final;{urls}"))
            .send()
    };
    for (urls, why) in [
        (format!("http://evil.example/files/{id}"), "another host"),
        (format!("file:///x/{id}"), "another scheme"),
        (
            format!("https://{host}/files/{id}"),
            "https, where this server speaks http",
        ),
        (format!("/elsewhere/{id}"), "another path"),
        (id.to_owned(), "a bare id"),
        (format!("{part} {part}"), "a part named twice"),
        (bobs.clone(), "another owner's part"),
    ] {
        let before = snapshot(&server.data_dir);
        let response = final_of(urls.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{why}: {urls}");
        assert_eq!(snapshot(&server.data_dir), before, "{why}");
    }
    // This server's own URL, absolute or as a path, is a part.
    let absolute = final_of(format!("http://{host}{part}")).await.unwrap();
    assert_eq!(absolute.status(), StatusCode::CREATED);
    let relative = final_of(part.clone()).await.unwrap();
    assert_eq!(relative.status(), StatusCode::CREATED);
    // 16 (part) + 16 + 16 (two finals) + 16 more would be 64: a final counts against the
    // quota before it is assembled, so one of 32 bytes is refused and nothing is written.
    let before = snapshot(&server.data_dir);
    let second = partial("t-alice").await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    let over = final_of(format!("{part} {}", path_of(&second)))
        .await
        .unwrap();
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(over.text().await.unwrap().contains("quota"));
    assert_eq!(
        server.upload_count(),
        before
            .keys()
            .filter(|path| path.extension().is_some_and(|ext| ext == "info"))
            .count()
            + 1
    );
}
