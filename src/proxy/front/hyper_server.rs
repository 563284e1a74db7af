//! The rest of a client connection served by hyper's server: whatever the
//! own loop does not answer itself (request bodies, `100 Continue`,
//! upgrades, HTTP/1.0, malformed or huge heads), starting from the bytes
//! the own loop read but did not use.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::proxy::handler::{handle, Client, ProxyState};

/// Serves the connection with hyper until it ends; `read` is what was
/// read from `stream` and not used yet.
pub(super) async fn serve<S>(stream: S, read: Bytes, peer: SocketAddr, client: Arc<Client>, state: Arc<ProxyState>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stop, hard_stop) = (state.stop.token().clone(), state.hard_stop.token().clone());
    let header_read_timeout = state.config.header_read_timeout;
    let service = service_fn(move |request| handle(Arc::clone(&state), Arc::clone(&client), request));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(Rewind { read, stream }), service)
        .with_upgrades();
    tokio::pin!(connection);
    let finished = tokio::select! {
        finished = connection.as_mut() => finished,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                finished = connection.as_mut() => finished,
                _ = hard_stop.cancelled() => return,
            }
        }
    };
    if let Err(error) = finished {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}

/// A stream that yields `read` before what comes from `stream`.
struct Rewind<S> {
    read: Bytes,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let take = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..take]);
        self.read.advance(take);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn what_was_read_comes_before_the_rest_of_the_stream() {
        let (mut far, near) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut far, b" world").await.unwrap();
        drop(far);
        let mut rewind = Rewind {
            read: Bytes::from_static(b"hello"),
            stream: near,
        };
        let mut all = String::new();
        rewind.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
