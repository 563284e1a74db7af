//! The CLI's HTTP client: hyper 1, HTTP/1.1, one connection per request,
//! over TCP (`HATCH_URL=http://host:port`), TLS (`https://host:port`,
//! trusting HATCH_CA_CERT or the system's CAs) or a Unix socket (`unix:/path`).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use super::CliError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `tls`: an `https://` URL.
    Tcp {
        host: String,
        port: u16,
        tls: bool,
    },
    Unix(PathBuf),
}

impl Endpoint {
    /// `http://host[:port]`, `https://host[:port]` or `unix:/path/to.sock`.
    pub fn parse(url: &str) -> Result<Endpoint, CliError> {
        let bad = || {
            CliError::Usage(format!(
                "HATCH_URL {url:?}: expected http://host:port, https://host:port or unix:/path/to.sock"
            ))
        };
        if let Some(path) = url.strip_prefix("unix:") {
            return Ok(Endpoint::Unix(PathBuf::from(path.trim_start_matches("//"))));
        }
        let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => return Err(bad()),
        };
        let default_port = if tls { 443 } else { 80 };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                (host, port.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, default_port),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Endpoint::Tcp {
            host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
            port,
            tls,
        })
    }

    /// The host a user reaches forwarded VM ports on (the daemon's host).
    pub fn ssh_host(&self) -> String {
        match self {
            Endpoint::Tcp { host, .. } if host != "0.0.0.0" && host != "::" => host.clone(),
            _ => "127.0.0.1".to_string(),
        }
    }
}

/// A stream to the daemon: TCP, TLS or a Unix socket.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A request body: whole, or streamed from a file.
pub type RequestBody = BoxBody<Bytes, std::io::Error>;

pub type WebSocket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// A whole request body.
pub fn full(bytes: Bytes) -> RequestBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

pub struct Client {
    pub endpoint: Endpoint,
    pub api_key: Option<String>,
    /// CA certificates (PEM) trusted for `https://`, instead of the
    /// system's (HATCH_CA_CERT).
    pub ca_cert: Option<PathBuf>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Client {
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply, CliError> {
        let body = body.map(|value| ("application/json", Bytes::from(value.to_string())));
        self.send(method, path, body).await
    }

    /// Sends any body with its content type.
    pub async fn send(&self, method: Method, path: &str, body: Option<(&str, Bytes)>) -> Result<Reply, CliError> {
        Reply::read(self.open(method, path, body).await?).await
    }

    /// A `GET` whose successful answer streams (followed logs, events):
    /// the response with its body still to read; an error answer is read
    /// whole and returned as the API's error.
    pub async fn open_stream(&self, path: &str) -> Result<hyper::Response<hyper::body::Incoming>, CliError> {
        let response = self.open(Method::GET, path, None).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        match Reply::read(response).await?.success() {
            Err(error) => Err(error),
            Ok(_) => Err(CliError::Http(format!("unexpected answer {status}"))),
        }
    }

    /// Sends a request and answers with the response as it starts, its
    /// body still to be read (for answers that stream, such as followed logs).
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, CliError> {
        let (content_type, body) = match body {
            Some((content_type, bytes)) => (Some(content_type), full(bytes)),
            None => (None, full(Bytes::new())),
        };
        self.open_body(method, path, content_type, body).await
    }

    /// [`Client::open`] with a body that may stream (a file being uploaded).
    pub async fn open_body(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: RequestBody,
    ) -> Result<hyper::Response<hyper::body::Incoming>, CliError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.authority());
        if let Some(key) = &self.api_key {
            builder = builder.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        let request = builder
            .body(body)
            .map_err(|e| CliError::Usage(format!("bad request: {e}")))?;
        let stream = self.connect().await?;
        send(stream, request)
            .await
            .map_err(|error| match (error, &self.endpoint) {
                // A TLS server answers plain HTTP with a TLS alert.
                (CliError::Http(message), Endpoint::Tcp { host, port, tls: false })
                    if message.contains("invalid HTTP version") =>
                {
                    CliError::Http(format!(
                        "{message}: the daemon at {host}:{port} may be serving HTTPS; use an https:// HATCH_URL"
                    ))
                }
                (other, _) => other,
            })
    }

