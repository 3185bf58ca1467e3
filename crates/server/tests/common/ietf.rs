//! A client of the IETF draft "Resumable Uploads for HTTP" for tests, written from the drafts'
//! text rather than from the server's tables: what each interop version calls its fields, how
//! it says "complete", and what it knows of.

use super::TestServer;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::collections::BTreeMap;
use std::fmt;

pub const INTEROP_VERSION: &str = "Upload-Draft-Interop-Version";
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";
pub const PROBLEM_JSON: &str = "application/problem+json";
pub const MISMATCHING_OFFSET: &str =
    "https://iana.org/assignments/http-problem-types#mismatching-upload-offset";
pub const INCONSISTENT_LENGTH: &str =
    "https://iana.org/assignments/http-problem-types#inconsistent-upload-length";
pub const COMPLETED_UPLOAD: &str =
    "https://iana.org/assignments/http-problem-types#completed-upload";

/// An interop version of the draft (its `Upload-Draft-Interop-Version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u8);

/// Every version the server serves, oldest first.
pub const VERSIONS: [Version; 6] = [
    Version(3),
    Version(4),
    Version(5),
    Version(6),
    Version(7),
    Version(8),
];

impl Version {
    /// The served versions from `first` on.
    pub fn from(first: u8) -> impl Iterator<Item = Version> {
        VERSIONS
            .into_iter()
            .filter(move |version| version.0 >= first)
    }

    /// The field that says whether the upload is complete: draft -01 (interop 3) has
    /// `Upload-Incomplete`, the inverse; draft -02 (interop 4) and later `Upload-Complete`.
    pub fn completeness_field(self) -> &'static str {
        if self.0 == 3 {
            "upload-incomplete"
        } else {
            "upload-complete"
        }
    }

    /// The value of [`Version::completeness_field`] that means "complete" = `complete`.
    pub fn completeness(self, complete: bool) -> &'static str {
        let value = if self.0 == 3 { !complete } else { complete };
        if value { "?1" } else { "?0" }
    }

    /// Drafts -04 and -05 (interop 6) added `Upload-Length`, `Upload-Limit` and the
    /// `application/partial-upload` media type of appends.
    pub fn knows_length_and_limits(self) -> bool {
        self.0 >= 6
    }

    /// From interop 6 an append must be `application/partial-upload`.
    pub fn requires_partial_upload(self) -> bool {
        self.0 >= 6
    }

    /// The `Upload-Limit` member of the remaining lifetime: `expires` in drafts -04/-05,
    /// `max-age` from draft -06 (interop 7).
    pub fn lifetime_limit(self) -> &'static str {
        if self.0 == 6 { "expires" } else { "max-age" }
    }

    /// From draft -09 (interop 8) a field whose value is not what the draft defines is ignored.
    pub fn ignores_invalid_fields(self) -> bool {
        self.0 >= 8
    }

    /// From interop 8 a `GET` of the upload resource retrieves the offset, as `HEAD` does.
    pub fn get_retrieves_offset(self) -> bool {
        self.0 >= 8
    }

    /// What a response says about completeness, read as this version writes it: `None` when
    /// the field is absent or not a Boolean.
    pub fn says_complete(self, headers: &HeaderMap) -> Option<bool> {
        let value = headers.get(self.completeness_field())?.to_str().ok()?;
        match value.trim() {
            "?1" => Some(self.0 != 3),
            "?0" => Some(self.0 == 3),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "interop {}", self.0)
    }
}

/// Requests of one interop version to one server.
#[derive(Clone, Copy)]
pub struct Ietf<'a> {
    pub server: &'a TestServer,
    pub version: Version,
}

impl<'a> Ietf<'a> {
    pub fn new(server: &'a TestServer, version: Version) -> Self {
        Ietf { server, version }
    }

