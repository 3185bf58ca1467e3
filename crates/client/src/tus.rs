//! tus 1.0.0 requests, one each: `OPTIONS`, creation `POST`, `HEAD`, `PATCH`, `DELETE`.
//!
//! No retrying here: [`crate::upload`] decides what to do about each error.

use crate::http::{
    Http, header_text, number_header, protocol, required_number, unexpected, unexpected_for_upload,
};
use crate::{ChecksumAlgorithm, ClientError};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Body, Method, RequestBuilder, Url};
use resumable_proto::Metadata;
use resumable_proto::concat::UploadConcat;
use resumable_proto::tus::{
    OFFSET_OCTET_STREAM, TUS_CHECKSUM_ALGORITHM, TUS_EXTENSION, TUS_MAX_SIZE, TUS_RESUMABLE,
    TUS_VERSION, UPLOAD_CHECKSUM, UPLOAD_CONCAT, UPLOAD_DEFER_LENGTH, UPLOAD_LENGTH,
    UPLOAD_METADATA, UPLOAD_OFFSET, VERSION,
};

/// What a tus server says it supports (`OPTIONS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `Tus-Version`.
    pub versions: Vec<String>,
    /// `Tus-Extension`.
    pub extensions: Vec<String>,
    /// `Tus-Max-Size`.
    pub max_size: Option<u64>,
    /// `Tus-Checksum-Algorithm`.
    pub checksum_algorithms: Vec<String>,
}

impl Capabilities {
    /// Whether the server advertises `extension`.
    pub fn supports(&self, extension: &str) -> bool {
        self.extensions
            .iter()
            .any(|offered| offered.eq_ignore_ascii_case(extension))
    }

    /// Fails with [`ClientError::Unsupported`] unless the server at `endpoint` takes
    /// `Upload-Checksum` with `algorithm`.
    pub fn check_checksum(
        &self,
        endpoint: &Url,
        algorithm: ChecksumAlgorithm,
    ) -> Result<(), ClientError> {
        if !self.supports("checksum") {
            return Err(ClientError::Unsupported(format!(
                "{endpoint} does not offer per-chunk checksums: its Tus-Extension ({}) lacks \
                 \"checksum\"",
                self.extensions.join(",")
            )));
        }
        let algorithms = &self.checksum_algorithms;
        if !algorithms.is_empty()
            && !algorithms
                .iter()
                .any(|name| name.eq_ignore_ascii_case(algorithm.name()))
        {
            return Err(ClientError::Unsupported(format!(
                "{endpoint} does not accept {algorithm} checksums (Tus-Checksum-Algorithm: {})",
                algorithms.join(",")
            )));
        }
        Ok(())
    }

    /// Fails with [`ClientError::Unsupported`] unless the server at `endpoint` joins partial
    /// uploads into a final one (the `concatenation` extension), which sending a file in parts
    /// needs.
    pub fn check_concatenation(&self, endpoint: &Url) -> Result<(), ClientError> {
        if self.supports("concatenation") {
            return Ok(());
        }
        Err(ClientError::Unsupported(format!(
            "{endpoint} cannot join partial uploads: its Tus-Extension ({}) lacks \
             \"concatenation\"",
            self.extensions.join(",")
        )))
    }
}

/// Where an upload stands, as the server reports it (`HEAD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStatus {
    /// Bytes the server has stored; 0 for a final upload (tus concatenation) whose parts the server
    /// has not joined yet: until then it has no offset of its own.
    pub offset: u64,
    /// The upload's length, `None` while deferred.
    pub length: Option<u64>,
    /// The upload's metadata, when the server reports it.
    pub metadata: Metadata,
}

impl RemoteStatus {
    /// Whether every byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.length == Some(self.offset)
    }
}

fn list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `OPTIONS endpoint`.
pub(crate) async fn capabilities(http: &Http, endpoint: &Url) -> Result<Capabilities, ClientError> {
    let request = http.request(Method::OPTIONS, endpoint);
    let response = http.send("OPTIONS", endpoint, request).await?;
    if !response.status().is_success() {
        return Err(unexpected("OPTIONS", endpoint, response).await);
    }
    Ok(Capabilities {
        versions: list(header_text(&response, TUS_VERSION)),
        extensions: list(header_text(&response, TUS_EXTENSION)),
        max_size: number_header(&response, endpoint, TUS_MAX_SIZE)?,
        checksum_algorithms: list(header_text(&response, TUS_CHECKSUM_ALGORITHM)),
    })
}