    /// Opens a WebSocket on `path` (the same connection and key as a request);
    /// a refused upgrade is the API's error.
    pub async fn websocket(&self, path: &str) -> Result<WebSocket, CliError> {
        let uri = format!("ws://{}{path}", self.authority())
            .parse()
            .map_err(|e| CliError::Usage(format!("bad request path {path:?}: {e}")))?;
        let mut request = tokio_tungstenite::tungstenite::ClientRequestBuilder::new(uri);
        if let Some(key) = &self.api_key {
            request = request.with_header("Authorization", format!("Bearer {key}"));
        }
        let stream = self.connect().await?;
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let body = Bytes::from(response.into_body().unwrap_or_default());
                let reply = Reply {
                    status,
                    headers: hyper::HeaderMap::new(),
                    body,
                };
                reply.success()?;
                Err(CliError::Http(format!(
                    "the daemon did not upgrade to a WebSocket ({status})"
                )))
            }
            Err(error) => Err(CliError::Http(format!("WebSocket: {error}"))),
        }
    }

    /// The Host header (and WebSocket URI authority) for the endpoint.
    fn authority(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp { host, port, .. } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Tcp { host, port, .. } => format!("{host}:{port}"),
            Endpoint::Unix(_) => "localhost".to_string(),
        }
    }

    /// A connected stream to the daemon (TLS done for `https://`).
    async fn connect(&self) -> Result<Box<dyn Io>, CliError> {
        Ok(match &self.endpoint {
            Endpoint::Tcp { host, port, tls } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| self.unreachable(e))?;
                if *tls {
                    Box::new(self.tls_handshake(host, *port, stream).await?)
                } else {
                    Box::new(stream)
                }
            }
            Endpoint::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| self.unreachable(e))?,
            ),
        })
    }

    /// TLS over `stream`, verifying the daemon's certificate for `host`.
    async fn tls_handshake(
        &self,
        host: &str,
        port: u16,
        stream: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, CliError> {
        let config = crate::tls::client_config(self.ca_cert.as_deref()).map_err(CliError::Tls)?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| CliError::Usage(format!("HATCH_URL: {host:?} is not a valid TLS server name: {e}")))?;
        tokio_rustls::TlsConnector::from(Arc::clone(&config))
            .connect(name, stream)
            .await
            .map_err(|e| CliError::Tls(crate::tls::explain_client_error(&format!("{host}:{port}"), &e)))
    }

    fn unreachable(&self, source: std::io::Error) -> CliError {
        let at = match &self.endpoint {
            Endpoint::Tcp { host, port, .. } => format!("{host}:{port}"),
            Endpoint::Unix(path) => format!("unix:{}", path.display()),
        };
        CliError::Unreachable { at, source }
    }

    /// Sends a request and decodes a successful JSON answer; API errors become `CliError::Api`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, CliError> {
        let reply = self.request(method, path, body).await?.success()?;
        let body: &[u8] = if reply.body.is_empty() { b"null" } else { &reply.body };
        serde_json::from_slice(body).map_err(|e| CliError::Http(format!("unexpected answer from the daemon: {e}")))
    }
}

impl Reply {
    /// Reads a whole answer.
    pub async fn read(response: hyper::Response<hyper::body::Incoming>) -> Result<Reply, CliError> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| CliError::Http(e.to_string()))?
            .to_bytes();
        Ok(Reply { status, headers, body })
    }

    /// The reply when 2xx, else the API's error.
    pub fn success(self) -> Result<Reply, CliError> {
        if self.status.is_success() {
            return Ok(self);
        }
        let error: Option<Value> = serde_json::from_slice(&self.body).ok();
        let detail = |key: &str| {
            error
                .as_ref()
                .and_then(|e| e["error"][key].as_str())
                .map(str::to_string)
        };
        Err(CliError::Api {
            status: self.status.as_u16(),
            code: detail("code").unwrap_or_else(|| "unknown".into()),
            message: detail("message").unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned()),
        })
    }
}

async fn send(
    stream: Box<dyn Io>,
    request: Request<RequestBody>,
) -> Result<hyper::Response<hyper::body::Incoming>, CliError> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| CliError::Http(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| CliError::Http(e.to_string()));
    if response.is_err() {
        driver.abort();
    }
    response
}

/// Percent-encodes one path segment (ids come from the command line).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
