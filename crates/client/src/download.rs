//! Downloading an upload to a file, resuming a partial download with `Range`.
//!
//! Bytes go to `FILE.part` first; an interrupted download keeps it, and the next run asks only
//! for the rest. The file gets its final name once its length matches what the server
//! announced.

use crate::error::Recovery;
use crate::http::{header_text, protocol, unexpected_for_upload};
use crate::retry::Backoff;
use crate::{Client, ClientError};
use futures_util::StreamExt;
use reqwest::header::RANGE;
use reqwest::{Method, Response, StatusCode, Url};
use resumable_proto::range;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// What happens during a download.
#[derive(Debug, Clone)]
pub enum DownloadEvent {
    /// A partial download continues at `offset`.
    Resumed {
        /// Bytes already in the partial file.
        offset: u64,
    },
    /// Bytes arrived.
    Progress {
        /// Bytes in the file so far.
        received: u64,
        /// The whole length, once known.
        total: Option<u64>,
    },
    /// An attempt failed; the next starts after the delay.
    Retrying {
        /// What failed.
        error: String,
        /// The wait.
        delay: std::time::Duration,
    },
}

/// How a download ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadOutcome {
    /// The file written.
    pub path: PathBuf,
    /// Its length, which matched the server's.
    pub length: u64,
    /// Bytes of an earlier partial download that were kept.
    pub resumed_from: Option<u64>,
}

/// The partial file next to `path`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

impl Client {
    /// The file name a download of the tus upload at `url` should get: its `filename` metadata
    /// when it has one, else the URL's last path segment. Only a last path component is ever
    /// returned (never `..`), so the name is safe to create in the current directory.
    pub async fn suggested_file_name(&self, url: &Url) -> Result<String, ClientError> {
        let status = crate::tus::status(&self.http, url).await?;
        let from_metadata = status.metadata.filename().and_then(safe_file_name);
        let from_url = url
            .path_segments()
            .and_then(|mut segments| segments.next_back())
            .and_then(safe_file_name);
        from_metadata.or(from_url).ok_or_else(|| {
            protocol(
                url,
                "neither the upload nor its URL names a file; name the output",
            )
        })
    }

    /// Downloads `url` to `path`, resuming `path.part` if an earlier download left one, retrying
    /// after network failures; the file's length is checked against the server's.
    pub async fn download(
        &self,
        url: &Url,
        path: &Path,
        events: &(dyn Fn(&DownloadEvent) + Send + Sync),
    ) -> Result<DownloadOutcome, ClientError> {
        let partial = partial_path(path);
        let kept = std::fs::metadata(&partial).map_or(0, |metadata| metadata.len());
        let resumed_from = (kept > 0).then_some(kept);
        if let Some(offset) = resumed_from {
            events(&DownloadEvent::Resumed { offset });
        }
        let mut backoff = Backoff::new(self.config.retry);
        let mut have = kept;
        let length = loop {
            let error = match self.fetch_rest(url, &partial, events).await {
                Ok(length) => break length,
                Err(error) if error.recovery() == Recovery::Retry => error,
                Err(error) => return Err(error),
            };
            let now = std::fs::metadata(&partial).map_or(0, |metadata| metadata.len());
            if now > have {
                backoff.progressed();
            }
            have = now;
            let Some(delay) = backoff.next_delay() else {
                let after = backoff.stuck_for();
                let last = Box::new(error);
                return Err(ClientError::GaveUp { after, last });
            };
            let error = error.to_string();
            events(&DownloadEvent::Retrying { error, delay });
            tokio::time::sleep(delay).await;
        };
        std::fs::rename(&partial, path).map_err(|source| ClientError::File {
            path: path.to_owned(),
            source,
        })?;
        Ok(DownloadOutcome {
            path: path.to_owned(),
            length,
            resumed_from,
        })
    }

