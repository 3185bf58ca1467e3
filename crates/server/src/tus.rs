//! tus 1.0.0 (docs/protocols.md, tus) on `/files/`: core and every extension — creation,
//! creation-with-upload, creation-defer-length, expiration, checksum, checksum-trailer,
//! termination, concatenation, concatenation-unfinished. Extensions are advertised from the
//! store's capabilities and the service's settings, never from a fixed list.

use crate::classify::{Kind, classify};
use crate::wire::{
    Principal, Rejection, Trailers, body_stream, body_stream_with_trailers, content_length,
    header_bytes, reject, single_header,
};
use crate::{AppState, PublicUrl, ServerConfig};
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, head, options};
use resumable_core::{
    Append, Concat, ConcatPart, ExpectedChecksum, Length, NewConcat, NewUpload, Offset, Protocol,
    UnannouncedTrailer, UploadError, UploadId, UploadService, UploadStatus,
};
use resumable_proto::Metadata;
use resumable_proto::checksum::{self, Checksum};
use resumable_proto::concat::{self, UploadConcat};
use resumable_proto::forwarded::{self, ForwardedOrigin};
use resumable_proto::tus::{
    self, METHOD_OVERRIDE, TUS_CHECKSUM_ALGORITHM, TUS_EXTENSION, TUS_MAX_SIZE, TUS_RESUMABLE,
    TUS_VERSION, UPLOAD_CHECKSUM, UPLOAD_CONCAT, UPLOAD_DEFER_LENGTH, UPLOAD_EXPIRES,
    UPLOAD_LENGTH, UPLOAD_METADATA, UPLOAD_OFFSET,
};

/// tus's status for a checksum mismatch.
const CHECKSUM_MISMATCH: u16 = 460;

// `Tus-Resumable` is added by a plain function through tower's MapResponse, which (unlike
// axum's `map_response`) boxes no future per request: less memory per held upload.

/// Routes of `/files/`.
pub(crate) fn collection_routes() -> MethodRouter<AppState> {
    options(capabilities)
        .post(create)
        .layer(tower::util::MapResponseLayer::new(add_tus_resumable))
}

/// Routes of `/files/{id}`, without `GET` (downloads are not tus).
pub(crate) fn upload_routes() -> MethodRouter<AppState> {
    head(offset)
        .patch(append)
        .delete(terminate)
        .options(capabilities)
        .layer(tower::util::MapResponseLayer::new(add_tus_resumable))
}

fn add_tus_resumable(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(name(TUS_RESUMABLE), HeaderValue::from_static(tus::VERSION));
    response
}

/// Honours `X-HTTP-Method-Override` on `POST`, for clients behind proxies that allow only
/// `GET` and `POST`.
pub(crate) fn apply_method_override(mut request: Request) -> Request {
    if request.method() == Method::POST
        // An override given twice is as unusable as an unknown method: the POST stays a POST.
        && let Ok(Some(method)) = header_bytes(request.headers(), METHOD_OVERRIDE)
        && let Ok(method) = Method::from_bytes(method)
    {
        *request.method_mut() = method;
    }
    request
}

fn name(lowercase: &'static str) -> HeaderName {
    HeaderName::from_static(lowercase)
}

fn number(value: u64) -> HeaderValue {
    HeaderValue::from(value)
}

fn text(value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(value).ok()
}

fn respond(status: StatusCode, headers: Vec<(HeaderName, HeaderValue)>) -> Response {
    let mut response = status.into_response();
    response.headers_mut().extend(headers);
    response
}

/// The extensions this server offers, from what the store can do and how it is configured.
fn extensions(service: &UploadService) -> Vec<&'static str> {
    let capabilities = service.capabilities();
    let mut extensions = vec!["creation", "creation-with-upload", "creation-defer-length"];
    if service.expire_after().is_some() {
        extensions.push("expiration");
    }
    if capabilities.stage {
        extensions.extend(["checksum", "checksum-trailer"]);
    }
    if capabilities.terminate {
        extensions.push("termination");
    }
    if capabilities.concatenate {
        extensions.extend(["concatenation", "concatenation-unfinished"]);
    }
    extensions
}

