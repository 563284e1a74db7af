//! A small HTTP/1.1 client over a unix socket (hyper 1), for local control
//! APIs such as Firecracker's. Nothing in here is Firecracker-specific.
//!
//! One connection per request: control APIs are low-traffic, and a fresh
//! connection never inherits a half-read response after an error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("invalid request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("cannot encode the request body: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// A response: status and the whole body.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

impl ApiResponse {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, Clone)]
pub struct UnixHttpClient {
    socket: PathBuf,
    timeout: Duration,
}

impl UnixHttpClient {
    /// `timeout` bounds each whole request (connect, send, read the body).
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        UnixHttpClient {
            socket: socket.into(),
            timeout,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `body` (if any) as JSON.
    pub async fn send_json<T: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&T>,
    ) -> Result<ApiResponse, ApiClientError> {
        let body = body.map(serde_json::to_vec).transpose()?.map(Bytes::from);
        self.send(method, path, body).await
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<ApiResponse, ApiClientError> {
        tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| ApiClientError::Timeout(self.timeout))?
    }

    async fn exchange(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<ApiResponse, ApiClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ApiClientError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection task drives the socket; it ends when `sender` is dropped.
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
        let mut request = Request::builder().method(method).uri(path).header(HOST, "localhost");
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        let result = async {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok(ApiResponse { status, body })
        }
        .await;
        drop(sender);
        driver.abort();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    /// A one-shot server that records the request and answers 204.
    #[tokio::test]
    async fn sends_json_and_reads_status() {
        let dir = tempfile::tempdir().expect("dir");
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&request).contains("{\"a\":1}") {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "client closed early");
                request.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .expect("write");
            String::from_utf8_lossy(&request).into_owned()
        });
        let client = UnixHttpClient::new(&socket, Duration::from_secs(5));
        let response = client
            .send_json(Method::PUT, "/machine-config", Some(&serde_json::json!({"a": 1})))
            .await
            .expect("request");
        assert_eq!(response.status, StatusCode::NO_CONTENT);
        let request = server.await.expect("server");
        assert!(request.starts_with("PUT /machine-config HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains("content-type: application/json"));
    }

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let client = UnixHttpClient::new("/nonexistent/api.sock", Duration::from_secs(1));
        let err = client.send(Method::GET, "/", None).await.expect_err("no server");
        assert!(matches!(err, ApiClientError::Connect { .. }));
    }
}
