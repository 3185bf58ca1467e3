//! Conformance to the IETF draft "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-
//! upload, interop version 8), written from the draft's text: one test per server-side MUST or
//! SHOULD, each quoting the section it checks, run for every served interop version (3 to 8)
//! where the rule exists in that version (docs/protocols.md §7 says what differs). The
//! requests are written by `common::ietf` in each version's own words.
//!
//! What the server does not do yet (104 interim responses, `Want-Repr-Digest`) has no test here.

mod common;

use common::ietf::{
    self, COMPLETED_UPLOAD, INCONSISTENT_LENGTH, Ietf, MISMATCHING_OFFSET, VERSIONS, Version,
    chunk, chunked, content_length, field, integer, limits, problem, send_then_close, settled,
    sha256_digest,
};
use common::{MAX_SIZE, OCTETS, TestServer, path_of, pattern, read_response_head};
use reqwest::{Method, StatusCode};
use resumable_core::{Clock, ServiceConfig};
use resumable_server::ServerConfig;
use resumable_server::auth::{Auth, TokensAuth};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A day, the test server's `expire_after`.
const DAY: u64 = 24 * 60 * 60;

/// An upload of `length` bytes holding `first`, created in `ietf`'s version: with
/// `Upload-Length` from interop 6, before that (no `Upload-Length`) by a creation with
/// `Upload-Complete: ?1` and `Content-Length: length` whose content is cut after `first`.
async fn with_length(ietf: Ietf<'_>, length: u64, first: &[u8]) -> String {
    if ietf.version.knows_length_and_limits() {
        return ietf.start(Some(length), first).await;
    }
    assert!(!first.is_empty(), "a cut creation needs content to wait on");
    let server = ietf.server;
    let before = server.upload_ids();
    let head = ietf.raw_creation(true, content_length(length as usize));
    let _connection = send_then_close(server, &head, first).await;
    let id = ietf::new_upload(server, &before).await;
    settled(server, &id, first.len() as u64).await;
    ietf::path(&id)
}

/// The response's `Upload-Offset`, which it must carry.
fn offset_of(response: &reqwest::Response) -> u64 {
    integer(response, "upload-offset")
        .unwrap_or_else(|| panic!("a {} without Upload-Offset", response.status()))
}

/// A tus `HEAD`: how the engine sees an upload, whatever created it.
async fn tus_head(server: &TestServer, path: &str) -> reqwest::Response {
    let response = common::head(server, path).await;
    assert_eq!(response.status(), StatusCode::OK);
    response
}

/// The status of a plain download (`GET` without the draft).
async fn download_status(server: &TestServer, path: &str) -> StatusCode {
    server
        .client
        .get(server.url(path))
        .send()
        .await
        .unwrap()
        .status()
}

// --- Draft Version Identification -----------------------------------------------------------

/// §Draft Version Identification: "Implementations of this draft use the interop version to
/// identify the iteration of the draft that they implement." A version not served is refused
/// (docs/protocols.md §7: `400` with a problem naming the versions served), and nothing is
/// created.
#[tokio::test]
async fn an_interop_version_not_served_is_refused_naming_those_served() {
    let server = TestServer::start().await;
    for value in ["2", "9", "0", "-8", "8.5", "\"8\"", "abc", "8, 8"] {
        let response = server
            .client
            .post(server.url("/files/"))
            .header(ietf::INTEROP_VERSION, value)
            .header("Upload-Complete", "?1")
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{value:?}");
        let problem = problem(response).await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("3, 4, 5, 6, 7, 8"), "{value:?}: {problem}");
    }
    assert_eq!(server.upload_count(), 0);
}

/// §Draft Version Identification: "Server implementations of draft versions of the protocol
/// MUST NOT send a `104 (Upload Resumption Supported)` informational response when the interop
/// version indicated by the `Upload-Draft-Interop-Version` header field in the request is
/// missing or mismatching."
#[tokio::test]
async fn no_104_without_a_served_interop_version() {
    let server = TestServer::start().await;
    let mismatching = format!(
        "POST /files/ HTTP/1.1\r\nHost: x\r\n{}: 9\r\nUpload-Complete: ?1\r\n\
         Content-Length: 3\r\n\r\nabc",
        ietf::INTEROP_VERSION
    );
    let head = server.raw(mismatching.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // Without a version the request is tus's, which gets no interim response either.
    let missing = format!(
        "POST /files/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Complete: ?1\r\n\
         Upload-Length: 3\r\nContent-Type: {OCTETS}\r\nContent-Length: 3\r\n\r\nabc"
    );
    let head = server.raw(missing.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
}

/// §Status Code 104: "the server MUST NOT omit the `100 (Continue)` response because it has
/// sent an interim response with the `104 (Upload Resumption Supported)` status code." A
/// creation or append that expects 100-continue gets it before it sends its content.
#[tokio::test]
async fn expect_100_continue_is_answered_before_the_content() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let expect = ("Expect", "100-continue".to_owned());
        let creation = ietf.raw_head(
            "POST",
            "/files/",
            &[
                (
                    version.completeness_field(),
                    version.completeness(true).into(),
                ),
                expect.clone(),
                content_length(5),
            ],
        );
        let mut stream = server.send_partial(&creation, b"").await;
        let interim = heads_until(&mut stream, "100").await;
        assert!(
            interim.ends_with("HTTP/1.1 100 Continue"),
            "{version}: {interim}"
        );
        stream.write_all(b"hello").await.unwrap();
        let last = read_response_head(&mut stream).await;
        assert!(last.starts_with("HTTP/1.1 201"), "{version}: {last}");

        let path = ietf.start(None, b"").await;
        let append = ietf.raw_head(
            "PATCH",
            &path,
            &[
                ("Content-Type", ietf::PARTIAL_UPLOAD.into()),
                ("Upload-Offset", "0".into()),
                (
                    version.completeness_field(),
                    version.completeness(true).into(),
                ),
                expect,
                content_length(3),
            ],
        );
        let mut stream = server.send_partial(&append, b"").await;
        let interim = heads_until(&mut stream, "100").await;
        assert!(
            interim.ends_with("HTTP/1.1 100 Continue"),
            "{version}: {interim}"
        );
        stream.write_all(b"abc").await.unwrap();
        let last = read_response_head(&mut stream).await;
        assert!(last.starts_with("HTTP/1.1 204"), "{version}: {last}");
    }
}

/// Reads response heads until one with status `status` (interim `104`s may come before it):
/// the status lines seen, the last one `status`'s. Fails after five seconds.
async fn heads_until(stream: &mut tokio::net::TcpStream, status: &str) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let wanted = format!("HTTP/1.1 {status}");
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&received).into_owned();
            let heads: Vec<&str> = text
                .split("\r\n\r\n")
                .filter(|head| head.starts_with("HTTP/"))
                .collect();
            let complete = text.matches("\r\n\r\n").count();
            if let Some(found) = heads
                .iter()
                .take(complete)
                .position(|head| head.starts_with(&wanted))
            {
                let lines: Vec<&str> = heads[..=found]
                    .iter()
                    .map(|head| head.lines().next().unwrap_or_default())
                    .collect();
                return lines.join(" / ");
            }
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return format!("connection ended after {text:?}"),
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or_else(|_| panic!("no {status} response within 5 s"))
}

/// The first final (non-1xx) response head on `stream`, past any interim `104`s; empty if the
/// connection ends (or five seconds pass) first.
async fn final_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&received).into_owned();
            let mut heads = text.split_inclusive("\r\n\r\n");
            if let Some(head) =
                heads.find(|head| head.ends_with("\r\n\r\n") && !head.starts_with("HTTP/1.1 1"))
            {
                return head.to_owned();
            }
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return String::new(),
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or_default()
}

// --- Upload Resource ------------------------------------------------------------------------

/// §Upload Resource: "An upload resource SHOULD be unique. Reuse of a URI for a different
/// upload resource SHOULD be avoided". Two creations get two URIs, and one created after a
/// cancellation does not get the cancelled one's.
#[tokio::test]
async fn every_upload_resource_has_a_uri_of_its_own() {
    let server = TestServer::start().await;
    let mut seen = Vec::new();
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        for _ in 0..3 {
            let path = ietf.start(None, b"x").await;
            assert!(!seen.contains(&path), "{version}: {path} reused");
            seen.push(path.clone());
            let cancelled = ietf.request(Method::DELETE, &path).send().await.unwrap();
            assert!(cancelled.status().is_success());
        }
    }
}

/// §Security Considerations: "it is RECOMMENDED to generate upload resource URIs in such a way
/// that makes it hard to be guessed by unauthorized clients. [...] If so, they MUST ensure
/// that no internal information is leaked in the URI that is not intended to be exposed." The
/// URI is `/files/` and 128 random bits in hex, nothing of the storage.
#[tokio::test]
async fn upload_uris_are_random_and_leak_nothing() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let response = Ietf::new(&server, version).create(false, Vec::new()).await;
        let location = field(&response, "location").unwrap();
        let prefix = format!("http://{}/files/", server.address);
        let id = location
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{version}: {location}"));
        assert_eq!(id.len(), 32, "{version}: {location}");
        assert!(
            id.bytes()
                .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()),
            "{version}: {location}"
        );
    }
}