    /// Any request, naming the interop version.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.server
            .client
            .request(method, self.server.url(path))
            .header(INTEROP_VERSION, self.version.0.to_string())
    }

    /// `POST /files/` saying whether its content completes the upload.
    pub fn creation(&self, complete: bool) -> RequestBuilder {
        self.request(Method::POST, "/files/").header(
            self.version.completeness_field(),
            self.version.completeness(complete),
        )
    }

    pub async fn create(&self, complete: bool, content: Vec<u8>) -> Response {
        self.creation(complete)
            .body(content)
            .send()
            .await
            .expect("POST")
    }

    /// An upload created incomplete with `first` as its content, with `Upload-Length` when
    /// given (interop 6 and later only): its path.
    pub async fn start(&self, length: Option<u64>, first: &[u8]) -> String {
        let mut request = self.creation(false);
        if let Some(length) = length {
            assert!(self.version.knows_length_and_limits());
            request = request.header("Upload-Length", length.to_string());
        }
        let response = request.body(first.to_vec()).send().await.expect("POST");
        assert_eq!(response.status(), StatusCode::CREATED, "{}", self.version);
        super::path_of(&response)
    }

    /// `PATCH` at `offset`, `application/partial-upload`, saying whether it completes.
    pub fn appending(&self, path: &str, offset: u64, complete: bool) -> RequestBuilder {
        self.appending_but(path, offset, complete, &[])
    }

    /// [`Ietf::appending`] with some of its fields replaced: each of `replaced` names one and
    /// gives its value instead, or `None` to leave it out. (A builder's `header` adds a second
    /// value rather than replacing the first.)
    pub fn appending_but(
        &self,
        path: &str,
        offset: u64,
        complete: bool,
        replaced: &[(&str, Option<&str>)],
    ) -> RequestBuilder {
        let offset = offset.to_string();
        let fields = [
            ("content-type", PARTIAL_UPLOAD),
            ("upload-offset", offset.as_str()),
            (
                self.version.completeness_field(),
                self.version.completeness(complete),
            ),
        ];
        let mut request = self.request(Method::PATCH, path);
        for (name, value) in fields {
            let replacement = replaced
                .iter()
                .find(|(other, _)| other.eq_ignore_ascii_case(name));
            match replacement {
                Some((_, Some(value))) => request = request.header(name, *value),
                Some((_, None)) => {}
                None => request = request.header(name, value),
            }
        }
        request
    }

    pub async fn append(&self, path: &str, offset: u64, complete: bool, body: &[u8]) -> Response {
        self.appending(path, offset, complete)
            .body(body.to_vec())
            .send()
            .await
            .expect("PATCH")
    }

    pub async fn head(&self, path: &str) -> Response {
        self.request(Method::HEAD, path).send().await.expect("HEAD")
    }

    /// `Upload-Offset` of an offset retrieval that must succeed (`204`).
    pub async fn offset(&self, path: &str) -> u64 {
        let response = self.head(path).await;
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "{}",
            self.version
        );
        integer(&response, "upload-offset").expect("Upload-Offset")
    }

    /// Whether an offset retrieval says the upload is complete.
    pub async fn is_complete(&self, path: &str) -> bool {
        let response = self.head(path).await;
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "{}",
            self.version
        );
        self.version
            .says_complete(response.headers())
            .expect("a completeness field")
    }

    /// The head of a raw HTTP/1.1 request of this version, with `extra` header fields; the
    /// caller adds `Content-Length` or `Transfer-Encoding` and sends the body.
    pub fn raw_head(&self, method: &str, path: &str, extra: &[(&str, String)]) -> String {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{INTEROP_VERSION}: {}\r\n",
            self.server.address, self.version.0
        );
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head
    }

    /// `raw_head` of a creation saying whether it completes the upload.
    pub fn raw_creation(&self, complete: bool, framing: (&str, String)) -> String {
        let completeness = (
            self.version.completeness_field(),
            self.version.completeness(complete).to_owned(),
        );
        self.raw_head("POST", "/files/", &[completeness, framing])
    }

    /// `raw_head` of an append at `offset` saying whether it completes the upload.
    pub fn raw_append(
        &self,
        path: &str,
        offset: u64,
        complete: bool,
        framing: (&str, String),
    ) -> String {
        let fields = [
            ("Content-Type", PARTIAL_UPLOAD.to_owned()),
            ("Upload-Offset", offset.to_string()),
            (
                self.version.completeness_field(),
                self.version.completeness(complete).to_owned(),
            ),
            framing,
        ];
        self.raw_head("PATCH", path, &fields)
    }
}

