//! The IETF draft "Resumable Uploads for HTTP" on `/files/` (docs/protocols.md, the IETF
//! draft): a request is IETF when it carries `Upload-Draft-Interop-Version`. Interop versions
//! 3 to 8 are served; what differs between them is read from
//! [`InteropVersion::traits`], never from version numbers here.
//!
//! An IETF upload is an ordinary upload of the engine: tus and the simple protocol see it
//! (and the other way round). Two rules of the engine shape the answers:
//! - An upload whose declared length is all stored is complete, whether or not the request
//!   said `Upload-Complete: ?1` (as in tus). A later empty append with `Upload-Complete: ?1` at
//!   that offset is answered as a replay of the completion.
//! - Errors are classified once (`classify`) and rendered here as problem details (RFC 9457),
//!   with the stored `Upload-Offset` whenever it is known, and `Upload-Complete: ?0` — but
//!   `?1` when the complete upload itself was refused (its `Repr-Digest`, a `pre-finish` hook).

use crate::AppState;
use crate::classify::{Classified, Kind, classify};
use crate::interim::Interim;
use crate::wire::{
    Principal, Rejection, body_stream, content_length, display_name, reject_with_body,
    single_header,
};
use axum::Router;
use axum::body::HttpBody;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use resumable_core::{
    Append, ExpectedChecksum, Length, Limits, NewUpload, Offset, Owner, Protocol, ReprDigest,
    UploadError, UploadId, UploadStatus,
};
use resumable_proto::checksum::Checksum;
use resumable_proto::ietf::{
    self, CONTENT_DIGEST, FieldError, INTEROP_VERSION, InteropVersion, PROBLEM_JSON, Problem,
    ProblemType, REPR_DIGEST, UPLOAD_LENGTH, UPLOAD_LIMIT, UPLOAD_OFFSET, UploadLimit,
};
use resumable_proto::{Metadata, disposition, tus};

/// Whether a request speaks the draft: it names an interop version on an upload route.
pub(crate) fn speaks_ietf(request: &Request) -> bool {
    names_interop_version(request.uri().path(), request.headers())
}

/// [`speaks_ietf`] from a request's path and headers (for request parts, as auth sees them).
pub(crate) fn names_interop_version(path: &str, headers: &HeaderMap) -> bool {
    path.starts_with("/files") && headers.contains_key(INTEROP_VERSION)
}

/// The IETF routes: the same paths as tus.
pub(crate) fn routes() -> Router<AppState> {
    let collection = post(create).options(limits);
    Router::new()
        .route("/files", collection.clone())
        .route("/files/", collection)
        .route(
            "/files/{id}",
            axum::routing::head(offset)
                .get(offset_or_download)
                .patch(append)
                .delete(cancel)
                .options(limits),
        )
}

/// The interop version a request names; one not served is a 400 naming those that are.
struct Version(InteropVersion);

impl<S: Send + Sync> FromRequestParts<S> for Version {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let value = single_header(&parts.headers, INTEROP_VERSION)
            .ok()
            .flatten();
        match value.and_then(InteropVersion::parse) {
            Some(version) => Ok(Version(version)),
            None => {
                let detail = format!(
                    "Upload-Draft-Interop-Version must be one of {}",
                    ietf::served_versions()
                );
                let problem = Problem::new(ProblemType::Blank, detail);
                Err(problem_response(StatusCode::BAD_REQUEST, &problem))
            }
        }
    }
}

fn name(lowercase: &'static str) -> HeaderName {
    HeaderName::from_static(lowercase)
}

/// An Integer field; `None` for a value no Structured Field Integer holds (15 digits).
fn integer(value: u64) -> Option<HeaderValue> {
    ietf::encode_integer(value).and_then(|text| HeaderValue::from_str(&text).ok())
}

/// `rejection` with `Upload-Offset: stored` (omitted past what an Integer holds).
fn with_offset(rejection: Rejection, stored: Offset) -> Rejection {
    match integer(stored.0) {
        Some(value) => rejection.with_header(name(UPLOAD_OFFSET), value),
        None => rejection,
    }
}

fn problem_response(status: StatusCode, problem: &Problem) -> Rejection {
    let body = serde_json::to_string(problem).expect("a problem serialises");
    reject_with_body(status, PROBLEM_JSON, body)
}

