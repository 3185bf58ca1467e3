//! The one place where a failure of S3, or of the local spool, becomes a [`StoreError`].
//!
//! Every backend failure goes through [`backend`], so that the kinds a store error can carry
//! are decided here and nowhere else.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use resumable_core::{BackendError, BackendKind, StoreError};
use std::io;

/// What went wrong with the backend, as far as the caller should care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// S3 cannot be reached or refuses us as a whole (network, 5xx, credentials, no bucket):
    /// every upload is affected; retrying may work once it is back.
    Unavailable,
    /// S3 asks us to slow down (503 SlowDown), or this process is out of a resource.
    Exhausted,
    /// Anything else: logged, never shown to clients.
    Failed,
}

/// Builds the store error of a backend failure. `context` names the operation and object.
pub(crate) fn backend(kind: Kind, context: &str, source: impl std::fmt::Display) -> StoreError {
    let source = source.to_string();
    StoreError::Backend(match kind {
        Kind::Unavailable => BackendError::unavailable(context, source),
        Kind::Exhausted => BackendError::exhausted(context, source),
        Kind::Failed => BackendError::failed(context, source),
    })
}

/// A failure of the local spool (temporary files): a full disk is [`StoreError::Full`].
pub(crate) fn local(context: &str, error: io::Error) -> StoreError {
    match StoreError::from_io(error) {
        StoreError::Backend(error) => {
            let kind = match error.kind() {
                BackendKind::Unavailable => Kind::Unavailable,
                BackendKind::Exhausted => Kind::Exhausted,
                BackendKind::Failed => Kind::Failed,
            };
            backend(kind, context, error)
        }
        other => other,
    }
}

/// Whether S3 answered that the object, or the multipart upload, does not exist.
pub(crate) fn is_missing<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::ServiceError(service) => match service.err().code() {
            Some("NoSuchKey" | "NotFound" | "NoSuchUpload") => true,
            // A missing bucket is 404 too, but it is the storage that is missing.
            Some("NoSuchBucket") => false,
            _ => service.raw().status().as_u16() == 404,
        },
        _ => false,
    }
}

/// The store error of an S3 SDK failure.
pub(crate) fn s3<E>(context: &str, error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = match &error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Kind::Unavailable
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            match (service.err().code(), status) {
                (Some("SlowDown"), _) | (_, 429) => Kind::Exhausted,
                (
                    Some(
                        "AccessDenied"
                        | "InvalidAccessKeyId"
                        | "SignatureDoesNotMatch"
                        | "NoSuchBucket"
                        | "ServiceUnavailable"
                        | "InternalError",
                    ),
                    _,
                ) => Kind::Unavailable,
                (_, 500..=599 | 401 | 403) => Kind::Unavailable,
                _ => Kind::Failed,
            }
        }
        _ => Kind::Failed,
    };
    backend(kind, context, DisplayErrorContext(&error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    fn answered(status: u16, code: &str) -> SdkError<GetObjectError, HttpResponse> {
        let error = GetObjectError::generic(ErrorMetadata::builder().code(code).build());
        let status = status.try_into().expect("status");
        SdkError::service_error(error, HttpResponse::new(status, SdkBody::empty()))
    }

    #[test]
    fn s3_answers_are_classified() {
        let kind = |status, code| match s3("GetObject k", answered(status, code)) {
            StoreError::Backend(error) => match error.kind() {
                BackendKind::Unavailable => "unavailable",
                BackendKind::Exhausted => "exhausted",
                BackendKind::Failed => "failed",
            },
            _ => "other",
        };
        assert_eq!(kind(503, "SlowDown"), "exhausted");
        assert_eq!(kind(500, "InternalError"), "unavailable");
        assert_eq!(kind(403, "AccessDenied"), "unavailable");
        assert_eq!(kind(404, "NoSuchBucket"), "unavailable");
        assert_eq!(kind(400, "InvalidPart"), "failed");
        assert!(is_missing(&answered(404, "NoSuchKey")));
        assert!(is_missing(&answered(404, "NoSuchUpload")));
        assert!(
            !is_missing(&answered(404, "NoSuchBucket")),
            "the storage is missing"
        );
        assert!(!is_missing(&answered(500, "InternalError")));
    }

    #[test]
    fn the_context_names_the_operation() {
        let error = s3("UploadPart data/x #3", answered(400, "InvalidPart"));
        assert!(
            error.to_string().contains("UploadPart data/x #3"),
            "{error}"
        );
    }
}