/// `POST endpoint` (creation): a new upload of `length` bytes; its absolute URL.
pub(crate) async fn create(
    http: &Http,
    endpoint: &Url,
    length: u64,
    metadata: &Metadata,
) -> Result<Url, ClientError> {
    let request = creation(http, endpoint, metadata).header(UPLOAD_LENGTH, length);
    created(http, endpoint, request).await
}

/// `POST endpoint` with `Upload-Concat: partial`: a part of `length` bytes of a future final
/// upload; its absolute URL.
pub(crate) async fn create_partial(
    http: &Http,
    endpoint: &Url,
    length: u64,
) -> Result<Url, ClientError> {
    let request = creation(http, endpoint, &Metadata::default())
        .header(UPLOAD_LENGTH, length)
        .header(UPLOAD_CONCAT, UploadConcat::Partial.encode());
    created(http, endpoint, request).await
}

/// `POST endpoint` with `Upload-Concat: final;...`: the upload that is `parts` joined in order
/// (its length is theirs, so none is sent); its absolute URL.
pub(crate) async fn create_final(
    http: &Http,
    endpoint: &Url,
    parts: &[Url],
    metadata: &Metadata,
) -> Result<Url, ClientError> {
    let concat = UploadConcat::Final(parts.iter().map(Url::to_string).collect());
    let request = creation(http, endpoint, metadata).header(UPLOAD_CONCAT, concat.encode());
    created(http, endpoint, request).await
}

/// A creation `POST` without a body.
fn creation(http: &Http, endpoint: &Url, metadata: &Metadata) -> RequestBuilder {
    let request = http
        .request(Method::POST, endpoint)
        .header(TUS_RESUMABLE, VERSION)
        .header(CONTENT_LENGTH, 0);
    if metadata.is_empty() {
        request
    } else {
        request.header(UPLOAD_METADATA, metadata.encode_tus())
    }
}

/// Sends a creation `POST`; the new upload's absolute URL.
async fn created(http: &Http, endpoint: &Url, request: RequestBuilder) -> Result<Url, ClientError> {
    let response = http.send("POST", endpoint, request).await?;
    if response.status() != reqwest::StatusCode::CREATED {
        return Err(unexpected("POST", endpoint, response).await);
    }
    let location = header_text(&response, LOCATION.as_str())
        .ok_or_else(|| protocol(endpoint, "the creation answer has no Location"))?;
    endpoint
        .join(location)
        .map_err(|error| protocol(endpoint, format!("Location {location:?}: {error}")))
}

/// `HEAD url`: the server's offset.
pub(crate) async fn status(http: &Http, url: &Url) -> Result<RemoteStatus, ClientError> {
    let request = http
        .request(Method::HEAD, url)
        .header(TUS_RESUMABLE, VERSION);
    let response = http.send("HEAD", url, request).await?;
    if !response.status().is_success() {
        return Err(unexpected_for_upload("HEAD", url, response).await);
    }
    let is_final = response
        .headers()
        .get(UPLOAD_CONCAT)
        .and_then(|value| UploadConcat::parse(value.as_bytes()).ok())
        .is_some_and(|concat| matches!(concat, UploadConcat::Final(_)));
    let offset = match number_header(&response, url, UPLOAD_OFFSET)? {
        Some(offset) => offset,
        // A final upload shows no offset until the server has joined its parts.
        None if is_final => 0,
        None => return Err(protocol(url, "the answer has no Upload-Offset header")),
    };
    let length = number_header(&response, url, UPLOAD_LENGTH)?;
    if length.is_none() && response.headers().get(UPLOAD_DEFER_LENGTH).is_none() {
        return Err(protocol(
            url,
            "the answer has neither Upload-Length nor Upload-Defer-Length",
        ));
    }
    if length.is_some_and(|length| offset > length) {
        return Err(protocol(
            url,
            format!("Upload-Offset {offset} is past Upload-Length"),
        ));
    }
    let metadata = response
        .headers()
        .get(UPLOAD_METADATA)
        .and_then(|value| Metadata::parse_tus(value.as_bytes()).ok())
        .unwrap_or_default();
    Ok(RemoteStatus {
        offset,
        length,
        metadata,
    })
}