// --- State: Offset --------------------------------------------------------------------------

/// §Offset: "Representation data processed by the upload resource cannot be removed again
/// and, therefore, the offset MUST NOT decrease." Every offset the server reports over a life
/// of appends, refusals, a cut body and retrievals is at least the one before.
#[tokio::test]
async fn the_offset_never_decreases() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let mut offsets = Vec::new();
        let created = ietf.create(false, b"0123456789".to_vec()).await;
        assert_eq!(created.status(), StatusCode::CREATED);
        offsets.push(offset_of(&created));
        let path = path_of(&created);
        offsets.push(ietf.offset(&path).await);
        offsets.push(offset_of(&ietf.append(&path, 3, false, b"abc").await));
        let wrong = ietf
            .appending(&path, 10, false)
            .header("Content-Digest", sha256_digest(b"not it"))
            .body("abcde")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
        offsets.push(offset_of(&wrong));
        offsets.push(offset_of(&ietf.append(&path, 10, false, &[7; 20]).await));
        let head = ietf.raw_append(&path, 30, false, content_length(100));
        let _connection = send_then_close(&server, &head, &[8; 7]).await;
        settled(&server, &ietf::id(&path), 37).await;
        offsets.push(ietf.offset(&path).await);
        offsets.push(offset_of(&ietf.append(&path, 0, false, b"late").await));
        offsets.push(ietf.offset(&path).await);
        assert!(
            offsets.windows(2).all(|pair| pair[0] <= pair[1]),
            "{version}: {offsets:?}"
        );
        assert_eq!(offsets.last(), Some(&37), "{version}: {offsets:?}");
    }
}

/// §Offset: "`Upload-Offset` is an Item Structured Header Field. Its value is a non-negative
/// Integer and indicates the current offset as viewed by the message sender. Other values
/// MUST cause the entire header field to be ignored." An append whose `Upload-Offset` is not
/// a non-negative Integer has none (interop 8) — and an append without one is refused — or
/// is refused outright (earlier versions): `400`, nothing written. An Integer with parameters
/// is an Integer.
#[tokio::test]
async fn an_upload_offset_that_is_not_an_integer_is_no_offset() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"").await;
        for value in ["abc", "-1", "1.5", "\"0\"", "?0", "0x0", "0, 0", ""] {
            let response = ietf
                .appending_but(&path, 0, false, &[("upload-offset", Some(value))])
                .body("abc")
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "{version}: {value:?}"
            );
            problem(response).await;
        }
        assert_eq!(ietf.offset(&path).await, 0, "{version}");
        let response = ietf
            .appending_but(&path, 0, false, &[("upload-offset", Some("0;p=1"))])
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{version}");
        assert_eq!(ietf.offset(&path).await, 3, "{version}");
    }
    // Interop 8 ignores the field: the refusal is the one of an append without an offset.
    let ietf = Ietf::new(&server, Version(8));
    let path = ietf.start(None, b"").await;
    let without = ietf
        .appending_but(&path, 0, false, &[("upload-offset", None)])
        .body("abc")
        .send()
        .await
        .unwrap();
    let invalid = ietf
        .appending_but(&path, 0, false, &[("upload-offset", Some("abc"))])
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), without.status());
    assert_eq!(
        problem(invalid).await["detail"],
        problem(without).await["detail"]
    );
}

// --- State: Completeness ---------------------------------------------------------------------

/// §Completeness: "`Upload-Complete` is an Item Structured Header Field. Its value is a
/// Boolean and indicates whether the upload is complete or not. Other values MUST cause the
/// entire header field to be ignored." `1`, `true` and `?2` are no Boolean: a creation or an
/// append whose completeness is not one has none, and is refused (`400`), creating or writing
/// nothing.
#[tokio::test]
async fn upload_complete_that_is_not_a_boolean_is_no_completeness() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let field = version.completeness_field();
        let path = ietf.start(None, b"").await;
        let uploads = server.upload_count();
        for value in ["1", "0", "true", "?2", "?1, ?0", ""] {
            let creation = ietf
                .request(Method::POST, "/files/")
                .header(field, value)
                .body("abc")
                .send()
                .await
                .unwrap();
            assert_eq!(
                creation.status(),
                StatusCode::BAD_REQUEST,
                "{version}: {field}: {value:?}"
            );
            problem(creation).await;
            let append = ietf
                .appending_but(&path, 0, false, &[(field, Some(value))])
                .body("abc")
                .send()
                .await
                .unwrap();
            assert_eq!(
                append.status(),
                StatusCode::BAD_REQUEST,
                "{version}: {field}: {value:?}"
            );
        }
        assert_eq!(server.upload_count(), uploads, "{version}");
        assert_eq!(ietf.offset(&path).await, 0, "{version}");
    }
}

/// §Completeness: "An upload is incomplete until it is explicitly marked as completed by the
/// client or the server. After this point, no more representation data can be appended." An
/// append with content to a completed upload is refused and changes nothing; an empty one
/// that completes it again replays the completion.
#[tokio::test]
async fn a_completed_upload_takes_no_more_content() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let created = ietf.create(true, b"whole".to_vec()).await;
        assert_eq!(created.status(), StatusCode::CREATED, "{version}");
        let path = path_of(&created);
        let more = ietf.append(&path, 5, false, b"more").await;
        assert_eq!(more.status(), StatusCode::BAD_REQUEST, "{version}");
        assert_eq!(offset_of(&more), 5, "{version}");
        assert_eq!(problem(more).await["type"], COMPLETED_UPLOAD, "{version}");
        // Saying it completes the upload again, at another length, is no better.
        let last = ietf.append(&path, 5, true, b"more").await;
        assert_eq!(last.status(), StatusCode::BAD_REQUEST, "{version}");
        problem(last).await;
        assert_eq!(ietf.offset(&path).await, 5, "{version}");
        let elsewhere = ietf.append(&path, 0, true, b"whole").await;
        assert_eq!(elsewhere.status(), StatusCode::CONFLICT, "{version}");
        assert_eq!(common::download(&server, &path).await, b"whole");
        let replay = ietf.append(&path, 5, true, b"").await;
        assert_eq!(replay.status(), StatusCode::NO_CONTENT, "{version}");
        assert_eq!(version.says_complete(replay.headers()), Some(true));
    }
}

// --- State: Length ----------------------------------------------------------------------------

/// §Length: "The `Upload-Length` request and response header field is an Item Structured
/// Header Field. Its value is a non-negative Integer and indicates the number of bytes of the
/// entire representation data. Other values MUST cause the entire header field to be
/// ignored." Interop 8 creates the upload without a length; interop 6 and 7 refuse the
/// creation.
#[tokio::test]
async fn an_upload_length_that_is_not_an_integer_is_no_length() {
    let server = TestServer::start().await;
    for version in Version::from(6) {
        let ietf = Ietf::new(&server, version);
        for value in ["-5", "abc", "1.5", "\"10\"", "10, 10"] {
            let uploads = server.upload_count();
            let response = ietf
                .creation(false)
                .header("Upload-Length", value)
                .body("abc")
                .send()
                .await
                .unwrap();
            if version.ignores_invalid_fields() {
                assert_eq!(
                    response.status(),
                    StatusCode::CREATED,
                    "{version}: {value:?}"
                );
                let head = ietf.head(&path_of(&response)).await;
                assert_eq!(field(&head, "upload-length"), None, "{version}: {value:?}");
                assert_eq!(offset_of(&head), 3);
            } else {
                assert_eq!(
                    response.status(),
                    StatusCode::BAD_REQUEST,
                    "{version}: {value:?}"
                );
                problem(response).await;
                assert_eq!(server.upload_count(), uploads, "{version}: {value:?}");
            }
        }
    }
}

/// §Length: "If indicators (1) and (2) are both present in the same request, their indicated
/// lengths MUST match." — (1) `Upload-Complete: ?1` with `Content-Length`, (2)
/// `Upload-Length`. A creation or append whose two disagree is refused with the problem type
/// `inconsistent-upload-length` (§Inconsistent Length) and changes nothing.
#[tokio::test]
async fn lengths_stated_twice_in_one_request_must_match() {
    let server = TestServer::start().await;
    for version in Version::from(6) {
        let ietf = Ietf::new(&server, version);
        let creation = ietf
            .creation(true)
            .header("Upload-Length", "10")
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(creation.status(), StatusCode::BAD_REQUEST, "{version}");
        assert_eq!(version.says_complete(creation.headers()), Some(false));
        assert_eq!(problem(creation).await["type"], INCONSISTENT_LENGTH);
        assert_eq!(server.upload_count(), 0, "{version}");

        let path = ietf.start(None, b"").await;
        let append = ietf
            .appending(&path, 0, true)
            .header("Upload-Length", "10")
            .body("abcd")
            .send()
            .await
            .unwrap();
        assert_eq!(append.status(), StatusCode::BAD_REQUEST, "{version}");
        assert_eq!(problem(append).await["type"], INCONSISTENT_LENGTH);
        let head = ietf.head(&path).await;
        assert_eq!(offset_of(&head), 0, "{version}");
        assert_eq!(field(&head, "upload-length"), None, "{version}");
        let request = ietf.request(Method::DELETE, &path).send().await.unwrap();
        assert!(request.status().is_success());
    }
}