/// How a request's version writes the draft's fields and renders refusals.
#[derive(Clone, Copy)]
struct Render(InteropVersion);

/// How a request's version reads the draft's fields.
#[derive(Clone, Copy)]
struct Fields<'a> {
    headers: &'a HeaderMap,
    render: Render,
}

impl<'a> Fields<'a> {
    fn new(headers: &'a HeaderMap, version: InteropVersion) -> Self {
        Fields {
            headers,
            render: Render(version),
        }
    }

    fn version(&self) -> InteropVersion {
        self.render.0
    }

    /// A field that carries one Structured Field value: `None` when absent, and, in versions
    /// that ignore invalid values, when it does not parse (or is repeated); earlier versions
    /// refuse the request instead.
    fn read<T>(
        &self,
        field: &'static str,
        parse: fn(&[u8]) -> Result<T, FieldError>,
    ) -> Result<Option<T>, Rejection> {
        let parsed = match single_header(self.headers, field) {
            Ok(value) => value
                .map(parse)
                .transpose()
                .map_err(|error| format!("{}: {error}", display_name(field))),
            Err(message) => Err(message),
        };
        match parsed {
            Ok(value) => Ok(value),
            Err(_) if self.version().traits().ignores_invalid_fields => Ok(None),
            Err(message) => Err(self.render.bad_request(ProblemType::Blank, message)),
        }
    }

    /// Whether the request says it completes the upload (`Upload-Complete: ?1`, or interop
    /// 3's `Upload-Incomplete: ?0`); `None` when it does not say.
    fn complete(&self) -> Result<Option<bool>, Rejection> {
        let field = self.version().traits().completeness;
        let value = self.read(field.name(), ietf::parse_boolean)?;
        Ok(value.map(|value| field.complete(value)))
    }

    /// [`Fields::complete`] where the request must say: a `400` naming the field otherwise.
    fn required_complete(&self, purpose: &str) -> Result<bool, Rejection> {
        self.complete()?.ok_or_else(|| {
            let field = self.version().traits().completeness.name();
            let message = format!("{} is required {purpose}", display_name(field));
            self.render.bad_request(ProblemType::Blank, message)
        })
    }

    /// The digest the request's content must have (`Content-Digest`), or the whole upload's
    /// (`Repr-Digest`), in an algorithm served; others are ignored (RFC 9530).
    fn digest(&self, field: &'static str) -> Result<Option<Checksum>, Rejection> {
        Ok(self.read(field, ietf::parse_digest)?.flatten())
    }
}

impl Render {
    fn completeness(&self, complete: bool) -> (HeaderName, HeaderValue) {
        let field = self.0.traits().completeness;
        (
            name(field.name()),
            HeaderValue::from_static(field.encode(complete)),
        )
    }

    fn bad_request(&self, kind: ProblemType, detail: impl Into<String>) -> Rejection {
        let (completeness, value) = self.completeness(false);
        problem_response(StatusCode::BAD_REQUEST, &Problem::new(kind, detail))
            .with_header(completeness, value)
    }

    /// A service error as problem details, with `Upload-Complete: ?0` (the response is the
    /// upload's, not the processed representation's) — unless `complete` — and the stored
    /// offset when known.
    fn problem(&self, classified: Classified, complete: bool) -> Rejection {
        let kind = match classified.kind {
            Kind::OffsetMismatch { .. } => ProblemType::MismatchingOffset,
            Kind::InconsistentLength => ProblemType::InconsistentLength,
            Kind::ChecksumMismatch | Kind::TooLarge | Kind::Interrupted | Kind::Other => {
                ProblemType::Blank
            }
        };
        let mut problem = Problem::new(kind, classified.message);
        if let Kind::OffsetMismatch { provided } = classified.kind {
            problem.expected_offset = classified.stored.map(|stored| stored.0);
            problem.provided_offset = Some(provided.0);
        }
        let (completeness, value) = self.completeness(complete);
        let rejection = problem_response(classified.status, &problem)
            .with_header(completeness, value)
            .with_retry_after(classified.retry_after);
        match classified.stored {
            Some(stored) => with_offset(rejection, stored),
            None => rejection,
        }
    }

    fn error(&self, error: UploadError) -> Rejection {
        self.problem(classify(error), false)
    }

