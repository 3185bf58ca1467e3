//! What a service error means on the wire, decided once for every front-end.
//!
//! [`classify`] turns an [`UploadError`] into a [`Classified`]: the kind of refusal, the HTTP
//! status, whether a client may retry, a message safe to show, and how many bytes are stored
//! when the error knows. Each front-end then renders it its own way: the simple protocol as
//! text (a 409's body is the stored count), tus with its headers (and 460 for a checksum
//! mismatch), the IETF draft as `application/problem+json`. Internal details are logged here
//! and never reach a client.

use axum::http::StatusCode;
use resumable_core::{BackendError, BackendKind, BodyError, Offset, UploadError};
use std::time::Duration;

/// The kinds of refusal front-ends render differently; everything else is [`Kind::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The request's offset is not the upload's (nothing written).
    OffsetMismatch {
        /// The offset the request gave.
        provided: Offset,
    },
    /// A length contradicts the upload's length, or falls below its stored bytes.
    InconsistentLength,
    /// The body's checksum (or digest) differs; the chunk was discarded.
    ChecksumMismatch,
    /// The body or the upload is over a size limit or quota.
    TooLarge,
    /// The body ended early; what arrived is stored.
    Interrupted,
    /// Anything whose status and message say it all.
    Other,
}

/// A service error, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Classified {
    pub(crate) kind: Kind,
    pub(crate) status: StatusCode,
    /// Short, human-readable, safe to show.
    pub(crate) message: String,
    /// Bytes stored, when the error knows (a client resumes from here).
    pub(crate) stored: Option<Offset>,
    /// Whether the same request may succeed later (busy, unavailable, interrupted).
    pub(crate) retryable: bool,
    /// How long to wait before retrying, when the error knows (`Retry-After`).
    pub(crate) retry_after: Option<Duration>,
}

impl Classified {
    fn new(kind: Kind, status: StatusCode, message: impl Into<String>) -> Self {
        Classified {
            kind,
            status,
            message: message.into(),
            stored: None,
            retryable: status.is_server_error() || status == StatusCode::LOCKED,
            retry_after: None,
        }
    }

    fn other(status: StatusCode, message: impl Into<String>) -> Self {
        Classified::new(Kind::Other, status, message)
    }

    fn stored(mut self, stored: Offset) -> Self {
        self.stored = Some(stored);
        self
    }
}

