//! The seed's simple protocol (docs/protocols.md, the simple protocol): `GET /status` and
//! `POST /upload`.
//!
//! `X-File-Id` names an upload within the caller's principal; it is hashed before it reaches
//! storage and never becomes a path. A simple upload is a normal upload: `POST /upload` answers
//! with `Location: /files/{id}` (under `--public-url` when set) so it can be downloaded, and tus
//! can continue it.
//!
//! Finding an upload by its `X-File-Id` needs the store's key index
//! ([`resumable_core::Capabilities::client_keys`]): over a store without one, both routes answer
//! 501 and say so, before touching anything.

use crate::AppState;
use crate::classify::{Kind, classify};
use crate::wire::{Principal, Rejection, body_stream, content_length, header_bytes, reject};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use resumable_core::{Append, Length, Offset, UploadError};
use resumable_proto::simple::{self, FILE_ID, FILE_SIZE, START_BYTE};
use resumable_proto::tus::UPLOAD_OFFSET;

/// `POST /upload`, parsed.
struct UploadRequest {
    file_id: String,
    start: u64,
    size: Option<u64>,
    content_length: Option<u64>,
}

fn parse_file_id(headers: &HeaderMap) -> Result<String, Rejection> {
    let value = header_bytes(headers, FILE_ID)?
        .ok_or_else(|| reject(StatusCode::BAD_REQUEST, "X-File-Id header is required"))?;
    simple::parse_file_id(value).map_err(|error| reject(StatusCode::BAD_REQUEST, error.to_string()))
}

fn parse_upload(headers: &HeaderMap) -> Result<UploadRequest, Rejection> {
    let file_id = parse_file_id(headers)?;
    let start = header_bytes(headers, START_BYTE)?
        .ok_or_else(|| reject(StatusCode::BAD_REQUEST, "X-Start-Byte header is required"))?;
    let start = simple::parse_byte_count(start)
        .map_err(|error| reject(StatusCode::BAD_REQUEST, format!("X-Start-Byte: {error}")))?;
    let size = header_bytes(headers, FILE_SIZE)?
        .map(simple::parse_byte_count)
        .transpose()
        .map_err(|error| reject(StatusCode::BAD_REQUEST, format!("X-File-Size: {error}")))?;
    Ok(UploadRequest {
        file_id,
        start,
        size,
        content_length: content_length(headers),
    })
}

fn offset_header(offset: Offset) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(UPLOAD_OFFSET),
        HeaderValue::from(offset.0),
    )
}

/// The plain-text count the seed's client reads with `+await response.text()`.
fn count(offset: Offset) -> Response {
    let (name, value) = offset_header(offset);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (name, value),
        ],
        offset.to_string(),
    )
        .into_response()
}

/// The 409 of a start byte that is not the stored count: the body is the stored count.
fn mismatch(stored: Offset) -> Rejection {
    let (name, value) = offset_header(stored);
    reject(StatusCode::CONFLICT, stored.to_string()).with_header(name, value)
}

/// Refuses the simple protocol over a store that cannot find uploads by their file id: without
/// it every `GET /status` would say 0 and every `POST /upload` start a new upload.
fn check_supported(state: &AppState) -> Result<(), Rejection> {
    if state.service.capabilities().client_keys {
        return Ok(());
    }
    Err(reject(
        StatusCode::NOT_IMPLEMENTED,
        "this server's storage does not support the simple protocol (X-File-Id); use tus",
    ))
}

/// `GET /status`: how many bytes of this file id are durably stored (`0` if none).
pub(crate) async fn status(
    State(state): State<AppState>,
    Principal { owner, .. }: Principal,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    check_supported(&state)?;
    let file_id = parse_file_id(&headers)?;
    let Some(id) = state
        .service
        .find_by_key(&owner, &file_id)
        .await
        .map_err(upload_error)?
    else {
        return Ok(count(Offset(0)));
    };
    match state.service.status(&owner, &id).await {
        Ok(status) => Ok(count(status.offset)),
        // An expired upload is as good as gone: the client starts over.
        Err(UploadError::NotFound | UploadError::Expired) => Ok(count(Offset(0))),
        Err(error) => Err(upload_error(error)),
    }
}

/// `POST /upload`: append the body at `X-Start-Byte` if exactly that many bytes are stored.
pub(crate) async fn upload(
    State(state): State<AppState>,
    Principal {
        owner,
        limits,
        creator,
    }: Principal,
    request: Request,
) -> Result<Response, Rejection> {
    check_supported(&state)?;
    let (parts, body) = request.into_parts();
    let upload = parse_upload(&parts.headers)?;
    // The request head shares hyper's read buffer: holding it while a slow body streams would
    // keep that buffer alive beside the one the body is read into.
    drop(parts);
    let service = &state.service;
    let id = if upload.start == 0 {
        // Only a request starting at 0 may create the upload (or replace an expired one).
        let length = upload.size.map_or(Length::Deferred, Length::Known);
        service
            .open_by_key(&owner, &upload.file_id, length, limits, creator)
            .await
            .map_err(upload_error)?
    } else {
        let found = service.find_by_key(&owner, &upload.file_id).await;
        found
            .map_err(upload_error)?
            .ok_or_else(|| mismatch(Offset(0)))?
    };
    let append = Append {
        offset: Offset(upload.start),
        declared_length: upload.size,
        content_length: upload.content_length,
        checksum: None,
        unannounced_trailer: None,
        // Without a size, the seed's client sends the whole rest of the file and takes 200 as
        // done: a body that arrives whole completes the upload.
        ends_upload: upload.size.is_none(),
        limits,
        body: body_stream(body),
    };
    let status = service
        .append(&owner, &id, append)
        .await
        .map_err(upload_error)?;
    let mut response = count(status.offset);
    // Relative, unless the server knows its public URL.
    let location = match &state.config.public_url {
        Some(public) => crate::tus::public_location(public, &id),
        None => HeaderValue::from_str(&format!("/files/{id}")).expect("ids are header-safe"),
    };
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// A service error as the simple protocol answers it: a 409's body is the stored count (what
/// the seed's client resumes from); otherwise the classified status and message, with
/// `Upload-Offset` whenever the stored count is known.
fn upload_error(error: UploadError) -> Rejection {
    let classified = classify(error);
    match (classified.kind, classified.stored) {
        (Kind::OffsetMismatch { .. }, Some(stored)) => mismatch(stored),
        _ => Rejection::plain(classified),
    }
}