    /// Content past a complete upload (the problem type of drafts -04 and -05).
    fn completed_upload(&self, stored: Offset) -> Rejection {
        let problem = Problem::new(
            ProblemType::CompletedUpload,
            "the upload is complete and takes no more content",
        );
        let (completeness, value) = self.completeness(false);
        let rejection =
            problem_response(StatusCode::BAD_REQUEST, &problem).with_header(completeness, value);
        with_offset(rejection, stored)
    }

    /// A request that said it completes the upload, whose content ended before the upload's
    /// length: its bytes are kept, the upload is not complete.
    fn ended_short(&self, stored: Offset) -> Rejection {
        let rejection = self.bad_request(
            ProblemType::InconsistentLength,
            "the content ended before the upload's length",
        );
        with_offset(rejection, stored)
    }

    /// `error` of an append (or of a creation's content) to upload `id`. A refusal of the
    /// complete upload (its `Repr-Digest` does not match, or `pre-finish` refused it) is the
    /// representation's, found once the request's content was all stored: it says
    /// `Upload-Complete: ?1` ("the response MUST include the `Upload-Complete` header field
    /// with a true value"), so the client does not resume. A `413` says the limits.
    async fn append_error(
        &self,
        state: &AppState,
        owner: &Owner,
        id: &UploadId,
        limits: &Limits,
        error: UploadError,
    ) -> Rejection {
        let refused = matches!(error, UploadError::HookRefused { .. });
        let classified = classify(error);
        let too_large = classified.status == StatusCode::PAYLOAD_TOO_LARGE;
        let status = if refused || too_large {
            state.service.inspect(owner, id).await.ok()
        } else {
            None
        };
        let complete = refused && status.as_ref().is_some_and(UploadStatus::is_complete);
        let rejection = self.problem(classified, complete);
        if too_large {
            self.with_limits(rejection, &upload_limit(state, limits, status.as_ref()))
        } else {
            rejection
        }
    }

    /// `error` as a problem; a `413` says the limits, `limit`.
    fn error_within(&self, error: UploadError, limit: &UploadLimit) -> Rejection {
        let classified = classify(error);
        let too_large = classified.status == StatusCode::PAYLOAD_TOO_LARGE;
        let rejection = self.problem(classified, false);
        if too_large {
            self.with_limits(rejection, limit)
        } else {
            rejection
        }
    }

    /// A `413` with `Upload-Limit`: "A server responding with a `413 (Content Too Large)`
    /// status code as a result of its upload limits SHOULD include the `Upload-Limit` header
    /// field in this response if possible."
    fn with_limits(&self, rejection: Rejection, limit: &UploadLimit) -> Rejection {
        match limit_header(self.0, limit) {
            Some((field, value)) => rejection.with_header(field, value),
            None => rejection,
        }
    }
}

/// What the server allows, as `Upload-Limit` says it: the size limit (the principal's, if
/// tighter) and the remaining lifetime (of `status`, or of a new upload).
fn upload_limit(state: &AppState, limits: &Limits, status: Option<&UploadStatus>) -> UploadLimit {
    let service = &state.service;
    let max_size = match (service.max_size(), limits.max_size) {
        (Some(server), Some(own)) => Some(server.min(own)),
        (server, own) => server.or(own),
    };
    let lifetime = match status {
        Some(status) => service.remaining_lifetime(status),
        None => service.expire_after(),
    };
    UploadLimit {
        max_size,
        max_age: lifetime.map(|lifetime| lifetime.as_secs()),
        ..UploadLimit::default()
    }
}

/// The headers that describe an upload's state to `fields.version`.
fn state_headers(
    render: Render,
    status: &UploadStatus,
    limit: &UploadLimit,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = vec![render.completeness(status.is_complete())];
    headers.extend(integer(status.offset.0).map(|value| (name(UPLOAD_OFFSET), value)));
    // Sent to every version: tus-js-client's draft modes read it like tus's.
    if let Length::Known(length) = status.info.length {
        headers.extend(integer(length).map(|value| (name(UPLOAD_LENGTH), value)));
    }
    headers.extend(limit_header(render.0, limit));
    headers
}