/// §Length: "If multiple requests include indicators, their indicated values MUST match." An
/// append whose length contradicts the one an earlier request stated is refused with
/// `inconsistent-upload-length`, and writes nothing.
#[tokio::test]
async fn lengths_stated_by_several_requests_must_match() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = with_length(ietf, 10, b"abcd").await;
        // Its content would end the upload at 7.
        let short = ietf.append(&path, 4, true, b"efg").await;
        assert_eq!(short.status(), StatusCode::BAD_REQUEST, "{version}");
        assert_eq!(
            problem(short).await["type"],
            INCONSISTENT_LENGTH,
            "{version}"
        );
        if version.knows_length_and_limits() {
            let other = ietf
                .appending(&path, 4, false)
                .header("Upload-Length", "11")
                .body("e")
                .send()
                .await
                .unwrap();
            assert_eq!(other.status(), StatusCode::BAD_REQUEST, "{version}");
            assert_eq!(problem(other).await["type"], INCONSISTENT_LENGTH);
            let same = ietf
                .appending(&path, 4, false)
                .header("Upload-Length", "10")
                .body("e")
                .send()
                .await
                .unwrap();
            assert_eq!(same.status(), StatusCode::NO_CONTENT, "{version}");
        } else {
            assert_eq!(
                ietf.append(&path, 4, false, b"e").await.status(),
                StatusCode::NO_CONTENT
            );
        }
        assert_eq!(ietf.offset(&path).await, 5, "{version}");
        let rest = ietf.append(&path, 5, true, b"fghij").await;
        assert_eq!(rest.status(), StatusCode::NO_CONTENT, "{version}");
        assert_eq!(common::download(&server, &path).await, b"abcdefghij");
    }
}

/// §Upload Creation, Server Behavior: "The server MUST record the length according to
/// {{upload-length}} if the `Upload-Length` or `Upload-Complete: ?1` header fields are
/// included in the request." Recorded even when the content is cut short, so the length is
/// known to the requests that resume it.
#[tokio::test]
async fn creation_records_the_length_it_states() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        if version.knows_length_and_limits() {
            let path = ietf.start(Some(50), b"0123456789").await;
            assert_length(ietf, &path, 50).await;
        }
        // Upload-Complete: ?1 and a Content-Length of 50, of which 10 bytes arrive.
        let before = server.upload_ids();
        let head = ietf.raw_creation(true, content_length(50));
        let _connection = send_then_close(&server, &head, &[1; 10]).await;
        let id = ietf::new_upload(&server, &before).await;
        settled(&server, &id, 10).await;
        assert_length(ietf, &ietf::path(&id), 50).await;
        assert_eq!(ietf.offset(&ietf::path(&id)).await, 10);
    }
}

/// That the upload at `path` has `length` as its length: in a tus `HEAD` (the engine's view)
/// and, for versions that know the field, in an offset retrieval's `Upload-Length`.
async fn assert_length(ietf: Ietf<'_>, path: &str, length: u64) {
    let version = ietf.version;
    let tus = tus_head(ietf.server, path).await;
    assert_eq!(integer(&tus, "upload-length"), Some(length), "{version}");
    if version.knows_length_and_limits() {
        let head = ietf.head(path).await;
        assert_eq!(integer(&head, "upload-length"), Some(length), "{version}");
    }
}

/// §Upload Append, Server Behavior: "The server MUST record the length according to
/// {{upload-length}} if the `Upload-Length` or `Upload-Complete` header fields are included
/// in the request." An upload created without a length gets the one an append states, even
/// when that append's content is cut short.
#[tokio::test]
async fn an_append_records_the_length_it_states() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        if version.knows_length_and_limits() {
            let path = ietf.start(None, b"").await;
            let response = ietf
                .appending(&path, 0, false)
                .header("Upload-Length", "30")
                .body(vec![2; 10])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "{version}");
            assert_eq!(integer(&response, "upload-length"), Some(30), "{version}");
            let head = ietf.head(&path).await;
            assert_eq!(integer(&head, "upload-length"), Some(30), "{version}");
        }
        let path = ietf.start(None, b"01234").await;
        assert_eq!(
            field(&tus_head(&server, &path).await, "upload-defer-length").as_deref(),
            Some("1")
        );
        // Upload-Complete: ?1 and a Content-Length of 25 at offset 5: the length is 30.
        let head = ietf.raw_append(&path, 5, true, content_length(25));
        let _connection = send_then_close(&server, &head, &[3; 10]).await;
        settled(&server, &ietf::id(&path), 15).await;
        let tus = tus_head(&server, &path).await;
        assert_eq!(integer(&tus, "upload-length"), Some(30), "{version}");
        assert_eq!(integer(&tus, "upload-offset"), Some(15), "{version}");
    }
}

// --- State: Limits ----------------------------------------------------------------------------

/// §Limits: "When responding to an `OPTIONS` request without the `Upload-Complete` header
/// field, if the resource that is the target of the request supports the creation of a
/// resumable upload resource, the server MUST include the `Upload-Limit` header field with the
/// corresponding limits in the response." The size limit is `max-size`, the lifetime of an
/// upload `max-age` (`expires` in interop 6).
#[tokio::test]
async fn options_announces_the_limits() {
    let server = TestServer::start_with(ServiceConfig {
        max_size: Some(5000),
        expire_after: Some(Duration::from_secs(3600)),
        ..common::config()
    })
    .await;
    for version in Version::from(6) {
        let ietf = Ietf::new(&server, version);
        let response = ietf
            .request(Method::OPTIONS, "/files/")
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{version}");
        let limits = limits(&response).unwrap_or_else(|| panic!("{version}: no Upload-Limit"));
        assert_eq!(limits.get("max-size"), Some(&5000), "{version}: {limits:?}");
        assert_eq!(
            limits.get(version.lifetime_limit()),
            Some(&3600),
            "{version}: {limits:?}"
        );
        let other = if version.lifetime_limit() == "max-age" {
            "expires"
        } else {
            "max-age"
        };
        assert!(!limits.contains_key(other), "{version}: {limits:?}");
    }
}

/// §Limits: "If the server does not apply any limits, it MUST use `min-size=0` instead of an
/// empty header value."
#[tokio::test]
async fn no_limits_are_announced_as_min_size_0() {
    let server = TestServer::start_with(ServiceConfig {
        max_size: None,
        expire_after: None,
        ..common::config()
    })
    .await;
    for version in Version::from(6) {
        let ietf = Ietf::new(&server, version);
        let options = ietf
            .request(Method::OPTIONS, "/files/")
            .send()
            .await
            .unwrap();
        assert_eq!(
            field(&options, "upload-limit").as_deref(),
            Some("min-size=0")
        );
        let created = ietf.create(false, Vec::new()).await;
        assert_eq!(
            field(&created, "upload-limit").as_deref(),
            Some("min-size=0")
        );
        let head = ietf.head(&path_of(&created)).await;
        assert_eq!(field(&head, "upload-limit").as_deref(), Some("min-size=0"));
    }
}

/// §Limits: "`max-size` and `max-append-size` SHOULD NOT decrease. [...] Between subsequent
/// responses, the end of the upload resource's lifetime as implied by `max-age` SHOULD NOT
/// decrease." Over a creation, retrievals an hour apart and an append, `max-size` stays and the
/// end of the lifetime (the time of the response plus `max-age`) does not move back (beyond
/// the second `max-age` is counted in).
#[tokio::test]
async fn limits_never_tighten_over_an_uploads_life() {
    let server = TestServer::start().await;
    for version in Version::from(6) {
        let ietf = Ietf::new(&server, version);
        let lifetime = version.lifetime_limit();
        let mut seen: Vec<(u64, SystemTime)> = Vec::new();
        let mut note = |response: &reqwest::Response| {
            let limits = limits(response).expect("Upload-Limit");
            let end = server.clock.now() + Duration::from_secs(limits[lifetime]);
            seen.push((limits["max-size"], end));
        };
        let created = ietf.create(false, b"abc".to_vec()).await;
        note(&created);
        let path = path_of(&created);
        server.clock.advance(Duration::from_secs(3600));
        note(&ietf.head(&path).await);
        server.clock.advance(Duration::from_secs(3600));
        note(&ietf.append(&path, 3, false, b"def").await);
        server.clock.advance(Duration::from_secs(60));
        note(&ietf.head(&path).await);
        for pair in seen.windows(2) {
            let ((size_before, end_before), (size_after, end_after)) = (pair[0], pair[1]);
            assert!(size_after >= size_before, "{version}: {seen:?}");
            assert!(
                end_after + Duration::from_secs(1) >= end_before,
                "{version}: the lifetime's end moved back: {seen:?}"
            );
        }
    }
}

