//! The IETF draft "Resumable Uploads for HTTP" (interop version 8), one request each:
//! `OPTIONS` (limits), creation `POST`, `HEAD`, `PATCH`, `DELETE`.
//!
//! Every request names the interop version (`Upload-Draft-Interop-Version: 8`); every field is
//! written and read with `resumable_proto::ietf` (Structured Fields) and
//! `resumable_proto::disposition`. No retrying here: [`crate::upload`] decides what to do about
//! each error. Refusals come as `application/problem+json`; [`crate::http::unexpected`] shows
//! their `detail`.

use crate::ClientError;
use crate::http::{Http, header_text, protocol, unexpected, unexpected_for_upload};
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Body, Method, RequestBuilder, Url};
use resumable_proto::ietf::{
    FieldError, INTEROP_VERSION, InteropVersion, PARTIAL_UPLOAD, UPLOAD_COMPLETE, UPLOAD_LENGTH,
    UPLOAD_LIMIT, UPLOAD_OFFSET, UploadLimit, encode_boolean, encode_integer, parse_boolean,
    parse_integer,
};
use resumable_proto::{Metadata, disposition, tus};

/// The interop version this client speaks: the current draft's.
pub(crate) const VERSION: InteropVersion = InteropVersion::V8;

/// The media type of a new upload's content: the client does not guess file types.
const OCTET_STREAM: &str = "application/octet-stream";

/// Where an upload stands, as an answer about it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadState {
    /// Bytes the server has stored.
    pub(crate) offset: u64,
    /// Whether the server holds the whole upload (`Upload-Complete: ?1`).
    pub(crate) complete: bool,
    /// The upload's length, when the server says.
    pub(crate) length: Option<u64>,
    /// What the server allows (`Upload-Limit`); all `None` when it does not say.
    pub(crate) limit: UploadLimit,
}

/// A request that names the interop version.
fn request(http: &Http, method: Method, url: &Url) -> RequestBuilder {
    http.request(method, url)
        .header(INTEROP_VERSION, integer(u64::from(VERSION.number())))
}

/// An Integer field value. Offsets and lengths past what a Structured Field Integer holds
/// (~888 TiB) cannot be said in this protocol; such a header is left empty, which the server
/// refuses (the upload fails instead of sending a wrong number).
fn integer(value: u64) -> String {
    encode_integer(value).unwrap_or_default()
}

/// A field of an answer, parsed: `None` when absent; an error naming the field when it is
/// repeated or does not parse.
fn field<T>(
    headers: &HeaderMap,
    name: &'static str,
    parse: fn(&[u8]) -> Result<T, FieldError>,
) -> Result<Option<T>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("{name} is given more than once"));
    }
    parse(value.as_bytes()).map(Some).map_err(|error| {
        format!(
            "{name} {:?}: {error}",
            String::from_utf8_lossy(value.as_bytes())
        )
    })
}

/// The `Upload-Limit` of an answer; one that does not parse is ignored, as the draft says.
fn limit(headers: &HeaderMap, url: &Url) -> UploadLimit {
    match field(headers, UPLOAD_LIMIT, UploadLimit::parse) {
        Ok(limit) => limit.unwrap_or_default(),
        Err(reason) => {
            tracing::warn!(%url, %reason, "ignoring the server's Upload-Limit");
            UploadLimit::default()
        }
    }
}

/// The state an answer about an upload describes. `sent` is the offset the client would
/// assume without `Upload-Offset` (an append's answer may leave it out: then all it carried
/// was stored); `None` makes the field required (offset retrieval).
fn state(headers: &HeaderMap, url: &Url, sent: Option<u64>) -> Result<UploadState, ClientError> {
    let offset = field(headers, UPLOAD_OFFSET, parse_integer)
        .map_err(|reason| protocol(url, reason))?
        .or(sent)
        .ok_or_else(|| protocol(url, "the answer has no Upload-Offset"))?;
    let length =
        field(headers, UPLOAD_LENGTH, parse_integer).map_err(|reason| protocol(url, reason))?;
    let complete = field(headers, UPLOAD_COMPLETE, parse_boolean)
        .map_err(|reason| protocol(url, reason))?
        // Without the field: complete once every byte of a known length is stored.
        .unwrap_or(length == Some(offset));
    if let Some(length) = length {
        if offset > length {
            return Err(protocol(
                url,
                format!("Upload-Offset {offset} is past Upload-Length {length}"),
            ));
        }
        if complete && offset != length {
            return Err(protocol(
                url,
                format!("Upload-Complete: ?1 at Upload-Offset {offset} of Upload-Length {length}"),
            ));
        }
    }
    Ok(UploadState {
        offset,
        complete,
        length,
        limit: limit(headers, url),
    })
}