fn limit_header(version: InteropVersion, limit: &UploadLimit) -> Option<(HeaderName, HeaderValue)> {
    if !version.traits().length_and_limits {
        return None;
    }
    let value = HeaderValue::from_str(&limit.encode(version)).ok()?;
    Some((name(UPLOAD_LIMIT), value))
}

fn respond(status: StatusCode, headers: Vec<(HeaderName, HeaderValue)>) -> Response {
    let mut response = status.into_response();
    response.headers_mut().extend(headers);
    response
}

/// Ids that are not ours are unknown uploads: never reveal or parse more.
fn parse_id(render: Render, id: &str) -> Result<UploadId, Rejection> {
    id.parse().map_err(|_| render.error(UploadError::NotFound))
}

/// The length a request states: `Upload-Length`, or, when it completes the upload and its
/// content's size is known, where that content ends. Both given and different is the
/// draft's `inconsistent-upload-length`.
fn stated_length(
    fields: Fields<'_>,
    offset: Offset,
    complete: bool,
    content_length: Option<u64>,
) -> Result<Option<u64>, Rejection> {
    let declared = fields.read(UPLOAD_LENGTH, ietf::parse_integer)?;
    let implied = content_length
        .filter(|_| complete)
        .map(|length| offset.0.saturating_add(length));
    match (declared, implied) {
        (Some(declared), Some(implied)) if declared != implied => Err(fields.render.bad_request(
            ProblemType::InconsistentLength,
            format!(
                "Upload-Length says {declared} bytes, the completing content ends at {implied}"
            ),
        )),
        (declared, implied) => Ok(declared.or(implied)),
    }
}

/// Whether the request has content at all: a `Content-Length` above zero, or a body that does
/// not end with its head (chunked over HTTP/1.1; over HTTP/2, any stream the head did not end).
fn has_content(headers: &HeaderMap, body: &axum::body::Body) -> bool {
    content_length(headers) != Some(0) && !HttpBody::is_end_stream(body)
}

/// An upload creation, parsed.
struct CreateRequest {
    complete: bool,
    length: Length,
    metadata: Metadata,
    content_length: Option<u64>,
    content_digest: Option<Checksum>,
    repr_digest: Option<Checksum>,
}

impl CreateRequest {
    /// The upload to create (its metadata and digest taken).
    fn new_upload(&mut self, owner: Owner, limits: Limits, creator: Option<String>) -> NewUpload {
        NewUpload {
            owner,
            length: self.length,
            metadata: std::mem::take(&mut self.metadata),
            concat: None,
            limits,
            protocol: Protocol::Ietf,
            repr_digest: self.repr_digest.take().map(ReprDigest),
            creator,
        }
    }

    /// The request's content as the upload's first bytes.
    fn first_append(&mut self, limits: Limits, body: axum::body::Body) -> Append {
        Append {
            offset: Offset(0),
            declared_length: None,
            content_length: self.content_length,
            checksum: self.content_digest.take().map(ExpectedChecksum::Header),
            unannounced_trailer: None,
            ends_upload: self.complete,
            limits,
            body: body_stream(body),
        }
    }
}

fn parse_create(fields: Fields<'_>) -> Result<CreateRequest, Rejection> {
    let complete = fields.required_complete("to create an upload")?;
    let content_length = content_length(fields.headers);
    let length = stated_length(fields, Offset(0), complete, content_length)?;
    Ok(CreateRequest {
        complete,
        length: length.map_or(Length::Deferred, Length::Known),
        metadata: metadata(fields)?,
        content_length,
        content_digest: fields.digest(CONTENT_DIGEST)?,
        repr_digest: fields.digest(REPR_DIGEST)?,
    })
}

/// The upload's metadata: tus's `Upload-Metadata` when sent (tus-js-client sends it in its
/// draft modes too), then the file name from `Content-Disposition` and the media type from
/// `Content-Type`, under the keys tus clients use (`filename`, `filetype`).
fn metadata(fields: Fields<'_>) -> Result<Metadata, Rejection> {
    let headers = fields.headers;
    let bad = |message: String| fields.render.bad_request(ProblemType::Blank, message);
    let mut metadata = single_header(headers, tus::UPLOAD_METADATA)
        .map_err(bad)?
        .map(Metadata::parse_tus)
        .transpose()
        .map_err(|error| bad(format!("Upload-Metadata: {error}")))?
        .unwrap_or_default();
    let text = |field: HeaderName| single_header(headers, field.as_str()).ok().flatten();
    if let Some(filename) = text(header::CONTENT_DISPOSITION).and_then(disposition::filename) {
        metadata
            .set("filename", Some(filename.into_bytes()))
            .expect("a valid key");
    }
    if let Some(media_type) = text(header::CONTENT_TYPE)
        .filter(|value| !ietf::is_partial_upload(value) && !tus::is_offset_octet_stream(value))
    {
        metadata
            .set("filetype", Some(media_type.to_vec()))
            .expect("a valid key");
    }
    Ok(metadata)
}