    /// One GET for whatever `partial` lacks; the full length once `partial` is complete.
    async fn fetch_rest(
        &self,
        url: &Url,
        partial: &Path,
        events: &(dyn Fn(&DownloadEvent) + Send + Sync),
    ) -> Result<u64, ClientError> {
        loop {
            let have = std::fs::metadata(partial).map_or(0, |metadata| metadata.len());
            let mut request = self.http.request(Method::GET, url);
            if have > 0 {
                request = request.header(RANGE, format!("bytes={have}-"));
            }
            let response = self.http.send("GET", url, request).await?;
            let (start, total) = match response.status() {
                StatusCode::OK => (0, response.content_length()),
                StatusCode::PARTIAL_CONTENT => {
                    let (start, total) = content_range(url, &response)?;
                    (start, Some(total))
                }
                StatusCode::RANGE_NOT_SATISFIABLE
                    if unsatisfied_length(&response) == Some(have) =>
                {
                    return Ok(have);
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    // The partial file is longer than the representation: not its prefix.
                    remove(partial)?;
                    continue;
                }
                _ => return Err(unexpected_for_upload("GET", url, response).await),
            };
            if start != 0 && start != have {
                let reason = format!("asked for bytes from {have}, got them from {start}");
                return Err(protocol(url, reason));
            }
            let received = write_body(url, response, partial, start, total, events).await?;
            return match total {
                Some(total) if received != total => Err(protocol(
                    url,
                    format!("the body ended after {received} of {total} bytes"),
                )),
                _ => Ok(received),
            };
        }
    }
}

/// The last path component of `name`, unless it is empty, `.` or `..`.
fn safe_file_name(name: &str) -> Option<String> {
    let name = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    let usable = !name.is_empty() && name != "." && name != ".." && !name.contains('\0');
    usable.then(|| name.to_owned())
}

fn remove(path: &Path) -> Result<(), ClientError> {
    std::fs::remove_file(path).map_err(|source| ClientError::File {
        path: path.to_owned(),
        source,
    })
}

/// The length a `416` names in `Content-Range: bytes */LENGTH`.
fn unsatisfied_length(response: &Response) -> Option<u64> {
    header_text(response, "content-range")
        .and_then(|value| value.strip_prefix("bytes */"))
        .and_then(|total| resumable_proto::parse_u64(total.as_bytes()).ok())
}

/// `Content-Range: bytes START-END/TOTAL` of a `206`.
fn content_range(url: &Url, response: &Response) -> Result<(u64, u64), ClientError> {
    let value = header_text(response, "content-range")
        .ok_or_else(|| protocol(url, "a 206 without Content-Range"))?;
    let (range, total) = range::parse_content_range(value.as_bytes())
        .ok_or_else(|| protocol(url, format!("Content-Range {value:?}")))?;
    Ok((range.start, total))
}

/// Writes the body to `partial` from `start` (appending, or truncating when `start` is 0). Every
/// byte that arrived is kept and synced, even when the connection fails midway.
async fn write_body(
    url: &Url,
    response: Response,
    partial: &Path,
    start: u64,
    total: Option<u64>,
    events: &(dyn Fn(&DownloadEvent) + Send + Sync),
) -> Result<u64, ClientError> {
    let file_error = |source| ClientError::File {
        path: partial.to_owned(),
        source,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(start != 0)
        .truncate(start == 0)
        .open(partial)
        .await
        .map_err(file_error)?;
    let mut received = start;
    let mut body = response.bytes_stream();
    let mut failure = None;
    while let Some(piece) = body.next().await {
        let piece = match piece {
            Ok(piece) => piece,
            Err(source) => {
                failure = Some(ClientError::Network {
                    method: "GET",
                    url: url.to_string(),
                    source,
                });
                break;
            }
        };
        file.write_all(&piece).await.map_err(file_error)?;
        received += piece.len() as u64;
        events(&DownloadEvent::Progress { received, total });
    }
    file.flush().await.map_err(file_error)?;
    file.sync_all().await.map_err(file_error)?;
    match failure {
        Some(error) => Err(error),
        None => Ok(received),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_in_the_directory() {
        assert_eq!(safe_file_name("report.pdf").as_deref(), Some("report.pdf"));
        assert_eq!(
            safe_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(safe_file_name("C:\\x\\y.txt").as_deref(), Some("y.txt"));
        assert_eq!(safe_file_name(".."), None);
        assert_eq!(safe_file_name("a/"), None);
        assert_eq!(safe_file_name(""), None);
    }

    #[test]
    fn partial_files_sit_next_to_the_output() {
        assert_eq!(
            partial_path(Path::new("/tmp/a.bin")),
            Path::new("/tmp/a.bin.part")
        );
    }
}
