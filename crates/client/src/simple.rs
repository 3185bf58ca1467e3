//! The seed's simple protocol: `GET status` and `POST upload`, relative to a base URL (the page's
//! URL in the seed), with `X-File-Id`, `X-Start-Byte` and `X-File-Size`.

use crate::ClientError;
use crate::http::{Http, header_text, protocol, unexpected};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Body, Method, StatusCode, Url};
use resumable_proto::simple::{FILE_ID, FILE_SIZE, START_BYTE, parse_byte_count};

/// The file id the seed's browser code derives: `name-size-lastModified` (milliseconds), so an
/// upload started in the seed's page can be finished from the command line and back.
///
/// Bytes a header cannot carry as they are (controls, non-ASCII) and `%` are percent-encoded.
pub fn file_id(name: &str, size: u64, modified_millis: u128) -> String {
    let raw = format!("{name}-{size}-{modified_millis}");
    let mut id = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if (b' '..=b'~').contains(&byte) && byte != b'%' {
            id.push(char::from(byte));
        } else {
            id.push_str(&format!("%{byte:02X}"));
        }
    }
    id
}

fn route(base: &Url, path: &str) -> Result<Url, ClientError> {
    base.join(path)
        .map_err(|error| protocol(base, format!("cannot join {path:?}: {error}")))
}

/// Reads the decimal count the simple protocol answers with.
async fn stored_count(url: &Url, response: reqwest::Response) -> Result<u64, ClientError> {
    let body = response
        .text()
        .await
        .map_err(|source| ClientError::Network {
            method: "GET",
            url: url.to_string(),
            source,
        })?;
    parse_byte_count(body.trim().as_bytes())
        .map_err(|error| protocol(url, format!("stored count {body:?}: {error}")))
}

/// `GET status`: how many bytes of `file_id` the server has.
pub(crate) async fn status(http: &Http, base: &Url, file_id: &str) -> Result<u64, ClientError> {
    let url = route(base, "status")?;
    let request = http.request(Method::GET, &url).header(FILE_ID, file_id);
    let response = http.send("GET", &url, request).await?;
    if response.status() != StatusCode::OK {
        return Err(unexpected("GET", &url, response).await);
    }
    stored_count(&url, response).await
}

/// One `POST upload`.
pub(crate) struct Chunk {
    /// `X-Start-Byte`.
    pub(crate) start: u64,
    /// The body's length.
    pub(crate) length: u64,
    /// `X-File-Size`: the whole file's size.
    pub(crate) file_size: u64,
    /// The body, streamed.
    pub(crate) body: Body,
}

/// What the server says after a `POST upload`.
pub(crate) struct Stored {
    /// Bytes stored now.
    pub(crate) count: u64,
    /// Where the upload can be read (`Location`, made absolute), when the server says.
    pub(crate) location: Option<Url>,
}

/// `POST upload`: appends `chunk` if the server has exactly `chunk.start` bytes.
pub(crate) async fn append(
    http: &Http,
    base: &Url,
    file_id: &str,
    chunk: Chunk,
) -> Result<Stored, ClientError> {
    let url = route(base, "upload")?;
    let request = http
        .request(Method::POST, &url)
        .header(FILE_ID, file_id)
        .header(START_BYTE, chunk.start)
        .header(FILE_SIZE, chunk.file_size)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, chunk.length)
        .body(chunk.body);
    let response = http.send("POST", &url, request).await?;
    if response.status() != StatusCode::OK {
        return Err(unexpected("POST", &url, response).await);
    }
    let location = header_text(&response, LOCATION.as_str()).and_then(|text| url.join(text).ok());
    let count = stored_count(&url, response).await?;
    if count < chunk.start || count > chunk.start + chunk.length {
        let reason = format!(
            "stored count {count} after sending bytes {}..{}",
            chunk.start,
            chunk.start + chunk.length
        );
        return Err(protocol(&url, reason));
    }
    Ok(Stored { count, location })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_seed() {
        assert_eq!(
            file_id("notes.txt", 11, 1_700_000_000_000),
            "notes.txt-11-1700000000000"
        );
    }

    #[test]
    fn ids_are_header_safe() {
        assert_eq!(
            file_id("фото 100%.jpg", 1, 2),
            "%D1%84%D0%BE%D1%82%D0%BE 100%25.jpg-1-2"
        );
        assert_eq!(file_id("a\nb", 1, 2), "a%0Ab-1-2");
    }

    #[test]
    fn routes_are_relative_to_the_base() {
        let base = Url::parse("http://h:8080/app/").unwrap();
        assert_eq!(
            route(&base, "status").unwrap().as_str(),
            "http://h:8080/app/status"
        );
        let bare = Url::parse("http://h:8080").unwrap();
        assert_eq!(
            route(&bare, "upload").unwrap().as_str(),
            "http://h:8080/upload"
        );
    }
}