/// §Limits: "the limits announced in an `OPTIONS` response SHOULD NOT be less restrictive than
/// the limits applied to an upload once the upload resource has been created". A new upload
/// may take as much as `OPTIONS` said, for as long (within the second `max-age` counts in).
#[tokio::test]
async fn options_promises_no_more_than_an_upload_gets() {
    let server = TestServer::start().await;
    for version in Version::from(6) {
        let ietf = Ietf::new(&server, version);
        let lifetime = version.lifetime_limit();
        let options = ietf
            .request(Method::OPTIONS, "/files/")
            .send()
            .await
            .unwrap();
        let announced = limits(&options).expect("Upload-Limit");
        let created = ietf.create(false, Vec::new()).await;
        let applied = limits(&created).expect("Upload-Limit");
        assert_eq!(announced["max-size"], MAX_SIZE, "{version}");
        assert!(applied["max-size"] >= announced["max-size"], "{version}");
        assert!(
            applied[lifetime] + 1 >= announced[lifetime],
            "{version}: {announced:?} then {applied:?}"
        );
    }
}

/// §Limits: "A server responding with a `413 (Content Too Large)` status code as a result of
/// its upload limits SHOULD include the `Upload-Limit` header field in this response if
/// possible." A creation whose length is over `max-size`, and an append over it.
#[tokio::test]
async fn a_413_for_a_limit_says_the_limits() {
    const MAX: u64 = 1000;
    let server = TestServer::start_with(ServiceConfig {
        max_size: Some(MAX),
        ..common::config()
    })
    .await;
    for version in Version::from(6) {
        let ietf = Ietf::new(&server, version);
        let creation = ietf
            .creation(false)
            .header("Upload-Length", (MAX + 1).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(
            creation.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "{version}"
        );
        let limits_of = |response: &reqwest::Response| limits(response).unwrap_or_default();
        assert_eq!(
            limits_of(&creation).get("max-size"),
            Some(&MAX),
            "{version}"
        );
        let path = ietf.start(None, b"").await;
        let append = ietf.append(&path, 0, false, &[0; MAX as usize + 1]).await;
        assert_eq!(append.status(), StatusCode::PAYLOAD_TOO_LARGE, "{version}");
        assert_eq!(limits_of(&append).get("max-size"), Some(&MAX), "{version}");
    }
}

// --- Upload Creation ----------------------------------------------------------------------------

/// §Upload Creation, Server Behavior: "If the `Upload-Complete` request header field is set to
/// false, the client intends to transfer the representation over multiple requests. If the
/// request content was fully processed, the server MUST include the `Location` response header
/// field pointing to the upload resource and MUST include the `Upload-Limit` header field with
/// the corresponding limits if existing. Servers are RECOMMENDED to use the `201 (Created)`
/// status code." With content and without.
#[tokio::test]
async fn an_incomplete_creation_answers_location_and_limits() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        for content in [&b""[..], b"first part"] {
            let mut request = ietf.creation(false).body(content.to_vec());
            if version.knows_length_and_limits() {
                request = request.header("Upload-Length", "100");
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED, "{version}");
            assert!(field(&response, "location").is_some(), "{version}");
            if version.knows_length_and_limits() {
                let limits = limits(&response).unwrap_or_else(|| panic!("{version}: no limit"));
                assert_eq!(limits.get("max-size"), Some(&MAX_SIZE), "{version}");
                assert!(limits[version.lifetime_limit()] <= DAY, "{version}");
            }
            // It points to the upload resource: the content is there.
            let path = path_of(&response);
            assert_eq!(offset_of(&response), content.len() as u64, "{version}");
            assert_eq!(ietf.offset(&path).await, content.len() as u64, "{version}");
            assert!(!ietf.is_complete(&path).await, "{version}");
        }
    }
}

/// §Upload Creation, Server Behavior: "If the `Upload-Complete` request header field is set to
/// true, the client intends to transfer the entire representation data in one request. If the
/// request content was fully processed, no resumable upload is needed and the server proceeds
/// to process the request and generate a response." — and §Upload Creation, Client Behavior:
/// "The request content can be empty. If the `Upload-Complete` header field is then set to
/// true, the client intends to upload an empty representation."
#[tokio::test]
async fn a_complete_creation_is_the_whole_representation() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        for content in [pattern(3000, version.0), Vec::new()] {
            let response = ietf.create(true, content.clone()).await;
            assert!(response.status().is_success(), "{version}");
            assert_eq!(version.says_complete(response.headers()), Some(true));
            let path = path_of(&response);
            assert!(ietf.is_complete(&path).await, "{version}");
            assert_eq!(common::download(&server, &path).await, content, "{version}");
        }
    }
}

/// §Upload Creation, Server Behavior: "The server SHOULD include the `Upload-Complete` header
/// field in the response to indicate whether it is the result of processing the uploaded
/// representation." A creation answers it whether it completed the upload, did not, or was
/// refused.
#[tokio::test]
async fn creation_responses_say_whether_the_upload_is_complete() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let incomplete = ietf.create(false, b"abc".to_vec()).await;
        assert_eq!(version.says_complete(incomplete.headers()), Some(false));
        let complete = ietf.create(true, b"abc".to_vec()).await;
        assert_eq!(version.says_complete(complete.headers()), Some(true));
        let refused = ietf
            .creation(true)
            .header("Content-Digest", sha256_digest(b"not it"))
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{version}");
        assert_eq!(version.says_complete(refused.headers()), Some(false));
    }
}

/// §Upload Creation, Server Behavior: "The server might not process the entire request
/// content when the upload is interrupted, for example because of dropped connection or
/// canceled request. In this case, the server SHOULD append as much of the request content as
/// possible to the upload resource, allowing the client to resume the upload from where it was
/// interrupted. In addition, the upload resource MUST NOT be considered complete then." A
/// creation with `Upload-Complete: ?1` whose content (sized, or chunked) stops half-way.
#[tokio::test]
async fn an_interrupted_creation_keeps_what_arrived_and_is_not_complete() {
    let server = TestServer::start().await;
    let whole = pattern(200_000, 21);
    let half = &whole[..100_000];
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        for sized in [true, false] {
            let before = server.upload_ids();
            let (head, sent) = if sized {
                let head = ietf.raw_creation(true, content_length(whole.len()));
                (head, half.to_vec())
            } else {
                let head = ietf.raw_creation(true, chunked());
                let pieces: Vec<u8> = half.chunks(30_000).flat_map(chunk).collect();
                (head, pieces)
            };
            let mut connection = send_then_close(&server, &head, &sent).await;
            let id = ietf::new_upload(&server, &before).await;
            settled(&server, &id, half.len() as u64).await;
            let path = ietf::path(&id);
            assert_eq!(
                ietf.offset(&path).await,
                half.len() as u64,
                "{version} {sized}"
            );
            assert!(!ietf.is_complete(&path).await, "{version} {sized}");
            assert_eq!(download_status(&server, &path).await, StatusCode::CONFLICT);
            assert_eq!(ietf::data(&server, &id), half, "{version} {sized}");
            // If the client hears the answer, it says where to resume.
            let answer = read_response_head(&mut connection).await;
            if !answer.is_empty() {
                assert!(answer.contains(&format!("/files/{id}")), "{answer}");
            }
            let rest = ietf
                .append(&path, half.len() as u64, true, &whole[half.len()..])
                .await;
            assert_eq!(rest.status(), StatusCode::NO_CONTENT, "{version} {sized}");
            assert_eq!(common::download(&server, &path).await, whole);
        }
    }
}

// --- Offset Retrieval ---------------------------------------------------------------------------

/// The offset retrievals of `version`: `HEAD`, and `GET` where the version defines it.
fn retrievals(version: Version) -> Vec<Method> {
    let mut methods = vec![Method::HEAD];
    if version.get_retrieves_offset() {
        methods.push(Method::GET);
    }
    methods
}

/// §Offset Retrieval, Server Behavior: "A successful response to a `HEAD` or `GET` request
/// against an upload resource MUST include the offset in the `Upload-Offset` header field".
#[tokio::test]
async fn offset_retrieval_includes_the_offset() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"1234567").await;
        for method in retrievals(version) {
            let response = ietf.request(method.clone(), &path).send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::NO_CONTENT,
                "{version} {method}"
            );
            assert_eq!(
                integer(&response, "upload-offset"),
                Some(7),
                "{version} {method}"
            );
        }
        ietf.append(&path, 7, false, b"89").await;
        for method in retrievals(version) {
            let response = ietf.request(method.clone(), &path).send().await.unwrap();
            assert_eq!(
                integer(&response, "upload-offset"),
                Some(9),
                "{version} {method}"
            );
        }
    }
}