/// `OPTIONS`: what this server speaks.
async fn capabilities(State(state): State<AppState>) -> Response {
    let extensions = extensions(&state.service);
    let mut headers = vec![
        (name(TUS_VERSION), HeaderValue::from_static(tus::VERSION)),
        (
            name(TUS_EXTENSION),
            text(&tus::encode_extensions(&extensions)).expect("extension names are header-safe"),
        ),
    ];
    if let Some(max) = state.service.max_size() {
        headers.push((name(TUS_MAX_SIZE), number(max)));
    }
    if extensions.contains(&"checksum") {
        let algorithms = text(&checksum::encode_algorithms()).expect("names are header-safe");
        headers.push((name(TUS_CHECKSUM_ALGORITHM), algorithms));
    }
    respond(StatusCode::NO_CONTENT, headers)
}

fn check_version(headers: &HeaderMap) -> Result<(), Rejection> {
    let version = header_bytes(headers, TUS_RESUMABLE)?.unwrap_or_default();
    tus::check_version(version).map_err(|error| {
        reject(StatusCode::PRECONDITION_FAILED, error.to_string())
            .with_header(name(TUS_VERSION), HeaderValue::from_static(tus::VERSION))
    })
}

/// Ids that are not ours are unknown uploads, not bad requests: never reveal or parse more.
fn parse_id(id: &str) -> Result<UploadId, Rejection> {
    id.parse()
        .map_err(|_| reject(StatusCode::NOT_FOUND, "upload not found"))
}

fn parse_number(headers: &HeaderMap, header: &'static str) -> Result<Option<u64>, Rejection> {
    header_bytes(headers, header)?
        .map(|value| tus::parse_number(header, value))
        .transpose()
        .map_err(|error| reject(StatusCode::BAD_REQUEST, error.to_string()))
}

/// `POST /files/`, parsed.
struct CreateRequest {
    length: Length,
    metadata: Metadata,
    concat: Option<NewConcat>,
    /// The body is the first chunk (creation-with-upload).
    with_body: bool,
    content_length: Option<u64>,
}

fn parse_create(parts: &Parts, config: &ServerConfig) -> Result<CreateRequest, Rejection> {
    let headers = &parts.headers;
    check_version(headers)?;
    let concat = parse_concat(parts, config)?;
    let length = parse_number(headers, UPLOAD_LENGTH)?;
    let deferred = header_bytes(headers, UPLOAD_DEFER_LENGTH)?;
    let length = match (&concat, length, deferred) {
        (Some(NewConcat::Final(_)), None, None) => Length::Deferred,
        (Some(NewConcat::Final(_)), _, _) => {
            let message = "a final upload takes its length from its parts: omit Upload-Length";
            return Err(reject(StatusCode::BAD_REQUEST, message));
        }
        (_, Some(_), Some(_)) => {
            let message = "Upload-Length and Upload-Defer-Length are mutually exclusive";
            return Err(reject(StatusCode::BAD_REQUEST, message));
        }
        (_, None, None) => {
            let message = "Upload-Length or Upload-Defer-Length: 1 is required";
            return Err(reject(StatusCode::BAD_REQUEST, message));
        }
        (_, Some(length), None) => Length::Known(length),
        (_, None, Some(deferred)) => {
            tus::check_defer_length(deferred)
                .map_err(|error| reject(StatusCode::BAD_REQUEST, error.to_string()))?;
            Length::Deferred
        }
    };
    let metadata = header_bytes(headers, UPLOAD_METADATA)?
        .map(Metadata::parse_tus)
        .transpose()
        .map_err(|error| reject(StatusCode::BAD_REQUEST, format!("Upload-Metadata: {error}")))?
        .unwrap_or_default();
    let with_body = header_bytes(headers, header::CONTENT_TYPE.as_str())?
        .is_some_and(tus::is_offset_octet_stream);
    if with_body && matches!(concat, Some(NewConcat::Final(_))) {
        let message = "a final upload takes no data: send it to the partial uploads";
        return Err(reject(StatusCode::BAD_REQUEST, message));
    }
    Ok(CreateRequest {
        length,
        metadata,
        concat,
        with_body,
        content_length: content_length(headers),
    })
}