/// `OPTIONS endpoint`: the limits an upload created there gets (none when the server does not
/// say).
pub(crate) async fn limits(http: &Http, endpoint: &Url) -> Result<UploadLimit, ClientError> {
    let request = request(http, Method::OPTIONS, endpoint);
    let response = http.send("OPTIONS", endpoint, request).await?;
    if !response.status().is_success() {
        return Err(unexpected("OPTIONS", endpoint, response).await);
    }
    Ok(limit(response.headers(), endpoint))
}

/// The headers of a creation that are not the draft's own: the file name as
/// `Content-Disposition`, any other metadata as tus `Upload-Metadata` (which servers of the
/// draft read too, as tus-js-client sends it in its draft modes).
fn describe(request: RequestBuilder, metadata: &Metadata) -> RequestBuilder {
    let mut rest = metadata.clone();
    let request = match metadata.filename() {
        Some(name) => {
            rest.remove("filename");
            request.header(CONTENT_DISPOSITION, disposition::inline(name))
        }
        None => request,
    };
    if rest.is_empty() {
        request
    } else {
        request.header(tus::UPLOAD_METADATA, rest.encode_tus())
    }
}

/// `POST endpoint` with `Upload-Complete: ?0` and no content: a new upload of `length` bytes;
/// its absolute URL and its state.
pub(crate) async fn create(
    http: &Http,
    endpoint: &Url,
    length: u64,
    metadata: &Metadata,
) -> Result<(Url, UploadState), ClientError> {
    let request = request(http, Method::POST, endpoint)
        .header(UPLOAD_COMPLETE, encode_boolean(false))
        .header(UPLOAD_LENGTH, integer(length))
        .header(CONTENT_TYPE, OCTET_STREAM)
        .header(CONTENT_LENGTH, 0);
    let request = describe(request, metadata);
    let response = http.send("POST", endpoint, request).await?;
    if !response.status().is_success() {
        return Err(unexpected("POST", endpoint, response).await);
    }
    let location = header_text(&response, LOCATION.as_str())
        .ok_or_else(|| protocol(endpoint, "the creation answer has no Location"))?;
    let url = endpoint
        .join(location)
        .map_err(|error| protocol(endpoint, format!("Location {location:?}: {error}")))?;
    let state = state(response.headers(), endpoint, Some(0))?;
    Ok((url, state))
}

/// `HEAD url`: where the upload stands.
pub(crate) async fn status(http: &Http, url: &Url) -> Result<UploadState, ClientError> {
    let request = request(http, Method::HEAD, url);
    let response = http.send("HEAD", url, request).await?;
    if !response.status().is_success() {
        return Err(unexpected_for_upload("HEAD", url, response).await);
    }
    state(response.headers(), url, None)
}

/// One `PATCH`.
pub(crate) struct Append {
    /// Where the content starts (`Upload-Offset`).
    pub(crate) offset: u64,
    /// The content's length.
    pub(crate) length: u64,
    /// Whether the content ends the upload (`Upload-Complete`).
    pub(crate) complete: bool,
    /// The content, streamed.
    pub(crate) body: Body,
}