/// §Offset Retrieval, Server Behavior: a successful response "MUST include the
/// `Upload-Complete` header field indicating whether a final response was produced from
/// processing the uploaded representation".
#[tokio::test]
async fn offset_retrieval_says_whether_the_upload_is_complete() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"abc").await;
        for method in retrievals(version) {
            let response = ietf.request(method.clone(), &path).send().await.unwrap();
            assert_eq!(
                version.says_complete(response.headers()),
                Some(false),
                "{method}"
            );
        }
        let done = ietf.append(&path, 3, true, b"def").await;
        assert_eq!(done.status(), StatusCode::NO_CONTENT);
        for method in retrievals(version) {
            let response = ietf.request(method.clone(), &path).send().await.unwrap();
            assert_eq!(
                version.says_complete(response.headers()),
                Some(true),
                "{method}"
            );
        }
    }
}

/// §Offset Retrieval, Server Behavior: a successful response "MUST include the length in the
/// `Upload-Length` header field, unless the client has not supplied one, by providing the
/// corresponding headers as described in ({{upload-length}})".
#[tokio::test]
async fn offset_retrieval_includes_the_length_once_supplied() {
    let server = TestServer::start().await;
    for version in Version::from(6) {
        let ietf = Ietf::new(&server, version);
        let stated = ietf.start(Some(40), b"abc").await;
        let unknown = ietf.start(None, b"abc").await;
        for method in retrievals(version) {
            let response = ietf.request(method.clone(), &stated).send().await.unwrap();
            assert_eq!(
                integer(&response, "upload-length"),
                Some(40),
                "{version} {method}"
            );
            let response = ietf.request(method.clone(), &unknown).send().await.unwrap();
            assert_eq!(
                field(&response, "upload-length"),
                None,
                "{version} {method}"
            );
        }
        // Supplied by completing it: Upload-Complete: ?1 and a Content-Length.
        ietf.append(&unknown, 3, true, b"defg").await;
        for method in retrievals(version) {
            let response = ietf.request(method.clone(), &unknown).send().await.unwrap();
            assert_eq!(
                integer(&response, "upload-length"),
                Some(7),
                "{version} {method}"
            );
        }
    }
}

/// §Offset Retrieval, Server Behavior: a successful response "MUST indicate the limits in the
/// `Upload-Limit` header field". `max-age` (`expires`) is the upload's remaining lifetime.
#[tokio::test]
async fn offset_retrieval_indicates_the_limits() {
    let server = TestServer::start().await;
    for version in Version::from(6) {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"abc").await;
        server.clock.advance(Duration::from_secs(600));
        for method in retrievals(version) {
            let response = ietf.request(method.clone(), &path).send().await.unwrap();
            let limits = limits(&response).unwrap_or_else(|| panic!("{version} {method}"));
            assert_eq!(
                limits.get("max-size"),
                Some(&MAX_SIZE),
                "{version} {method}"
            );
            let lifetime = limits[version.lifetime_limit()];
            assert!(
                (DAY - 602..=DAY - 600).contains(&lifetime),
                "{version} {method}: {limits:?}"
            );
        }
    }
}

/// §Offset Retrieval, Server Behavior: a successful response "SHOULD include the
/// `Cache-Control` header field with the value `no-store` to prevent HTTP caching".
#[tokio::test]
async fn offset_retrieval_is_not_to_be_cached() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"abc").await;
        for method in retrievals(version) {
            let response = ietf.request(method.clone(), &path).send().await.unwrap();
            assert_eq!(
                field(&response, "cache-control").as_deref(),
                Some("no-store"),
                "{version} {method}"
            );
        }
    }
}

/// §Offset Retrieval, Client Behavior (interop 8): "It can fetch the offset by sending a
/// `HEAD` or `GET` request to the upload resource." — "serving response content for a `GET`
/// request is unexpected". Earlier versions define no `GET`: theirs is the download
/// (docs/protocols.md §7), which an incomplete upload refuses.
#[tokio::test]
async fn get_retrieves_the_offset_from_interop_8() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"abc").await;
        let get = ietf.request(Method::GET, &path).send().await.unwrap();
        if version.get_retrieves_offset() {
            assert_eq!(get.status(), StatusCode::NO_CONTENT, "{version}");
            assert_eq!(offset_of(&get), 3);
            assert!(get.bytes().await.unwrap().is_empty());
        } else {
            assert_eq!(get.status(), StatusCode::CONFLICT, "{version}");
            let complete = ietf.create(true, b"whole".to_vec()).await;
            let get = ietf
                .request(Method::GET, &path_of(&complete))
                .send()
                .await
                .unwrap();
            assert_eq!(get.status(), StatusCode::OK, "{version}");
            assert_eq!(get.bytes().await.unwrap(), &b"whole"[..]);
        }
    }
}

// --- Upload Append ------------------------------------------------------------------------------

/// §Upload Append, Server Behavior: "A server applies a `PATCH` request with the
/// `application/partial-upload` media type to an upload resource by appending the patch
/// document in the request content." From interop 6 an append of another media type is no
/// append (`415`, nothing written; docs/protocols.md §7); before, the media type is free.
#[tokio::test]
async fn appends_are_partial_upload_from_interop_6() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"").await;
        let mut offset = 0;
        for content_type in [Some(OCTETS), Some("text/plain"), None] {
            let response = ietf
                .appending_but(&path, offset, false, &[("content-type", content_type)])
                .body("abc")
                .send()
                .await
                .unwrap();
            if version.requires_partial_upload() {
                assert_eq!(
                    response.status(),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "{version}: {content_type:?}"
                );
                problem(response).await;
            } else {
                assert_eq!(response.status(), StatusCode::NO_CONTENT, "{version}");
                offset += 3;
            }
            assert_eq!(
                ietf.offset(&path).await,
                offset,
                "{version}: {content_type:?}"
            );
        }
        // Media types are case-insensitive and may carry parameters.
        for content_type in [
            "application/partial-upload",
            "Application/Partial-Upload; x=1",
        ] {
            let response = ietf
                .appending_but(
                    &path,
                    offset,
                    false,
                    &[("content-type", Some(content_type))],
                )
                .body("abc")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "{version}");
            offset += 3;
        }
    }
}

/// §Media Type `application/partial-upload`: "There is no minimum block size and the block
/// might be empty." An empty append is an append.
#[tokio::test]
async fn an_empty_append_is_accepted() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"abc").await;
        let response = ietf.append(&path, 3, false, b"").await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{version}");
        assert_eq!(offset_of(&response), 3);
        assert_eq!(version.says_complete(response.headers()), Some(false));
    }
}

/// §Upload Append, Server Behavior: "The server might not process the entire patch document
/// when the upload is interrupted, for example because of a dropped connection or canceled
/// request. In this case, the server SHOULD append as much of the patch document as possible
/// to the upload resource, starting at its beginning and without discontinuities. [...] In
/// addition, the upload resource MUST NOT be considered complete then." An append with
/// `Upload-Complete: ?1` whose content stops half-way.
#[tokio::test]
async fn an_interrupted_append_keeps_what_arrived_and_is_not_complete() {
    let server = TestServer::start().await;
    let whole = pattern(300_000, 31);
    let (first, half) = (&whole[..1000], &whole[1000..150_000]);
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, first).await;
        let head = ietf.raw_append(&path, 1000, true, content_length(whole.len() - 1000));
        let _connection = send_then_close(&server, &head, half).await;
        settled(&server, &ietf::id(&path), 150_000).await;
        assert_eq!(ietf.offset(&path).await, 150_000, "{version}");
        assert!(!ietf.is_complete(&path).await, "{version}");
        assert_eq!(download_status(&server, &path).await, StatusCode::CONFLICT);
        assert_eq!(ietf::data(&server, &ietf::id(&path)), &whole[..150_000]);
        let rest = ietf.append(&path, 150_000, true, &whole[150_000..]).await;
        assert_eq!(rest.status(), StatusCode::NO_CONTENT, "{version}");
        assert_eq!(common::download(&server, &path).await, whole);
    }
}

