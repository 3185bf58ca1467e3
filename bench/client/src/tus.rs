//! Just enough tus 1.0.0 for a benchmark: creation (`POST` with `Upload-Length`), `PATCH` and
//! `HEAD`, each on one keep-alive connection that the caller owns: HTTP/1.1, or HTTP/2 with prior
//! knowledge (cleartext h2c) for an endpoint made [`Endpoint::http2`].

use crate::body::PatchBody;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// What went wrong with one request.
#[derive(Debug, Error)]
pub enum TusError {
    /// The endpoint is not `http://HOST:PORT/PATH`.
    #[error("bad endpoint {0:?}: expected http://HOST:PORT/PATH")]
    BadEndpoint(String),
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    /// The HTTP exchange failed (connection closed, malformed response, …).
    #[error("{method}: {source}")]
    Http {
        /// The request's method.
        method: Method,
        /// What hyper said.
        source: hyper::Error,
    },
    /// The server answered with a status the request does not expect.
    #[error("{method} answered {status}: {body}")]
    Status {
        /// The request's method.
        method: Method,
        /// What the server answered.
        status: StatusCode,
        /// The start of the response body, for the error message.
        body: String,
    },
    /// A step took longer than its bound.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// A response lacks a header tus requires, or it is malformed.
    #[error("{method} answered without a valid {header}")]
    MissingHeader {
        /// The request's method.
        method: Method,
        /// The header.
        header: &'static str,
    },
}

/// A tus creation URL: where to connect and which path to `POST` to.
#[derive(Clone, Debug)]
pub struct Endpoint {
    address: SocketAddr,
    authority: String,
    path: String,
    http2: bool,
}

impl Endpoint {
    /// Parses `http://IP:PORT/PATH` (an IP, so no name lookup happens inside a measurement).
    pub fn parse(url: &str) -> Result<Self, TusError> {
        let bad = || TusError::BadEndpoint(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        let address = authority.as_str().parse().map_err(|_| bad())?;
        Ok(Endpoint {
            address,
            authority: authority.to_string(),
            path: uri.path().to_owned(),
            http2: false,
        })
    }

    /// The same endpoint over HTTP/2 with prior knowledge (one stream at a time per connection,
    /// as the HTTP/1.1 connections have one request at a time). hyper's client defaults: it
    /// sends as fast as the server's flow-control windows let it.
    pub fn http2(self) -> Self {
        Endpoint {
            http2: true,
            ..self
        }
    }

    /// The address connections go to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `IP:PORT`, as sent in `Host`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// A new keep-alive connection to the endpoint's server.
    pub async fn connect(&self) -> Result<Connection, TusError> {
        let stream = TcpStream::connect(self.address).await?;
        stream.set_nodelay(true)?;
        let handshake = |source| TusError::Http {
            method: Method::GET,
            source,
        };
        // The connection's errors surface through the requests that see them.
        let (sender, driver) = if self.http2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(handshake)?;
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            (Sender::Http2(sender), driver)
        } else {
            let (sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(handshake)?;
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            (Sender::Http1(sender), driver)
        };
        Ok(Connection {
            sender,
            driver,
            endpoint: self.clone(),
            closing: false,
        })
    }
}

/// One connection; dropping it closes the socket.
pub struct Connection {
    sender: Sender,
    /// Drives the socket; aborted on drop so a held request never outlives its connection.
    driver: JoinHandle<()>,
    endpoint: Endpoint,
    /// The last response said `Connection: close` (moto's server does, every time): the next
    /// request goes on a new connection.
    closing: bool,
}

/// A connection's request half.
enum Sender {
    Http1(http1::SendRequest<PatchBody>),
    Http2(http2::SendRequest<PatchBody>),
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    /// Creates an upload of `length` bytes and returns its path (from `Location`).
    pub async fn create(&mut self, length: u64) -> Result<String, TusError> {
        let request = self
            .request(Method::POST, &self.endpoint.path)
            .header("Upload-Length", length)
            .body(PatchBody::Empty)
            .expect("valid request");
        let headers = self.exchange(request, StatusCode::CREATED).await?;
        let location = headers
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or(TusError::MissingHeader {
                method: Method::POST,
                header: "Location",
            })?;
        Ok(self.path_of(location))
    }