/// The one status mapping of service errors (no `_` arm: a new error must be placed here).
pub(crate) fn classify(error: UploadError) -> Classified {
    let message = error.to_string();
    match error {
        UploadError::NotFound => Classified::other(StatusCode::NOT_FOUND, "upload not found"),
        UploadError::Expired => Classified::other(StatusCode::GONE, message),
        UploadError::OffsetMismatch { stored, provided } => Classified::new(
            Kind::OffsetMismatch { provided },
            StatusCode::CONFLICT,
            message,
        )
        .stored(stored),
        UploadError::TooLarge { .. } => {
            Classified::new(Kind::TooLarge, StatusCode::PAYLOAD_TOO_LARGE, message)
        }
        // Like an overflow: what was kept is said, so the client does not guess.
        UploadError::QuotaBytes { stored, .. } => {
            let classified =
                Classified::new(Kind::TooLarge, StatusCode::PAYLOAD_TOO_LARGE, message);
            match stored {
                Some(stored) => classified.stored(stored),
                None => classified,
            }
        }
        UploadError::QuotaUploads { .. } => {
            Classified::other(StatusCode::TOO_MANY_REQUESTS, message)
        }
        // The metadata travels in header fields (tus's Upload-Metadata, the draft's
        // Content-Disposition and Content-Type), and it is one field that is too large: RFC 6585
        // §5's case of a single field at fault, with the message naming it. Not 413, which is
        // about the request's content.
        UploadError::MetadataTooLarge { .. } => {
            Classified::other(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, message)
        }
        UploadError::TooManyCreations { retry_after, .. } => {
            let mut classified = Classified::other(StatusCode::TOO_MANY_REQUESTS, message);
            classified.retryable = true;
            classified.retry_after = Some(retry_after);
            classified
        }
        // What was kept (nothing when Content-Length said too much up front, the bytes up to
        // the length when the body overflowed): the client must not guess.
        UploadError::BodyTooLong { stored } => {
            Classified::new(Kind::TooLarge, StatusCode::PAYLOAD_TOO_LARGE, message).stored(stored)
        }
        UploadError::LengthConflict { .. } => {
            Classified::new(Kind::InconsistentLength, StatusCode::BAD_REQUEST, message)
        }
        UploadError::LengthBelowOffset { stored, .. } => {
            Classified::new(Kind::InconsistentLength, StatusCode::BAD_REQUEST, message)
                .stored(stored)
        }
        UploadError::InvalidChecksum(_) | UploadError::InvalidConcat(_) => {
            Classified::other(StatusCode::BAD_REQUEST, message)
        }
        // The bytes are stored: the client must know how many, and that none were checked.
        UploadError::ChecksumNotAnnounced { stored } => {
            Classified::other(StatusCode::BAD_REQUEST, message).stored(stored)
        }
        UploadError::ChecksumMismatch { stored } => {
            Classified::new(Kind::ChecksumMismatch, StatusCode::BAD_REQUEST, message).stored(stored)
        }
        UploadError::FinalUpload => Classified::other(StatusCode::FORBIDDEN, message),
        UploadError::Incomplete => Classified::other(StatusCode::CONFLICT, message),
        UploadError::Interrupted { reason, stored } => interrupted(reason, stored),
        UploadError::Busy => Classified::other(StatusCode::LOCKED, message),
        UploadError::StorageFull => Classified::other(StatusCode::INSUFFICIENT_STORAGE, message),
        UploadError::LockUnavailable(cause) => {
            tracing::error!(%cause, "lock service unavailable");
            Classified::other(
                StatusCode::SERVICE_UNAVAILABLE,
                "lock service unavailable; retry later",
            )
        }
        UploadError::Storage(error) => storage(&error),
        UploadError::Unsupported => Classified::other(StatusCode::NOT_IMPLEMENTED, message),
        UploadError::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            Classified::other(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
        }
        // A refusal is answered with the hook's own 4xx and message (the client is to show
        // it); a hook that could not answer with 503, which clients retry.
        UploadError::HookRefused { status, message } => {
            let code = StatusCode::from_u16(status.get()).unwrap_or(StatusCode::FORBIDDEN);
            Classified::other(code, message)
        }
        UploadError::HookUnavailable(ref cause) => {
            tracing::warn!(%cause, "a blocking hook did not answer");
            Classified::other(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
}

/// A failure of the store's backend: unreachable storage and exhausted resources are 503 (they
/// pass), anything else 500; whether the client is invited to retry is the backend's word
/// ([`BackendError::is_temporary`]), whatever the status. The details go to the log only.
fn storage(error: &BackendError) -> Classified {
    let mut classified = match error.kind() {
        BackendKind::Unavailable => {
            tracing::error!(cause = %error, "storage unavailable");
            Classified::other(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable; retry later",
            )
        }
        BackendKind::Exhausted => {
            tracing::warn!(cause = %error, "out of resources");
            Classified::other(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is busy; retry later",
            )
        }
        BackendKind::Failed => {
            tracing::error!(%error, "storage failed");
            Classified::other(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
        }
    };
    classified.retryable = error.is_temporary();
    classified
}

/// A body that ended early: every byte before the end is stored.
pub(crate) fn interrupted(reason: BodyError, stored: Offset) -> Classified {
    let status = match reason {
        BodyError::Interrupted(_) => StatusCode::BAD_REQUEST,
        // Too slow is a stall spread thin: answered alike.
        BodyError::Stalled | BodyError::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
        BodyError::TakenOver => StatusCode::LOCKED,
        // Both stop a body that could have gone on, and say nothing of the upload: retry.
        BodyError::ShuttingDown | BodyError::LockLost => StatusCode::SERVICE_UNAVAILABLE,
        BodyError::TooLong => StatusCode::PAYLOAD_TOO_LARGE,
    };
    let mut classified = Classified::new(Kind::Interrupted, status, reason.to_string());
    classified.retryable = true;
    classified.stored(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_travel_with_the_errors_that_know_them() {
        let mismatch = classify(UploadError::OffsetMismatch {
            stored: Offset(3),
            provided: Offset(5),
        });
        assert_eq!(mismatch.status, StatusCode::CONFLICT);
        assert_eq!(mismatch.stored, Some(Offset(3)));
        assert_eq!(
            mismatch.kind,
            Kind::OffsetMismatch {
                provided: Offset(5)
            }
        );
        let cut = classify(UploadError::Interrupted {
            stored: Offset(7),
            reason: BodyError::Stalled,
        });
        assert_eq!(
            (cut.status, cut.stored, cut.retryable),
            (StatusCode::REQUEST_TIMEOUT, Some(Offset(7)), true)
        );
        assert_eq!(classify(UploadError::NotFound).stored, None);
    }

    #[test]
    fn internal_details_never_reach_the_message() {
        let classified = classify(UploadError::Internal("/srv/secret/path: EIO".into()));
        assert_eq!(classified.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!classified.message.contains("secret"));
        assert!(classified.retryable);
        let storage = classify(UploadError::Storage(BackendError::unavailable(
            "/srv/secret",
            "gone",
        )));
        assert!(!storage.message.contains("secret"));
    }

    #[test]
    fn a_lock_service_gone_is_a_retryable_503_that_keeps_its_cause_to_the_logs() {
        let unreachable = classify(UploadError::LockUnavailable(
            "redis: connection refused (10.0.0.7:6379)".into(),
        ));
        assert_eq!(
            (unreachable.status, unreachable.retryable),
            (StatusCode::SERVICE_UNAVAILABLE, true)
        );
        assert_eq!(unreachable.message, "lock service unavailable; retry later");
        let lost = classify(UploadError::Interrupted {
            stored: Offset(9),
            reason: BodyError::LockLost,
        });
        assert_eq!(
            (lost.status, lost.stored, lost.retryable),
            (StatusCode::SERVICE_UNAVAILABLE, Some(Offset(9)), true)
        );
        assert!(
            lost.message.contains("lost the upload's lock"),
            "{}",
            lost.message
        );
    }

    #[test]
    fn only_waiting_helps_is_retryable() {
        assert!(classify(UploadError::Busy).retryable);
        assert!(!classify(UploadError::NotFound).retryable);
        assert!(!classify(UploadError::ChecksumMismatch { stored: Offset(0) }).retryable);
    }

    #[test]
    fn backend_kinds_decide_the_status_and_temporary_the_retry() {
        let unavailable = classify(UploadError::Storage(BackendError::unavailable(
            "/srv", "gone",
        )));
        assert_eq!(
            (unavailable.status, unavailable.retryable),
            (StatusCode::SERVICE_UNAVAILABLE, true)
        );
        assert!(unavailable.message.contains("storage unavailable"));
        let exhausted = classify(UploadError::Storage(BackendError::exhausted(
            "fds", "EMFILE",
        )));
        assert_eq!(
            (exhausted.status, exhausted.retryable),
            (StatusCode::SERVICE_UNAVAILABLE, true)
        );
        assert_eq!(exhausted.message, "the server is busy; retry later");
        let failed = classify(UploadError::Storage(BackendError::failed("/srv/x", "EIO")));
        assert_eq!(
            (failed.status, failed.retryable),
            (StatusCode::INTERNAL_SERVER_ERROR, false)
        );
        assert!(!failed.message.contains("srv"));
        let passing = BackendError::failed("object store", "internal error").temporary(true);
        let passing = classify(UploadError::Storage(passing));
        assert_eq!(
            (passing.status, passing.retryable),
            (StatusCode::INTERNAL_SERVER_ERROR, true)
        );
        let lasting = BackendError::unavailable("bucket", "does not exist").temporary(false);
        let lasting = classify(UploadError::Storage(lasting));
        assert_eq!(
            (lasting.status, lasting.retryable),
            (StatusCode::SERVICE_UNAVAILABLE, false)
        );
    }
}
