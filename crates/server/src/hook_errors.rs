//! The answers to hook refusals and silence, the same for every front-end.

use crate::wire::{Rejection, internal, reject};
use axum::http::StatusCode;
use resumable_core::UploadError;

/// A refusal is answered with the hook's own 4xx and message (the client is to show it); a hook
/// that could not answer with 503, which clients retry.
pub(crate) fn hook_rejection(error: UploadError) -> Rejection {
    match error {
        UploadError::HookRefused { status, message } => {
            let code = StatusCode::from_u16(status.get()).unwrap_or(StatusCode::FORBIDDEN);
            reject(code, message)
        }
        UploadError::HookUnavailable(ref cause) => {
            tracing::warn!(%cause, "a blocking hook did not answer");
            reject(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
        }
        // Only the hook errors come here (see the front-ends' matches).
        other => internal(other),
    }
}