fn parse_concat(parts: &Parts, config: &ServerConfig) -> Result<Option<NewConcat>, Rejection> {
    let Some(value) = header_bytes(&parts.headers, UPLOAD_CONCAT)? else {
        return Ok(None);
    };
    let bad = |message: String| reject(StatusCode::BAD_REQUEST, message);
    match UploadConcat::parse(value).map_err(|error| bad(error.to_string()))? {
        UploadConcat::Partial => Ok(Some(NewConcat::Partial)),
        UploadConcat::Final(urls) => {
            let base = match &config.public_url {
                Some(public) => Base::Public(public),
                None => Base::Request(origin(parts, config)),
            };
            let mut parts: Vec<ConcatPart> = Vec::with_capacity(urls.len());
            for url in urls {
                let Some(id) = own_upload(&url, &base) else {
                    return Err(bad(format!("{url} is not an upload URL of this server")));
                };
                // One part named many times would make one small request write a huge file.
                if parts.iter().any(|part| part.id == id) {
                    return Err(bad(format!("partial upload {url} is named twice")));
                }
                parts.push(ConcatPart { id, url });
            }
            Ok(Some(NewConcat::Final(parts)))
        }
    }
}

/// What this server's upload URLs are built on.
enum Base<'a> {
    /// `--public-url`.
    Public(&'a PublicUrl),
    /// The request's own origin.
    Request(Origin),
}

/// The upload a part URL names, if it is one of this server's: an absolute path or an absolute
/// URL on the origin this server's own upload URLs have, with the path `/files/{id}` — under
/// the public URL's prefix when there is one (`https://uploads.example.com/base/files/{id}` or
/// `/base/files/{id}`).
fn own_upload(url: &str, base: &Base<'_>) -> Option<UploadId> {
    let parts = concat::split_url(url)?;
    let path = match base {
        Base::Public(public) => {
            if let Some((scheme, authority)) = parts.origin
                && !public.has_origin(scheme, authority)
            {
                return None;
            }
            parts.path.strip_prefix(public.prefix())?
        }
        Base::Request(origin) => {
            if let Some((scheme, authority)) = parts.origin {
                let same = origin.host.as_deref().is_some_and(|host| {
                    scheme.eq_ignore_ascii_case(&origin.proto)
                        && authority.eq_ignore_ascii_case(host)
                });
                if !same {
                    return None;
                }
            }
            parts.path
        }
    };
    path.strip_prefix("/files/")?.parse().ok()
}

/// The scheme and host of this server's upload URLs, as a request reaches it.
struct Origin {
    proto: String,
    host: Option<String>,
}

/// The listener's scheme (`https` with TLS) and the request's `Host` (HTTP/2's `:authority`),
/// or, behind a trusted proxy, the scheme and host the proxy reports.
fn origin(parts: &Parts, config: &ServerConfig) -> Origin {
    let headers = &parts.headers;
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let mut forwarded = ForwardedOrigin::default();
    if config.behind_proxy {
        forwarded = match text("forwarded") {
            Some(value) => forwarded::parse_forwarded(value),
            None => {
                forwarded::parse_x_forwarded(text("x-forwarded-proto"), text("x-forwarded-host"))
            }
        };
    }
    let authority = || parts.uri.authority().map(|authority| authority.as_str());
    let host = forwarded.host.or_else(|| {
        text(header::HOST.as_str())
            .or_else(authority)
            .and_then(forwarded::valid_host)
    });
    Origin {
        proto: forwarded
            .proto
            .unwrap_or_else(|| config.scheme().to_owned()),
        host,
    }
}

/// The absolute URL of an upload: under `--public-url`, else on the request's origin (relative
/// when nothing names a host).
pub(crate) fn location(parts: &Parts, id: &UploadId, config: &ServerConfig) -> HeaderValue {
    if let Some(public) = &config.public_url {
        return public_location(public, id);
    }
    let Origin { proto, host } = origin(parts, config);
    let url = match host {
        Some(host) => format!("{proto}://{host}/files/{id}"),
        None => format!("/files/{id}"),
    };
    HeaderValue::from_str(&url).expect("validated host and hex id are header-safe")
}

/// `{public-url}/files/{id}`.
pub(crate) fn public_location(public: &PublicUrl, id: &UploadId) -> HeaderValue {
    HeaderValue::from_str(&format!("{public}/files/{id}"))
        .expect("a parsed URL and a hex id are header-safe")
}

/// `Upload-Expires`, when the upload will expire.
fn expiry(service: &UploadService, status: &UploadStatus) -> Option<(HeaderName, HeaderValue)> {
    let expires = service.expires_at(status)?;
    Some((
        name(UPLOAD_EXPIRES),
        text(&resumable_proto::expires::encode(expires))?,
    ))
}

