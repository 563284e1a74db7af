//! The client's side of a connection: the proxy's own HTTP/1.1 loop for
//! ordinary requests, hyper's server for the rest.
//!
//! ```text
//! read head ─▶ parse_request ─┬ Own: route, forward, write the answer ─▶ next head (keep-alive)
//!   (header read timeout)     └ ForHyper: hyper serves the connection from that request on
//! ```
//!
//! Most requests to a preview environment or an agent's web service are
//! bodiless GETs on keep-alive connections, and for those hyper's server
//! machinery (its dispatcher, a timer allocated per request, the service
//! and body adapters) cost about as much CPU as everything else the proxy
//! does. The own loop handles only what it answers exactly as hyper would
//! ([`request`] says what); a connection that needs anything more is
//! handed over to hyper whole, with the bytes already read.

mod date;
mod hyper_server;
mod request;
mod response;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use hyper::Method;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::deadline::Deadline;
use super::handler::{answer, Client, ClientRequest, ProxyState};
use super::headers::client_value;
pub(crate) use request::OwnRequest;
use request::{parse_request, Parsed};

/// Room kept free in the read buffer for a request head.
const READ_ROOM: usize = 4 * 1024;
/// The largest write buffer a connection keeps between answers.
const MAX_KEPT_WRITE_BUFFER: usize = 64 * 1024;

/// Serves one client connection (plain or TLS) until it closes, fails,
/// or the proxy stops.
pub(crate) async fn serve<S>(stream: S, peer: SocketAddr, state: Arc<ProxyState>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Once for the connection, not around every answer: a request's
    // future is large, and each select would move it.
    tokio::select! {
        () = serve_requests(stream, peer, Arc::clone(&state)) => {}
        () = state.hard_stop.wait() => {}
    }
}

async fn serve_requests<S>(mut stream: S, peer: SocketAddr, state: Arc<ProxyState>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client = Arc::new(Client::new(client_value(peer.ip())));
    let mut read = BytesMut::new();
    let mut out = BytesMut::new();
    let head_limit = state.config.header_read_timeout;
    // The time a client has for each head, from when the proxy starts waiting for it.
    let mut head_deadline = Deadline::new(head_limit);
    // Waited on across requests: a wait made for each request would be
    // registered with the token and removed again every time.
    let mut stopping = state.stop.wait();
    loop {
        let next = tokio::select! {
            // Between requests a stopping proxy closes the connection.
            biased;
            () = &mut stopping => return,
            next = head_deadline.within(head_limit, next_request(&mut stream, &mut read)) => next,
        };
        let request = match next {
            Some(Ok(Some(Parsed::Own(request)))) => request,
            Some(Ok(Some(Parsed::ForHyper))) => {
                return hyper_server::serve(stream, read.freeze(), peer, client, state).await;
            }
            Some(Ok(None)) => return,
            Some(Err(error)) => return tracing::debug!(%peer, %error, "reading from the client failed"),
            None => return tracing::debug!(%peer, "the client sent no whole request head in time"),
        };
        match answer_one(&mut stream, &mut out, request, &client, &state).await {
            Ok(true) => {}
            Ok(false) => return shut_down(&mut stream).await,
            Err(error) => return tracing::debug!(%peer, %error, "answering the client failed"),
        }
        if out.capacity() > MAX_KEPT_WRITE_BUFFER {
            out = BytesMut::new();
        }
    }
}

/// Reads until `read` starts with a whole request head (or one for
/// hyper); `None` when the client closed the connection first.
async fn next_request<S: AsyncRead + Unpin>(stream: &mut S, read: &mut BytesMut) -> std::io::Result<Option<Parsed>> {
    loop {
        if !read.is_empty() {
            if let Some(parsed) = parse_request(read) {
                return Ok(Some(parsed));
            }
        }
        if read.capacity() - read.len() < READ_ROOM / 4 {
            read.reserve(READ_ROOM);
        }
        if stream.read_buf(read).await? == 0 {
            return Ok(None);
        }
    }
}

/// Answers one request; `Ok(true)` when the connection carries on.
async fn answer_one<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut BytesMut,
    request: OwnRequest,
    client: &Client,
    state: &ProxyState,
) -> Result<bool, response::WriteError> {
    let head_request = request.method == Method::HEAD;
    let keep_alive = request.keep_alive;
    let answer = answer(state, client, ClientRequest::Own(request)).await;
    let keep_alive = keep_alive && !state.stop.fired();
    let (framing, body) = response::encode_head(answer, head_request, keep_alive, state.hsts.as_ref(), out);
    // On an error the connection ends, and `out` with it.
    response::send(stream, out, body, framing).await?;
    Ok(keep_alive)
}

/// Ends a connection after its last answer: the client reads it whole
/// before the close.
async fn shut_down<S: AsyncWrite + Unpin>(stream: &mut S) {
    let _ = stream.shutdown().await;
}