/// §Upload Append, Server Behavior: "If the `Upload-Offset` request header field value does not
/// match the current offset, the server MUST reject the request with a `409 (Conflict)` status
/// code and the `Upload-Complete` header field set to false. The response MUST include the
/// correct offset in the `Upload-Offset` header field." Below the offset, past it, and on a
/// completed upload; nothing is written.
#[tokio::test]
async fn a_mismatching_offset_is_409_with_the_correct_offset() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"0123456789").await;
        let stored = server.stored_bytes();
        for (offset, complete) in [(4, false), (20, false), (0, true), (11, true)] {
            let response = ietf.append(&path, offset, complete, b"abc").await;
            assert_eq!(
                response.status(),
                StatusCode::CONFLICT,
                "{version} at {offset}"
            );
            assert_eq!(version.says_complete(response.headers()), Some(false));
            assert_eq!(offset_of(&response), 10, "{version} at {offset}");
        }
        assert_eq!(server.stored_bytes(), stored, "{version}");
        assert_eq!(ietf.offset(&path).await, 10);
        let completed = ietf.create(true, b"whole".to_vec()).await;
        let response = ietf.append(&path_of(&completed), 2, false, b"abc").await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "{version}");
        assert_eq!(version.says_complete(response.headers()), Some(false));
        assert_eq!(offset_of(&response), 5, "{version}");
    }
}

/// §Mismatching Offset: "Two problem type extension members are defined: the `expected-offset`
/// and `provided-offset` members. A response using this problem type SHOULD populate both
/// members, with the value of `expected-offset` taken from the upload resource and the value of
/// `provided-offset` taken from the upload append request."
#[tokio::test]
async fn a_mismatching_offset_problem_names_both_offsets() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"0123456789").await;
        let response = ietf.append(&path, 25, false, b"abc").await;
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let problem = problem(response).await;
        assert_eq!(problem["type"], MISMATCHING_OFFSET, "{version}: {problem}");
        assert_eq!(problem["expected-offset"], 10, "{version}: {problem}");
        assert_eq!(problem["provided-offset"], 25, "{version}: {problem}");
    }
}

/// §Upload Append, Server Behavior: "If the `Upload-Complete` request header field is set to
/// true, [...] If the request content was fully processed, the upload is marked as complete
/// and [...] the response MUST include the `Upload-Complete` header field with a true value".
/// With the last bytes as content, and with none once every byte is there (§Upload Append,
/// Client Behavior: "the request has no content. Once the request is processed by the server,
/// the upload is complete.").
#[tokio::test]
async fn an_append_that_completes_the_upload_says_so() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"0123456789").await;
        let response = ietf.append(&path, 10, true, b"abcdef").await;
        assert!(response.status().is_success(), "{version}");
        assert_eq!(
            version.says_complete(response.headers()),
            Some(true),
            "{version}"
        );
        assert!(ietf.is_complete(&path).await);
        assert_eq!(common::download(&server, &path).await, b"0123456789abcdef");

        let path = ietf.start(None, b"all of it").await;
        let response = ietf.append(&path, 9, true, b"").await;
        assert!(response.status().is_success(), "{version}");
        assert_eq!(
            version.says_complete(response.headers()),
            Some(true),
            "{version}"
        );
        assert_eq!(common::download(&server, &path).await, b"all of it");
    }
}

/// §Upload Append, Server Behavior: "If the `Upload-Complete` request header field is set to
/// false, the client intends to transfer the remaining representation data over multiple
/// requests. If the request content was fully processed, the server acknowledges the appended
/// data by sending a `2xx (Successful)` response with the `Upload-Complete` header field set to
/// false." (The content here stops short of the length: an append that stores the last
/// declared byte completes the upload whatever it says, and answers `?1` — docs/protocols.md
/// §7, the engine's rule, where the draft would leave the upload open.)
#[tokio::test]
async fn an_append_that_does_not_complete_is_acknowledged_as_incomplete() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = if version.knows_length_and_limits() {
            ietf.start(Some(100), b"0123456789").await
        } else {
            ietf.start(None, b"0123456789").await
        };
        let response = ietf.append(&path, 10, false, &[5; 40]).await;
        assert!(response.status().is_success(), "{version}");
        assert_eq!(
            version.says_complete(response.headers()),
            Some(false),
            "{version}"
        );
        assert_eq!(offset_of(&response), 50, "{version}");
        assert!(!ietf.is_complete(&path).await);
    }
}

/// §Upload Append, Server Behavior: "The server SHOULD include the `Upload-Complete` header
/// field in the response to indicate whether it is the result of processing the uploaded
/// representation." Successes and refusals of appends all say it.
#[tokio::test]
async fn append_responses_say_whether_the_upload_is_complete() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"abc").await;
        let answers = [
            (ietf.append(&path, 3, false, b"d").await, false),
            (ietf.append(&path, 9, false, b"d").await, false),
            (
                ietf.appending(&path, 4, false)
                    .header("Content-Digest", sha256_digest(b"x"))
                    .body("e")
                    .send()
                    .await
                    .unwrap(),
                false,
            ),
            (ietf.append(&path, 4, true, b"e").await, true),
            (ietf.append(&path, 5, false, b"f").await, false),
        ];
        for (index, (response, complete)) in answers.iter().enumerate() {
            assert_eq!(
                version.says_complete(response.headers()),
                Some(*complete),
                "{version}: answer {index} ({})",
                response.status()
            );
        }
    }
}

/// §Upload Append, Server Behavior: "If the length is known, the server MUST prevent the
/// offset from exceeding the upload length by rejecting the request once the offset exceeds
/// the length [...] It is not sufficient to rely on the `Content-Length` header field for
/// enforcement because this header field might not be present." Content announced past the
/// length is refused before a byte is stored; chunked content past it is refused and stores
/// nothing past the length. (The elided part — "marking the upload resource invalid and
/// rejecting any further interaction with it" — the server does not do: it keeps the bytes up
/// to the length, which may complete the upload, as tus does; docs/protocols.md §1.)
#[tokio::test]
async fn appends_never_go_past_the_length() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = with_length(ietf, 10, b"abcd").await;
        let announced = ietf.append(&path, 4, false, b"efghijklmn").await;
        assert_eq!(
            announced.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "{version}"
        );
        assert_eq!(offset_of(&announced), 4, "{version}");
        assert_eq!(ietf.offset(&path).await, 4, "{version}");

        let unannounced = ietf
            .appending(&path, 4, false)
            .body(common::chunked(&[b"efg", b"hij", b"klmn"]))
            .send()
            .await
            .unwrap();
        assert!(unannounced.status().is_client_error(), "{version}");
        assert!(offset_of(&unannounced) <= 10, "{version}");
        assert!(ietf.offset(&path).await <= 10, "{version}");
        let stored = ietf::data(&server, &ietf::id(&path));
        assert!(stored.len() <= 10, "{version}: {stored:?}");
        assert!(b"abcdefghij".starts_with(&stored), "{version}: {stored:?}");
    }
}

// --- Upload Cancellation ------------------------------------------------------------------------

/// §Upload Cancellation, Server Behavior: "Upon receiving a `DELETE` request, the server SHOULD
/// deactivate the upload resource." Afterwards the upload is unknown to every request.
#[tokio::test]
async fn cancellation_deactivates_the_upload() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"abc").await;
        let response = ietf.request(Method::DELETE, &path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{version}");
        assert_eq!(ietf.head(&path).await.status(), StatusCode::NOT_FOUND);
        let append = ietf.append(&path, 3, true, b"def").await;
        assert_eq!(append.status(), StatusCode::NOT_FOUND, "{version}");
        let get = ietf.request(Method::GET, &path).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::NOT_FOUND, "{version}");
        assert_eq!(download_status(&server, &path).await, StatusCode::NOT_FOUND);
        let again = ietf.request(Method::DELETE, &path).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_FOUND, "{version}");
        assert!(!server.upload_ids().contains(&ietf::id(&path)));
    }
}

/// Bytes of an append held in flight by the concurrency tests: a multiple of the disk's block,
/// so all of them reach the data file while the body is still open.
const IN_FLIGHT: usize = 256 << 10;

/// Opens an append of `total` bytes at offset 0 on `path` and sends the first [`IN_FLIGHT`]
/// of `data`, waiting until they are in the data file; the connection stays open.
async fn append_in_flight(ietf: Ietf<'_>, path: &str, data: &[u8]) -> tokio::net::TcpStream {
    let head = ietf.raw_append(path, 0, true, content_length(data.len()));
    let connection = ietf.server.send_partial(&head, &data[..IN_FLIGHT]).await;
    ietf::on_disk(ietf.server, &ietf::id(path), IN_FLIGHT as u64).await;
    connection
}

/// §Upload Cancellation, Server Behavior: "The server SHOULD terminate any in-flight requests
/// to the upload resource before sending the response by abruptly terminating their HTTP
/// connection(s) or stream(s) as described in {{concurrency}}."
#[tokio::test]
async fn cancellation_ends_the_request_in_flight_first() {
    let server = TestServer::start().await;
    let data = pattern(2 * IN_FLIGHT, 41);
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"").await;
        let mut in_flight = append_in_flight(ietf, &path, &data).await;
        let cancelled = ietf.request(Method::DELETE, &path).send().await.unwrap();
        assert_eq!(cancelled.status(), StatusCode::NO_CONTENT, "{version}");
        // The request in flight has been ended: its answer (if it gets one) is no success.
        let answer = final_head(&mut in_flight).await;
        assert!(
            answer.is_empty() || !answer.starts_with("HTTP/1.1 2"),
            "{version}: {answer}"
        );
        assert_eq!(ietf.head(&path).await.status(), StatusCode::NOT_FOUND);
        assert!(!server.upload_ids().contains(&ietf::id(&path)), "{version}");
    }
}