/// `POST /files/`: creation, with the first chunk when the body is
/// `application/offset+octet-stream`; partial and final uploads with `Upload-Concat`.
async fn create(
    State(state): State<AppState>,
    Principal {
        owner,
        limits,
        creator,
    }: Principal,
    request: Request,
) -> Result<Response, Rejection> {
    let (parts, body) = request.into_parts();
    let create = parse_create(&parts, &state.config)?;
    if let (true, Length::Known(length), Some(body_length)) =
        (create.with_body, create.length, create.content_length)
        && body_length > length
    {
        let message = "the body is longer than Upload-Length";
        return Err(reject(StatusCode::PAYLOAD_TOO_LARGE, message));
    }
    let new = NewUpload {
        owner: owner.clone(),
        length: create.length,
        metadata: create.metadata,
        concat: create.concat,
        limits,
        protocol: Protocol::Tus,
        repr_digest: None,
        creator,
    };
    let service = &state.service;
    let mut status = service.create(new).await.map_err(upload_error)?;
    let location = location(&parts, &status.info.id, &state.config);
    // The request head shares hyper's read buffer: holding it while a slow body streams would
    // keep that buffer alive beside the one the body is read into.
    drop(parts);
    if create.with_body {
        let append = Append {
            offset: Offset(0),
            declared_length: None,
            content_length: create.content_length,
            checksum: None,
            unannounced_trailer: None,
            ends_upload: false,
            limits,
            body: body_stream(body),
        };
        let id = &status.info.id;
        // The upload exists whatever happens to its first chunk: a refusal says where it is,
        // beside the offset it has, so the client can go on instead of starting over.
        status = service
            .append(&owner, id, append)
            .await
            .map_err(|error| upload_error(error).with_header(header::LOCATION, location.clone()))?;
    }
    let mut headers = vec![(header::LOCATION, location)];
    if !status.info.is_final() {
        headers.push((name(UPLOAD_OFFSET), number(status.offset.0)));
    }
    headers.extend(expiry(service, &status));
    Ok(respond(StatusCode::CREATED, headers))
}

/// `HEAD /files/{id}`: the offset to resume from (any request in flight persists first).
async fn offset(
    State(state): State<AppState>,
    Principal { owner, .. }: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    check_version(&headers)?;
    let id = parse_id(&id)?;
    let status = state
        .service
        .status(&owner, &id)
        .await
        .map_err(upload_error)?;
    Ok(respond(StatusCode::OK, describe(&state.service, &status)))
}

fn describe(service: &UploadService, status: &UploadStatus) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = vec![(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    // A final upload has no offset of its own until it is assembled.
    if !status.info.is_final() || status.is_complete() {
        headers.push((name(UPLOAD_OFFSET), number(status.offset.0)));
    }
    match status.info.length {
        Length::Known(length) => headers.push((name(UPLOAD_LENGTH), number(length))),
        Length::Deferred => {
            headers.push((name(UPLOAD_DEFER_LENGTH), HeaderValue::from_static("1")))
        }
    }
    if !status.info.metadata.is_empty() {
        headers.extend(
            text(&status.info.metadata.encode_tus()).map(|value| (name(UPLOAD_METADATA), value)),
        );
    }
    let concat = match &status.info.concat {
        None => None,
        Some(Concat::Partial) => Some(UploadConcat::Partial),
        Some(Concat::Final { parts }) => Some(UploadConcat::Final(
            parts.iter().map(|part| part.url.clone()).collect(),
        )),
    };
    if let Some(value) = concat.and_then(|concat| text(&concat.encode())) {
        headers.push((name(UPLOAD_CONCAT), value));
    }
    headers.extend(expiry(service, status));
    headers
}

/// `PATCH /files/{id}`, parsed.
struct AppendRequest {
    id: UploadId,
    offset: Offset,
    declared_length: Option<u64>,
    content_length: Option<u64>,
    checksum: Option<Checksum>,
    /// The client announced `Trailer: Upload-Checksum`.
    checksum_trailer: bool,
}

fn parse_append(id: &str, headers: &HeaderMap) -> Result<AppendRequest, Rejection> {
    check_version(headers)?;
    let id = parse_id(id)?;
    let content_type = header_bytes(headers, header::CONTENT_TYPE.as_str())?.unwrap_or_default();
    if !tus::is_offset_octet_stream(content_type) {
        return Err(reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/offset+octet-stream",
        ));
    }
    let offset = parse_number(headers, UPLOAD_OFFSET)?
        .ok_or_else(|| reject(StatusCode::BAD_REQUEST, "Upload-Offset header is required"))?;
    let checksum = header_bytes(headers, UPLOAD_CHECKSUM)?
        .map(Checksum::parse)
        .transpose()
        .map_err(|error| reject(StatusCode::BAD_REQUEST, error.to_string()))?;
    let checksum_trailer = headers
        .get_all(header::TRAILER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|field| field.trim().eq_ignore_ascii_case(UPLOAD_CHECKSUM));
    Ok(AppendRequest {
        id,
        offset: Offset(offset),
        declared_length: parse_number(headers, UPLOAD_LENGTH)?,
        content_length: content_length(headers),
        checksum,
        checksum_trailer,
    })
}