/// The headers of an append, as name and value (without the body and the interop version).
fn append_headers(append: &Append) -> [(&'static str, String); 4] {
    [
        (CONTENT_TYPE.as_str(), PARTIAL_UPLOAD.to_owned()),
        (UPLOAD_OFFSET, integer(append.offset)),
        (UPLOAD_COMPLETE, encode_boolean(append.complete).to_owned()),
        (CONTENT_LENGTH.as_str(), append.length.to_string()),
    ]
}

/// `PATCH url`: appends the content at `append.offset`; where the upload stands after it.
pub(crate) async fn append(
    http: &Http,
    url: &Url,
    append: Append,
) -> Result<UploadState, ClientError> {
    let mut request = request(http, Method::PATCH, url);
    for (name, value) in append_headers(&append) {
        request = request.header(name, value);
    }
    let (start, end) = (append.offset, append.offset + append.length);
    let response = http.send("PATCH", url, request.body(append.body)).await?;
    if !response.status().is_success() {
        return Err(unexpected_for_upload("PATCH", url, response).await);
    }
    let state = state(response.headers(), url, Some(end))?;
    if state.offset < start || state.offset > end {
        let reason = format!(
            "Upload-Offset {} after sending bytes {start}..{end}",
            state.offset
        );
        return Err(protocol(url, reason));
    }
    Ok(state)
}

/// `DELETE url` (cancellation).
pub(crate) async fn cancel(http: &Http, url: &Url) -> Result<(), ClientError> {
    let request = request(http, Method::DELETE, url).header(CONTENT_LENGTH, 0);
    let response = http.send("DELETE", url, request).await?;
    if !response.status().is_success() {
        return Err(unexpected_for_upload("DELETE", url, response).await);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(fields: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn url() -> Url {
        Url::parse("http://h/files/1").unwrap()
    }

    #[test]
    fn offset_retrieval_reads_the_drafts_fields() {
        let answer = headers(&[
            ("upload-offset", "100"),
            ("upload-complete", "?0"),
            ("upload-length", "300"),
            (
                "upload-limit",
                "max-size=1000, max-append-size=64, max-age=60",
            ),
        ]);
        let state = state(&answer, &url(), None).unwrap();
        assert_eq!(
            state,
            UploadState {
                offset: 100,
                complete: false,
                length: Some(300),
                limit: UploadLimit {
                    max_size: Some(1000),
                    max_append_size: Some(64),
                    max_age: Some(60),
                    ..UploadLimit::default()
                },
            }
        );
        let done = headers(&[("upload-offset", "3"), ("upload-complete", "?1")]);
        assert!(state_of(&done).complete);
    }

    fn state_of(answer: &HeaderMap) -> UploadState {
        state(answer, &url(), None).unwrap()
    }

    #[test]
    fn a_missing_completeness_means_every_byte_of_a_known_length() {
        let full = headers(&[("upload-offset", "5"), ("upload-length", "5")]);
        assert!(state_of(&full).complete);
        let partial = headers(&[("upload-offset", "4"), ("upload-length", "5")]);
        assert!(!state_of(&partial).complete);
        let unknown = headers(&[("upload-offset", "4")]);
        assert!(!state_of(&unknown).complete);
    }

    #[test]
    fn broken_answers_are_protocol_errors() {
        for broken in [
            &[][..],
            &[("upload-offset", "4.0")],
            &[("upload-offset", "-1")],
            &[("upload-offset", "1"), ("upload-offset", "2")],
            &[("upload-offset", "6"), ("upload-length", "5")],
            &[
                ("upload-offset", "4"),
                ("upload-length", "5"),
                ("upload-complete", "?1"),
            ],
            &[("upload-offset", "4"), ("upload-complete", "1")],
        ] {
            let error = state(&headers(broken), &url(), None).unwrap_err();
            assert!(
                matches!(error, ClientError::Protocol { .. }),
                "{broken:?}: {error}"
            );
        }
    }

    #[test]
    fn an_append_answer_without_an_offset_stored_what_it_carried() {
        let answer = headers(&[("upload-complete", "?0")]);
        assert_eq!(state(&answer, &url(), Some(42)).unwrap().offset, 42);
    }

    #[test]
    fn an_unparsable_limit_is_ignored() {
        let answer = headers(&[("upload-offset", "0"), ("upload-limit", "max-size=\"big\"")]);
        assert_eq!(state_of(&answer).limit, UploadLimit::default());
    }

    #[test]
    fn creations_name_the_file_and_send_other_metadata_as_tus_does() {
        let post = || reqwest::Client::new().post("http://h/files/");
        let mut metadata = Metadata::default();
        metadata
            .insert(
                "filename",
                Some("\u{444}\u{43e}\u{442}\u{43e} 1.jpg".into()),
            )
            .unwrap();
        metadata.insert("album", Some(b"summer".to_vec())).unwrap();
        let built = describe(post(), &metadata).build().unwrap();
        let headers = built.headers();
        assert!(
            headers["content-disposition"]
                .as_bytes()
                .starts_with(b"inline; ")
        );
        assert_eq!(
            disposition::filename(headers["content-disposition"].as_bytes()).as_deref(),
            Some("\u{444}\u{43e}\u{442}\u{43e} 1.jpg")
        );
        let rest = Metadata::parse_tus(headers["upload-metadata"].as_bytes()).unwrap();
        assert_eq!(rest.get("album"), Some(&b"summer"[..]));
        assert_eq!(
            rest.get("filename"),
            None,
            "the name goes in Content-Disposition"
        );

        let mut named = Metadata::default();
        named.insert("filename", Some(b"a.txt".to_vec())).unwrap();
        let built = describe(post(), &named).build().unwrap();
        assert!(!built.headers().contains_key("upload-metadata"));
    }

    #[test]
    fn appends_say_partial_upload_offset_and_completeness() {
        let append = Append {
            offset: 1024,
            length: 512,
            complete: true,
            body: Body::from(Vec::new()),
        };
        let written: Vec<(&str, String)> = append_headers(&append).into_iter().collect();
        assert_eq!(
            written,
            [
                ("content-type", "application/partial-upload".to_owned()),
                ("upload-offset", "1024".to_owned()),
                ("upload-complete", "?1".to_owned()),
                ("content-length", "512".to_owned()),
            ]
        );
        // What the server reads back.
        assert_eq!(parse_integer(written[1].1.as_bytes()), Ok(1024));
        assert_eq!(parse_boolean(written[2].1.as_bytes()), Ok(true));
        assert_eq!(InteropVersion::parse(integer(8).as_bytes()), Some(VERSION));
    }
}