// --- Concurrency --------------------------------------------------------------------------------

/// §Concurrency: "the server MUST NOT send outdated information in responses when retrieving
/// the offset. This means that the offset sent by the server MUST be accepted in a subsequent
/// request to append representation data if no other request to append representation data or
/// cancel was received in the meantime." — and: "If a server receives a new request to retrieve
/// the offset [...] while a previous request for creating the upload or appending
/// representation data to the same upload resource is still ongoing, the server SHOULD prevent
/// race conditions, data loss, and corruption by terminating the previous request before
/// processing the new request." An offset retrieval during an append, and during a creation:
/// the request in flight stops, and the offset answered counts every byte it had and is the
/// one the next append must use.
#[tokio::test]
async fn offset_retrieval_ends_the_request_in_flight_and_answers_a_current_offset() {
    let server = TestServer::start().await;
    let data = pattern(2 * IN_FLIGHT, 51);
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        for creation in [false, true] {
            let (path, mut in_flight) = if creation {
                let before = server.upload_ids();
                let head = ietf.raw_creation(true, content_length(data.len()));
                let connection = server.send_partial(&head, &data[..IN_FLIGHT]).await;
                let id = ietf::new_upload(&server, &before).await;
                ietf::on_disk(&server, &id, IN_FLIGHT as u64).await;
                (ietf::path(&id), connection)
            } else {
                let path = ietf.start(None, b"").await;
                let connection = append_in_flight(ietf, &path, &data).await;
                (path, connection)
            };
            let started = tokio::time::Instant::now();
            let retrieved = ietf.head(&path).await;
            assert_eq!(retrieved.status(), StatusCode::NO_CONTENT, "{version}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{version}: waited"
            );
            let offset = offset_of(&retrieved);
            assert_eq!(offset, IN_FLIGHT as u64, "{version} creation {creation}");
            // The old request was stopped, and told what it stored.
            let answer = final_head(&mut in_flight).await;
            assert!(answer.starts_with("HTTP/1.1 423"), "{version}: {answer}");
            assert!(
                answer
                    .to_ascii_lowercase()
                    .contains(&format!("upload-offset: {offset}")),
                "{version}: {answer}"
            );
            let rest = ietf.append(&path, offset, true, &data[IN_FLIGHT..]).await;
            assert_eq!(rest.status(), StatusCode::NO_CONTENT, "{version}");
            assert_eq!(common::download(&server, &path).await, data);
        }
    }
}

/// §Concurrency: "If a server receives a new request to [...] append representation data [...]
/// while a previous request for [...] appending representation data to the same upload
/// resource is still ongoing, the server SHOULD prevent race conditions, data loss, and
/// corruption by terminating the previous request before processing the new request." The new
/// append, at the offset the client last heard, is told the current offset (what the old one
/// stored) and nothing is mixed.
#[tokio::test]
async fn a_new_append_ends_the_request_in_flight() {
    let server = TestServer::start().await;
    let data = pattern(2 * IN_FLIGHT, 61);
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let path = ietf.start(None, b"").await;
        let mut in_flight = append_in_flight(ietf, &path, &data).await;
        // The client thinks nothing arrived, and starts over.
        let again = ietf.append(&path, 0, false, &data[..1000]).await;
        assert_eq!(again.status(), StatusCode::CONFLICT, "{version}");
        assert_eq!(offset_of(&again), IN_FLIGHT as u64, "{version}");
        let answer = final_head(&mut in_flight).await;
        assert!(answer.starts_with("HTTP/1.1 423"), "{version}: {answer}");
        let rest = ietf
            .append(&path, IN_FLIGHT as u64, true, &data[IN_FLIGHT..])
            .await;
        assert_eq!(rest.status(), StatusCode::NO_CONTENT, "{version}");
        assert_eq!(common::download(&server, &path).await, data);
    }
}

/// §Concurrency: "the server MUST take measures to prevent race conditions, data loss and
/// corruption from concurrent requests to append representation data and/or cancellation to
/// the same upload resource." Two appends at the same offset at once: whatever their order,
/// what is stored is a prefix of one of them, never a mix, and the offset counts exactly it.
#[tokio::test]
async fn concurrent_appends_never_mix() {
    let server = TestServer::start().await;
    let (one, other) = (pattern(400_000, 71), pattern(400_000, 72));
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        for _ in 0..3 {
            let path = ietf.start(None, b"").await;
            let send = |body: &[u8]| ietf.appending(&path, 0, true).body(body.to_vec()).send();
            let (first, second) = tokio::join!(send(&one), send(&other));
            // The one stopped may lose its connection before it hears why.
            for response in [first, second].into_iter().flatten() {
                let status = response.status();
                assert!(
                    [
                        StatusCode::NO_CONTENT,
                        StatusCode::CONFLICT,
                        StatusCode::LOCKED
                    ]
                    .contains(&status),
                    "{version}: {status}"
                );
            }
            let id = ietf::id(&path);
            server.released(&id).await;
            let offset = ietf.offset(&path).await as usize;
            let stored = ietf::data(&server, &id);
            assert_eq!(stored.len(), offset, "{version}");
            assert!(
                one.starts_with(&stored) || other.starts_with(&stored),
                "{version}: {offset} bytes that are neither's"
            );
        }
    }
}

// --- Integrity Digests --------------------------------------------------------------------------

/// §Content Digests: "If the digests don't match the server SHOULD consider the transfer
/// failed, not append the content to the upload resource, and signal the failure to the
/// client." A `sha-256` `Content-Digest` that matches is accepted; one that does not discards
/// the content (`400`, the offset unchanged), at creation and on an append.
#[tokio::test]
async fn content_digests_are_checked() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let wrong = ietf
            .creation(false)
            .header("Content-Digest", sha256_digest(b"not it"))
            .body("first")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST, "{version}");
        assert_eq!(offset_of(&wrong), 0, "{version}");
        let path = path_of(&wrong);
        problem(wrong).await;
        assert_eq!(ietf.offset(&path).await, 0, "{version}");
        let right = ietf
            .appending(&path, 0, false)
            .header("Content-Digest", sha256_digest(b"first"))
            .body("first")
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), StatusCode::NO_CONTENT, "{version}");
        let stored = server.stored_bytes();
        let wrong = ietf
            .appending(&path, 5, true)
            .header("Content-Digest", sha256_digest(b"other"))
            .body("second")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST, "{version}");
        assert_eq!(offset_of(&wrong), 5, "{version}");
        assert_eq!(server.stored_bytes(), stored, "{version}");
        assert!(!ietf.is_complete(&path).await, "{version}");
        let created = ietf
            .creation(true)
            .header("Content-Digest", sha256_digest(b"whole"))
            .body("whole")
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "{version}");
        assert_eq!(
            common::download(&server, &path_of(&created)).await,
            b"whole"
        );
    }
}

/// §Representation Digests: "If the digests don't match, the server SHOULD consider the upload
/// failed, not process the representation further, and signal the failure to the client." A
/// `Repr-Digest` given at creation that the whole upload matches: it completes and downloads.
/// One it does not match: the completing request is refused (and, its content being fully
/// processed, says `Upload-Complete: ?1` — §Upload Append, Server Behavior: "the response MUST
/// include the `Upload-Complete` header field with a true value, allowing clients to identify
/// whether a response, in particular error responses, is related to the resumable upload itself
/// or the processing of the uploaded representation"), and the upload never downloads.
#[tokio::test]
async fn repr_digests_are_checked_once_the_upload_is_complete() {
    let server = TestServer::start().await;
    let whole = pattern(5000, 81);
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        for matching in [true, false] {
            let digest = if matching {
                sha256_digest(&whole)
            } else {
                sha256_digest(b"something else")
            };
            let created = ietf
                .creation(false)
                .header("Repr-Digest", digest.clone())
                .body(whole[..2000].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), StatusCode::CREATED, "{version}");
            let path = path_of(&created);
            let last = ietf.append(&path, 2000, true, &whole[2000..]).await;
            if matching {
                assert_eq!(last.status(), StatusCode::NO_CONTENT, "{version}");
                assert_eq!(common::download(&server, &path).await, whole);
            } else {
                assert_eq!(last.status(), StatusCode::BAD_REQUEST, "{version}");
                assert_eq!(
                    version.says_complete(last.headers()),
                    Some(true),
                    "{version}"
                );
                problem(last).await;
                assert!(download_status(&server, &path).await.is_client_error());
                let replay = ietf.append(&path, 5000, true, b"").await;
                assert!(replay.status().is_client_error(), "{version}");
            }
            // The same in one request.
            let whole_at_once = ietf
                .creation(true)
                .header("Repr-Digest", digest)
                .body(whole.clone())
                .send()
                .await
                .unwrap();
            if matching {
                assert_eq!(whole_at_once.status(), StatusCode::CREATED, "{version}");
                let path = path_of(&whole_at_once);
                assert_eq!(common::download(&server, &path).await, whole);
            } else {
                assert_eq!(whole_at_once.status(), StatusCode::BAD_REQUEST, "{version}");
                let complete = version.says_complete(whole_at_once.headers());
                assert_eq!(complete, Some(true), "{version}");
                let path = path_of(&whole_at_once);
                assert!(download_status(&server, &path).await.is_client_error());
            }
        }
    }
}