/// The checksum a PATCH must match: from its header, or from its trailer once the body is read.
fn expected_checksum(request: &mut AppendRequest, trailers: &Trailers) -> Option<ExpectedChecksum> {
    if let Some(checksum) = request.checksum.take() {
        return Some(ExpectedChecksum::Header(checksum));
    }
    let trailers = trailers.clone();
    request
        .checksum_trailer
        .then(|| ExpectedChecksum::Trailer(Box::new(move || checksum_trailer(&trailers))))
}

/// For a PATCH that announced no checksum: whether one came anyway as a trailer (or a
/// malformed one did). The body was not digested, so it cannot have been checked.
fn unannounced_trailer(
    checksum: &Option<ExpectedChecksum>,
    trailers: Trailers,
) -> Option<UnannouncedTrailer> {
    if checksum.is_some() {
        return None;
    }
    Some(Box::new(move || {
        !matches!(checksum_trailer(&trailers), Ok(None))
    }))
}

/// The `Upload-Checksum` trailer, once the body has ended: `None` when absent.
fn checksum_trailer(trailers: &Trailers) -> Result<Option<Checksum>, String> {
    let Some(trailers) = trailers.take() else {
        return Ok(None);
    };
    single_header(&trailers, UPLOAD_CHECKSUM)?
        .map(|value| Checksum::parse(value).map_err(|error| error.to_string()))
        .transpose()
}

/// `PATCH /files/{id}`: append the body at `Upload-Offset`.
async fn append(
    State(state): State<AppState>,
    Principal { owner, limits, .. }: Principal,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, Rejection> {
    let (parts, body) = request.into_parts();
    let mut request = parse_append(&id, &parts.headers)?;
    let (body, trailers) = body_stream_with_trailers(body);
    let checksum = expected_checksum(&mut request, &trailers);
    let unannounced_trailer = unannounced_trailer(&checksum, trailers);
    let append = Append {
        offset: request.offset,
        declared_length: request.declared_length,
        content_length: request.content_length,
        checksum,
        unannounced_trailer,
        ends_upload: false,
        limits,
        body,
    };
    drop(parts); // see `create`
    let service = &state.service;
    let status = service
        .append(&owner, &request.id, append)
        .await
        .map_err(upload_error)?;
    let mut headers = vec![(name(UPLOAD_OFFSET), number(status.offset.0))];
    headers.extend(expiry(service, &status));
    Ok(respond(StatusCode::NO_CONTENT, headers))
}

/// `DELETE /files/{id}`: termination.
async fn terminate(
    State(state): State<AppState>,
    Principal { owner, .. }: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    check_version(&headers)?;
    let id = parse_id(&id)?;
    state
        .service
        .terminate(&owner, &id)
        .await
        .map_err(upload_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A service error as tus answers it: the classified status and message, `Upload-Offset`
/// whenever the stored count is known, and 460 for a checksum mismatch.
pub(crate) fn upload_error(error: UploadError) -> Rejection {
    let classified = classify(error);
    if classified.kind == Kind::ChecksumMismatch {
        let status = StatusCode::from_u16(CHECKSUM_MISMATCH).expect("460 is a valid status");
        let rejection = reject(status, classified.message).with_reason("Checksum Mismatch");
        return match classified.stored {
            Some(stored) => rejection.with_header(name(UPLOAD_OFFSET), number(stored.0)),
            None => rejection,
        };
    }
    Rejection::plain(classified)
}