/// One `PATCH`, parsed.
pub(crate) struct Patch {
    /// Where the body starts.
    pub(crate) offset: u64,
    /// The body's length.
    pub(crate) length: u64,
    /// The body, streamed.
    pub(crate) body: Body,
    /// `Upload-Checksum` of the body, when asked for.
    pub(crate) checksum: Option<String>,
}

/// `PATCH url`: appends the body at `patch.offset`; the server's new offset.
pub(crate) async fn append(http: &Http, url: &Url, patch: Patch) -> Result<u64, ClientError> {
    let mut request = http
        .request(Method::PATCH, url)
        .header(TUS_RESUMABLE, VERSION)
        .header(UPLOAD_OFFSET, patch.offset)
        .header(CONTENT_TYPE, OFFSET_OCTET_STREAM)
        .header(CONTENT_LENGTH, patch.length)
        .body(patch.body);
    if let Some(checksum) = patch.checksum {
        request = request.header(UPLOAD_CHECKSUM, checksum);
    }
    let response = http.send("PATCH", url, request).await?;
    if !response.status().is_success() {
        return Err(unexpected_for_upload("PATCH", url, response).await);
    }
    let offset = required_number(&response, url, UPLOAD_OFFSET)?;
    if offset < patch.offset || offset > patch.offset + patch.length {
        let reason = format!(
            "Upload-Offset {offset} after sending bytes {}..{}",
            patch.offset,
            patch.offset + patch.length
        );
        return Err(protocol(url, reason));
    }
    Ok(offset)
}

/// `DELETE url` (termination).
pub(crate) async fn terminate(http: &Http, url: &Url) -> Result<(), ClientError> {
    let request = http
        .request(Method::DELETE, url)
        .header(TUS_RESUMABLE, VERSION)
        .header(CONTENT_LENGTH, 0);
    let response = http.send("DELETE", url, request).await?;
    if !response.status().is_success() {
        return Err(unexpected_for_upload("DELETE", url, response).await);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_ignore_spaces_and_empty_items() {
        assert_eq!(
            list(Some("creation, termination,,checksum ")),
            ["creation", "termination", "checksum"]
        );
        assert!(list(None).is_empty());
    }

    #[test]
    fn checksums_need_the_extension_and_the_algorithm() {
        let endpoint = Url::parse("http://h/files/").unwrap();
        let without = Capabilities {
            extensions: list(Some("creation,termination")),
            ..Capabilities::default()
        };
        let error = without
            .check_checksum(&endpoint, ChecksumAlgorithm::Sha256)
            .unwrap_err()
            .to_string();
        assert!(error.contains("creation,termination"), "{error}");
        let with = Capabilities {
            extensions: list(Some("creation,checksum")),
            checksum_algorithms: list(Some("sha1,md5")),
            ..Capabilities::default()
        };
        assert!(
            with.check_checksum(&endpoint, ChecksumAlgorithm::Sha1)
                .is_ok()
        );
        assert!(
            with.check_checksum(&endpoint, ChecksumAlgorithm::Sha256)
                .is_err()
        );
    }

    #[test]
    fn extensions_match_without_case() {
        let capabilities = Capabilities {
            extensions: list(Some("creation,Checksum")),
            ..Capabilities::default()
        };
        assert!(capabilities.supports("checksum"));
        assert!(!capabilities.supports("concatenation"));
    }

    #[test]
    fn parts_need_the_concatenation_extension() {
        let endpoint = Url::parse("http://h/files/").unwrap();
        let without = Capabilities {
            extensions: list(Some("creation,termination")),
            ..Capabilities::default()
        };
        let error = without
            .check_concatenation(&endpoint)
            .unwrap_err()
            .to_string();
        assert!(error.contains("creation,termination"), "{error}");
        let with = Capabilities {
            extensions: list(Some("creation,concatenation")),
            ..Capabilities::default()
        };
        assert!(with.check_concatenation(&endpoint).is_ok());
    }
}