/// RFC 9530 §4 (which §Integrity Digests builds on): a recipient "MAY ignore" digests in
/// algorithms it does not support. A `Content-Digest` or `Repr-Digest` in another algorithm
/// (`md5`, `crc32c`, a made-up one), however wrong, neither refuses nor fails anything.
#[tokio::test]
async fn digests_in_unsupported_algorithms_are_ignored() {
    let server = TestServer::start().await;
    let wrong = [
        "md5=:AAAAAAAAAAAAAAAAAAAAAA==:",
        "crc32c=:AAAAAA==:",
        "made-up=:AAAA:",
    ];
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        for digest in wrong {
            let created = ietf
                .creation(false)
                .header("Content-Digest", digest)
                .header("Repr-Digest", digest)
                .body("abc")
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), StatusCode::CREATED, "{version}: {digest}");
            let path = path_of(&created);
            let last = ietf
                .appending(&path, 3, true)
                .header("Content-Digest", digest)
                .body("def")
                .send()
                .await
                .unwrap();
            assert_eq!(last.status(), StatusCode::NO_CONTENT, "{version}: {digest}");
            assert_eq!(common::download(&server, &path).await, b"abcdef");
        }
    }
}

// --- Content and Transfer Codings --------------------------------------------------------------

/// §Transfer Codings: "a server is responsible for transfer decoding the message before
/// computing the upload offset." Chunked content counts its data, not its framing.
#[tokio::test]
async fn offsets_count_transfer_decoded_bytes() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let created = ietf
            .creation(false)
            .body(common::chunked(&[b"abc", b"defgh", b"i"]))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "{version}");
        assert_eq!(offset_of(&created), 9, "{version}");
        let path = path_of(&created);
        let last = ietf
            .appending(&path, 9, true)
            .body(common::chunked(&[b"jk", b"l"]))
            .send()
            .await
            .unwrap();
        assert_eq!(last.status(), StatusCode::NO_CONTENT, "{version}");
        assert_eq!(offset_of(&last), 12, "{version}");
        assert_eq!(common::download(&server, &path).await, b"abcdefghijkl");
    }
}

/// §Content Codings: "both the client and the server always compute the values for
/// `Upload-Offset` and optionally `Upload-Length` on the content coded data (that is, the
/// representation data). Moreover, the content codings are retained throughout the entire
/// upload". Content said to be gzip is stored and counted as sent, never decoded.
#[tokio::test]
async fn content_codings_are_kept() {
    let server = TestServer::start().await;
    // Not even valid gzip: the server is not to look.
    let coded = [0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let created = ietf
            .creation(true)
            .header("Content-Encoding", "gzip")
            .body(coded.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "{version}");
        assert_eq!(offset_of(&created), coded.len() as u64);
        assert_eq!(common::download(&server, &path_of(&created)).await, coded);
    }
}

// --- Security Considerations -------------------------------------------------------------------

/// §Security Considerations: "metadata MUST be validated and/or sanitized if the server takes
/// its values into consideration for processing or storing the representation." The file name
/// from `Content-Disposition` names downloads: only its last path component, with quotes and
/// control characters kept out of the header's plain `filename`.
#[tokio::test]
async fn file_names_from_content_disposition_are_sanitized() {
    let server = TestServer::start().await;
    let cases = [
        (
            r#"inline; filename="../../etc/passwd""#,
            r#"filename="passwd""#,
        ),
        (
            "inline; filename*=UTF-8''..%2F..%2Fa%22b%0Ac.txt",
            r#"filename="a_b_c.txt""#,
        ),
    ];
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        for (disposition, expected) in cases {
            let created = ietf
                .creation(true)
                .header("Content-Disposition", disposition)
                .body("abc")
                .send()
                .await
                .unwrap();
            assert_eq!(
                created.status(),
                StatusCode::CREATED,
                "{version}: {disposition}"
            );
            let download = server
                .client
                .get(server.url(&path_of(&created)))
                .send()
                .await
                .unwrap();
            let named = field(&download, "content-disposition").unwrap();
            assert!(named.starts_with("attachment"), "{named}");
            assert!(
                named.contains(expected),
                "{version}: {disposition} gave {named}"
            );
            assert!(!named.contains('/') && !named.contains('\n'), "{named}");
        }
    }
    assert!(!server.data_dir.join("etc").exists());
}

/// A server whose principals are named by the tokens in `tokens` (`TOKEN OWNER` lines), the
/// file kept in `dir`, and its `Auth` for reloading it.
async fn server_with_tokens(
    dir: &tempfile::TempDir,
    tokens: &str,
) -> (TestServer, Arc<Auth>, std::path::PathBuf) {
    let file = dir.path().join("tokens");
    std::fs::write(&file, tokens).unwrap();
    let auth = Arc::new(Auth::Tokens(TokensAuth::new(file.clone()).unwrap()));
    let server_config = ServerConfig {
        auth: auth.clone(),
        ..ServerConfig::default()
    };
    let server = TestServer::start_full(common::config(), server_config).await;
    (server, auth, file)
}

/// §Security Considerations: "Without further protection of this URI, an attacker may obtain
/// information about an upload, append data to it, or cancel it. To prevent this, the server
/// SHOULD ensure that only authorized clients can access the upload resource." Another
/// principal's offset retrieval, append and cancellation find no upload; a request without
/// credentials is refused; nothing changes.
#[tokio::test]
async fn only_the_uploads_owner_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _auth, _) = server_with_tokens(&dir, "t-alice alice\nt-bob bob\n").await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let as_alice = "Bearer t-alice";
        let created = ietf
            .creation(false)
            .header("Authorization", as_alice)
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "{version}");
        let path = path_of(&created);
        for credentials in [Some("Bearer t-bob"), None] {
            let expected = match credentials {
                Some(_) => StatusCode::NOT_FOUND,
                None => StatusCode::UNAUTHORIZED,
            };
            let with = |request: reqwest::RequestBuilder| match credentials {
                Some(credentials) => request.header("Authorization", credentials),
                None => request,
            };
            let requests = [
                with(ietf.request(Method::HEAD, &path)),
                with(ietf.appending(&path, 3, true)).body("def"),
                with(ietf.request(Method::DELETE, &path)),
                with(ietf.request(Method::GET, &path)),
            ];
            for request in requests {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), expected, "{version}: {credentials:?}");
            }
        }
        let head = ietf
            .request(Method::HEAD, &path)
            .header("Authorization", as_alice)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::NO_CONTENT, "{version}");
        assert_eq!(offset_of(&head), 3, "{version}");
        assert_eq!(version.says_complete(head.headers()), Some(false));
    }
}

/// §Security Considerations: "Policy decisions or authorization checks performed on the
/// initial request might become outdated or invalid by the time the upload completes. [...]
/// the server SHOULD validate that the user is still allowed to perform the requested action
/// before finalizing the upload." A principal whose credentials were withdrawn after the
/// creation cannot finish the upload with them.
#[tokio::test]
async fn the_request_that_finishes_an_upload_is_authorized_again() {
    let dir = tempfile::tempdir().unwrap();
    let (server, auth, file) = server_with_tokens(&dir, "t-old alice\n").await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        std::fs::write(&file, "t-old alice\n").unwrap();
        auth.reload().unwrap();
        let created = ietf
            .creation(false)
            .header("Authorization", "Bearer t-old")
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "{version}");
        let path = path_of(&created);
        // The token is withdrawn; alice gets a new one.
        std::fs::write(&file, "t-new alice\n").unwrap();
        auth.reload().unwrap();
        let finishing = ietf
            .appending(&path, 3, true)
            .header("Authorization", "Bearer t-old")
            .body("def")
            .send()
            .await
            .unwrap();
        assert_eq!(finishing.status(), StatusCode::UNAUTHORIZED, "{version}");
        let head = ietf
            .request(Method::HEAD, &path)
            .header("Authorization", "Bearer t-new")
            .send()
            .await
            .unwrap();
        assert_eq!(offset_of(&head), 3, "{version}");
        assert_eq!(version.says_complete(head.headers()), Some(false));
    }
}