/// `POST /files/` with `Upload-Complete`: creates an upload, its content the first bytes.
async fn create(
    State(state): State<AppState>,
    Version(version): Version,
    Principal {
        owner,
        limits,
        creator,
    }: Principal,
    request: Request,
) -> Result<Response, Rejection> {
    let (parts, body) = request.into_parts();
    let render = Render(version);
    let mut create = parse_create(Fields::new(&parts.headers, version))?;
    let with_content = has_content(&parts.headers, &body);
    let new = create.new_upload(owner.clone(), limits, creator);
    let service = &state.service;
    let announced = upload_limit(&state, &limits, None);
    let mut status = service
        .create(new)
        .await
        .map_err(|error| render.error_within(error, &announced))?;
    let location = crate::tus::location(&parts, &status.info.id, &state.config);
    if with_content && let Some(interim) = parts.extensions.get::<Interim>() {
        announce(interim, version, &location, &announced);
    }
    // The request head shares hyper's read buffer: holding it while a slow body streams would
    // keep that buffer alive beside the one the body is read into.
    drop(parts);
    if with_content || (create.complete && create.length == Length::Deferred) {
        let id = status.info.id.clone();
        // The upload exists whatever happens to its content: a refusal says where it is,
        // beside the offset it has, so the client can go on instead of starting over.
        status = match service
            .append(&owner, &id, create.first_append(limits, body))
            .await
        {
            Ok(status) => status,
            Err(error) => {
                let rejection = render.append_error(&state, &owner, &id, &limits, error);
                return Err(rejection.await.with_header(header::LOCATION, location));
            }
        };
    }
    if create.complete && !status.is_complete() {
        let rejection = render.ended_short(status.offset);
        return Err(rejection.with_header(header::LOCATION, location));
    }
    let limit = upload_limit(&state, &limits, Some(&status));
    let mut headers = vec![(header::LOCATION, location)];
    headers.extend(state_headers(render, &status, &limit));
    Ok(respond(StatusCode::CREATED, headers))
}

/// `104 Upload Resumption Supported` with the upload's `Location` and limits, before the
/// content is read, so a client whose connection drops mid-body can resume (HTTP/1.1 only: see
/// the `interim` module). The version is echoed, as the draft requires of a 104: a client of
/// another version must ignore it. Only for a request with content: without any, the final
/// response follows at once and carries the same.
fn announce(
    interim: &Interim,
    version: InteropVersion,
    location: &HeaderValue,
    limit: &UploadLimit,
) {
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, location.clone());
    headers.insert(
        name(INTEROP_VERSION),
        HeaderValue::from(u16::from(version.number())),
    );
    if let Some((field, value)) = limit_header(version, limit) {
        headers.insert(field, value);
    }
    let status = StatusCode::from_u16(104).expect("104 is a valid status");
    interim.send(status, "Upload Resumption Supported", &headers);
}