/// `Content-Length: length`, for [`Ietf::raw_head`].
pub fn content_length(length: usize) -> (&'static str, String) {
    ("Content-Length", length.to_string())
}

/// `Transfer-Encoding: chunked`, for [`Ietf::raw_head`].
pub fn chunked() -> (&'static str, String) {
    ("Transfer-Encoding", "chunked".to_owned())
}

/// One HTTP/1.1 chunk carrying `data`.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(b"\r\n");
    chunk
}

/// A response field as text.
pub fn field(response: &Response, name: &str) -> Option<String> {
    Some(
        response
            .headers()
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .to_owned(),
    )
}

/// A response field that must be a non-negative Integer.
pub fn integer(response: &Response, name: &str) -> Option<u64> {
    let text = field(response, name)?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name}: {text:?} is not a non-negative Integer")),
    )
}

/// The members of `Upload-Limit` (a Dictionary of Integers), `None` when the field is absent.
pub fn limits(response: &Response) -> Option<BTreeMap<String, u64>> {
    let text = field(response, "upload-limit")?;
    let members = text
        .split(',')
        .map(|member| {
            let (key, value) = member
                .split_once('=')
                .unwrap_or_else(|| panic!("Upload-Limit member {member:?} has no value"));
            let value = value
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("Upload-Limit member {member:?} is not an Integer"));
            (key.trim().to_owned(), value)
        })
        .collect();
    Some(members)
}

/// The problem details (RFC 9457) of a refusal, which must be `application/problem+json`.
pub async fn problem(response: Response) -> serde_json::Value {
    let content_type = field(&response, "content-type").unwrap_or_default();
    assert!(
        content_type.starts_with(PROBLEM_JSON),
        "a {} answered {content_type:?}, not {PROBLEM_JSON}",
        response.status()
    );
    let body = response.text().await.expect("problem body");
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

/// `Content-Digest` / `Repr-Digest` of `bytes` in `sha-256` (RFC 9530).
pub fn sha256_digest(bytes: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Sends `head` and the first `body` bytes, then closes the sending side: an orderly end, so
/// every byte sent arrives, and the body is cut short. The answer, if any, can still be read.
pub async fn send_then_close(
    server: &TestServer,
    head: &str,
    body: &[u8],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = server.send_partial(head, body).await;
    stream.shutdown().await.expect("close the sending side");
    stream
}

/// The length of upload `id`'s data file (0 while it has none).
pub fn data_length(server: &TestServer, id: &str) -> u64 {
    let path = server.data_dir.join("uploads").join(format!("{id}.bin"));
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

/// The bytes in upload `id`'s data file.
pub fn data(server: &TestServer, id: &str) -> Vec<u8> {
    std::fs::read(server.data_dir.join("uploads").join(format!("{id}.bin"))).unwrap_or_default()
}

/// Waits until a request on upload `id` has ended with `length` bytes in its data file, without
/// asking it to stop (a request of ours would take the upload over).
pub async fn settled(server: &TestServer, id: &str, length: u64) {
    server
        .eventually(|| async { (data_length(server, id) >= length).then_some(()) })
        .await;
    server.released(id).await;
}

/// Waits until `length` bytes of a request still in flight on upload `id` are in its data file.
pub async fn on_disk(server: &TestServer, id: &str, length: u64) {
    server
        .eventually(|| async { (data_length(server, id) >= length).then_some(()) })
        .await;
}

/// The id of the one upload in the data dir that is not among `before`, once it exists.
pub async fn new_upload(server: &TestServer, before: &[String]) -> String {
    server
        .eventually(|| async {
            server
                .upload_ids()
                .into_iter()
                .find(|id| !before.contains(id))
        })
        .await
}

/// `/files/{id}`.
pub fn path(id: &str) -> String {
    format!("/files/{id}")
}

/// The id in an upload's path.
pub fn id(path: &str) -> String {
    path.trim_start_matches("/files/").to_owned()
}
