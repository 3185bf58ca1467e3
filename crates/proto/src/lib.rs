//! Pure parsers and encoders for the wire formats resumable speaks.
//!
//! No I/O happens here: every function turns header bytes into typed values or typed values back
//! into header bytes, so the server and clients share one definition of each format.
//!
//! # Layout
//!
//! - [`number`]: the strict decimal integers every protocol uses for offsets and lengths.
//! - [`forwarded`]: `Forwarded` / `X-Forwarded-*` from a trusted proxy.
//! - [`metadata`]: upload metadata and its tus `Upload-Metadata` encoding.
//! - [`tus`]: tus 1.0.0 header names and values.
//! - [`checksum`]: `Upload-Checksum` and the algorithms served.
//! - [`concat`]: `Upload-Concat` (concatenation).
//! - [`expires`]: `Upload-Expires` dates.
//! - [`ietf`]: the IETF Resumable Uploads draft: interop versions, its Structured Fields,
//!   `Upload-Limit`, RFC 9530 digests, problem types.
//! - [`disposition`]: `Content-Disposition`: the file name an upload sends, and downloads.
//! - [`range`]: `Range` / `Content-Range` for downloads.
//! - [`simple`]: the seed's simple protocol (`X-File-Id`, `X-Start-Byte`, `X-File-Size`).

pub mod checksum;
pub mod concat;
pub mod disposition;
pub mod expires;
pub mod forwarded;
pub mod ietf;
pub mod metadata;
pub mod number;
pub mod range;
pub mod simple;
pub mod tus;

pub use metadata::{Metadata, MetadataError};
pub use number::{NumberError, parse_u64};
