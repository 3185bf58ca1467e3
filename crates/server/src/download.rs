//! `GET /files/{id}`: the bytes of a completed upload, with single `Range`s. Not part of tus,
//! but what users expect of an upload server.

use crate::AppState;
use crate::tus::upload_error;
use crate::wire::{Principal, Rejection, reject};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use resumable_core::{UploadError, UploadId};
use resumable_proto::range::{self, RangeRequest};

/// Answers the bytes of a completed upload, whole or one `Range`.
pub(crate) async fn download(
    State(state): State<AppState>,
    Principal { owner, .. }: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let id: UploadId = id
        .parse()
        .map_err(|_| reject(StatusCode::NOT_FOUND, "upload not found"))?;
    let status = state
        .service
        .inspect_assembled(&owner, &id)
        .await
        .map_err(upload_error)?;
    if !status.is_complete() {
        return Err(upload_error(UploadError::Incomplete));
    }
    let length = status.offset.0;
    let requested = headers
        .get(header::RANGE)
        .map_or(RangeRequest::Full, |value| {
            range::parse(value.as_bytes(), length)
        });
    let (code, span) = match requested {
        RangeRequest::Full => (StatusCode::OK, 0..length),
        RangeRequest::Partial(span) => (StatusCode::PARTIAL_CONTENT, span),
        RangeRequest::Unsatisfiable => {
            let value = HeaderValue::from_str(&range::unsatisfied_range(length))
                .expect("digits are header-safe");
            let rejection = reject(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            return Err(rejection.with_header(header::CONTENT_RANGE, value));
        }
    };
    let bytes = state
        .service
        .read(&owner, &id, span.clone())
        .await
        .map_err(upload_error)?;
    let mut response = (code, Body::from_stream(bytes)).into_response();
    let response_headers = response.headers_mut();
    // Never sniffed or rendered inline: the bytes are the uploader's, not ours.
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response_headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(span.end - span.start),
    );
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let disposition = resumable_proto::disposition::attachment(
        status.info.metadata.filename().unwrap_or(id.as_str()),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response_headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if code == StatusCode::PARTIAL_CONTENT
        && let Ok(value) = HeaderValue::from_str(&range::content_range(&span, length))
    {
        response_headers.insert(header::CONTENT_RANGE, value);
    }
    Ok(response)
}