/// `HEAD /files/{id}`: the offset to resume from (a request in flight persists first).
async fn offset(
    State(state): State<AppState>,
    Version(version): Version,
    Principal { owner, limits, .. }: Principal,
    Path(id): Path<String>,
) -> Result<Response, Rejection> {
    let render = Render(version);
    let id = parse_id(render, &id)?;
    let status = state
        .service
        .status(&owner, &id)
        .await
        .map_err(|error| render.error(error))?;
    let limit = upload_limit(&state, &limits, Some(&status));
    let mut response_headers = state_headers(render, &status, &limit);
    response_headers.push((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    Ok(respond(StatusCode::NO_CONTENT, response_headers))
}

/// `GET /files/{id}`: offset retrieval where the version defines it (interop 8), else the
/// download of a completed upload, as without the draft.
async fn offset_or_download(
    state: State<AppState>,
    Version(version): Version,
    principal: Principal,
    id: Path<String>,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    if version.traits().get_retrieves_offset {
        offset(state, Version(version), principal, id).await
    } else {
        crate::download::download(state, principal, id, headers).await
    }
}

/// An append, parsed.
struct AppendRequest {
    id: UploadId,
    offset: Offset,
    complete: bool,
    length: Option<u64>,
    content_length: Option<u64>,
    content_digest: Option<Checksum>,
}

fn parse_append(fields: Fields<'_>, id: &str) -> Result<AppendRequest, Rejection> {
    let id = parse_id(fields.render, id)?;
    let content_type = single_header(fields.headers, header::CONTENT_TYPE.as_str())
        .ok()
        .flatten();
    if fields.version().traits().partial_upload_required
        && !content_type.is_some_and(ietf::is_partial_upload)
    {
        let (completeness, value) = fields.render.completeness(false);
        let problem = Problem::new(
            ProblemType::Blank,
            "an append's Content-Type must be application/partial-upload",
        );
        return Err(
            problem_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, &problem)
                .with_header(completeness, value),
        );
    }
    let offset = fields
        .read(UPLOAD_OFFSET, ietf::parse_integer)?
        .ok_or_else(|| {
            let message = "Upload-Offset is required to append";
            fields.render.bad_request(ProblemType::Blank, message)
        })?;
    let complete = fields.required_complete("to append")?;
    let content_length = content_length(fields.headers);
    Ok(AppendRequest {
        id,
        offset: Offset(offset),
        complete,
        length: stated_length(fields, Offset(offset), complete, content_length)?,
        content_length,
        content_digest: fields.digest(CONTENT_DIGEST)?,
    })
}

/// `PATCH /files/{id}`: appends the content at `Upload-Offset`.
async fn append(
    State(state): State<AppState>,
    Version(version): Version,
    Principal { owner, limits, .. }: Principal,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, Rejection> {
    let (parts, body) = request.into_parts();
    let render = Render(version);
    let request = parse_append(Fields::new(&parts.headers, version), &id)?;
    drop(parts); // see `create`
    let append = Append {
        offset: request.offset,
        declared_length: request.length,
        content_length: request.content_length,
        checksum: request.content_digest.map(ExpectedChecksum::Header),
        unannounced_trailer: None,
        ends_upload: request.complete,
        limits,
        body: body_stream(body),
    };
    let service = &state.service;
    let status = match service.append(&owner, &request.id, append).await {
        Ok(status) => status,
        Err(UploadError::BodyTooLong { stored })
            if completed(&state, &owner, &request.id).await =>
        {
            return Err(render.completed_upload(stored));
        }
        Err(error) => {
            let rejection = render.append_error(&state, &owner, &request.id, &limits, error);
            return Err(rejection.await);
        }
    };
    if request.complete && !status.is_complete() {
        return Err(render.ended_short(status.offset));
    }
    let limit = upload_limit(&state, &limits, Some(&status));
    Ok(respond(
        StatusCode::NO_CONTENT,
        state_headers(render, &status, &limit),
    ))
}

/// Whether the upload is complete, for telling an append past its end from one too long.
async fn completed(state: &AppState, owner: &Owner, id: &UploadId) -> bool {
    state
        .service
        .inspect(owner, id)
        .await
        .is_ok_and(|status| status.is_complete())
}

/// `DELETE /files/{id}`: cancels the upload (a request in flight stops first).
async fn cancel(
    State(state): State<AppState>,
    Version(version): Version,
    Principal { owner, .. }: Principal,
    Path(id): Path<String>,
) -> Result<Response, Rejection> {
    let render = Render(version);
    let id = parse_id(render, &id)?;
    state
        .service
        .terminate(&owner, &id)
        .await
        .map_err(|error| render.error(error))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `OPTIONS`: the limits an upload created here gets (`min-size=0` when there are none).
async fn limits(
    State(state): State<AppState>,
    Version(version): Version,
    Principal { limits, .. }: Principal,
) -> Response {
    let limit = upload_limit(&state, &limits, None);
    let headers = limit_header(version, &limit).into_iter().collect();
    respond(StatusCode::NO_CONTENT, headers)
}