    /// Sends `body` (of `len` bytes) at `offset` and returns the server's new offset.
    pub async fn patch(
        &mut self,
        upload: &str,
        offset: u64,
        len: u64,
        body: PatchBody,
    ) -> Result<u64, TusError> {
        let request = self.patch_request(upload, offset, len, body);
        let headers = self.exchange(request, StatusCode::NO_CONTENT).await?;
        upload_offset(&headers, Method::PATCH)
    }

    /// A `PATCH` request, to send with [`Connection::exchange`] (or hold, with a stalled body).
    pub fn patch_request(
        &self,
        upload: &str,
        offset: u64,
        len: u64,
        body: PatchBody,
    ) -> Request<PatchBody> {
        self.request(Method::PATCH, upload)
            .header("Upload-Offset", offset)
            .header(header::CONTENT_TYPE, "application/offset+octet-stream")
            .header(header::CONTENT_LENGTH, len)
            .body(body)
            .expect("valid request")
    }

    /// The upload's offset, from `HEAD`.
    pub async fn head(&mut self, upload: &str) -> Result<u64, TusError> {
        let request = self
            .request(Method::HEAD, upload)
            .body(PatchBody::Empty)
            .expect("valid request");
        let headers = self.exchange(request, StatusCode::OK).await?;
        upload_offset(&headers, Method::HEAD)
    }

    /// Sends `request`, reads the whole (small) response body so the connection can be reused,
    /// and returns the headers if the status is `expected` (tus peers answer `PATCH` with 204,
    /// `POST` with 201, `HEAD` with 200).
    pub async fn exchange(
        &mut self,
        request: Request<PatchBody>,
        expected: StatusCode,
    ) -> Result<HeaderMap, TusError> {
        let (headers, _) = self.exchange_with_body(request, expected).await?;
        Ok(headers)
    }

    /// [`Connection::exchange`], also returning the (small) response body: S3 answers in XML.
    pub async fn exchange_with_body(
        &mut self,
        request: Request<PatchBody>,
        expected: StatusCode,
    ) -> Result<(HeaderMap, Bytes), TusError> {
        if self.closing {
            *self = self.endpoint.connect().await?;
        }
        let method = request.method().clone();
        let http = |source| TusError::Http {
            method: method.clone(),
            source,
        };
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await.map_err(http)?;
                sender.send_request(request).await.map_err(http)?
            }
            Sender::Http2(sender) => {
                sender.ready().await.map_err(http)?;
                sender.send_request(request).await.map_err(http)?
            }
        };
        let (parts, body) = response.into_parts();
        self.closing = parts
            .headers
            .get(header::CONNECTION)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = body.collect().await.map_err(http)?.to_bytes();
        if parts.status != expected {
            let body = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(TusError::Status {
                method,
                status: parts.status,
                body,
            });
        }
        Ok((parts.headers, body))
    }

    fn request(&self, method: Method, path: &str) -> http::request::Builder {
        let request = Request::builder().method(method);
        let request = match self.sender {
            // HTTP/2 names the scheme and authority in pseudo-headers, taken from the URI.
            Sender::Http2(_) => request.uri(format!("http://{}{path}", self.endpoint.authority)),
            Sender::Http1(_) => request
                .uri(path)
                .header(header::HOST, &self.endpoint.authority),
        };
        request.header("Tus-Resumable", "1.0.0")
    }

    /// The path part of a `Location`: servers answer absolute URLs naming whatever host they
    /// think they are (`localhost`), and requests go to the endpoint's address anyway.
    fn path_of(&self, location: &str) -> String {
        if let Some(rest) = location
            .strip_prefix("http://")
            .or_else(|| location.strip_prefix("https://"))
        {
            return rest
                .find('/')
                .map_or("/", |slash| &rest[slash..])
                .to_owned();
        }
        if location.starts_with('/') {
            return location.to_owned();
        }
        format!("{}/{location}", self.endpoint.path.trim_end_matches('/'))
    }
}

fn upload_offset(headers: &HeaderMap, method: Method) -> Result<u64, TusError> {
    headers
        .get("Upload-Offset")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .ok_or(TusError::MissingHeader {
            method,
            header: "Upload-Offset",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_an_ip_a_port_and_a_path() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8080/files/").expect("valid");
        assert_eq!(endpoint.address(), "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(endpoint.path, "/files/");
        assert!(Endpoint::parse("https://127.0.0.1:8080/files/").is_err());
        assert!(Endpoint::parse("http://localhost:8080/files/").is_err());
    }
}
