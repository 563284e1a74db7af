//! The CLI's HTTP client: hyper 1, HTTP/1.1, one connection per request,
//! over TCP (`HATCH_URL=http://host:port`), TLS (`https://host:port`,
//! trusting HATCH_CA_CERT or the system's CAs) or a Unix socket (`unix:/path`).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;

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
        let host = match &self.endpoint {
            Endpoint::Tcp { host, port, .. } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Tcp { host, port, .. } => format!("{host}:{port}"),
            Endpoint::Unix(_) => "localhost".to_string(),
        };
        let mut builder = Request::builder().method(method).uri(path).header(HOST, host);
        if let Some(key) = &self.api_key {
            builder = builder.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let payload = match body {
            Some((content_type, bytes)) => {
                builder = builder.header(CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(payload))
            .map_err(|e| CliError::Usage(format!("bad request: {e}")))?;
        let response = match &self.endpoint {
            Endpoint::Tcp { host, port, tls } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| self.unreachable(e))?;
                if *tls {
                    send(self.tls_handshake(host, *port, stream).await?, request).await?
                } else {
                    send(stream, request).await.map_err(|error| match error {
                        // A TLS server answers plain HTTP with a TLS alert.
                        CliError::Http(message) if message.contains("invalid HTTP version") => CliError::Http(format!(
                            "{message}: the daemon at {host}:{port} may be serving HTTPS; use an https:// HATCH_URL"
                        )),
                        other => other,
                    })?
                }
            }
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| self.unreachable(e))?;
                send(stream, request).await?
            }
        };
        Ok(response)
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
    async fn read(response: hyper::Response<hyper::body::Incoming>) -> Result<Reply, CliError> {
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

async fn send<S>(stream: S, request: Request<Full<Bytes>>) -> Result<hyper::Response<hyper::body::Incoming>, CliError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
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
