//! Writing an answer to the client the way hyper's server would: the
//! status line, the headers, `Date` when the answer has none, framing from
//! the body (its exact length, else chunked), `Connection: close` when the
//! connection ends after it.
//!
//! The head and the parts of the body already at hand go out in one write;
//! the buffer is written whenever the body has to be waited for, so a
//! streamed answer (server-sent events, a long download) reaches the
//! client as it comes, not when it ends.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::{BufMut, Bytes, BytesMut};
use hyper::body::Body;
use hyper::header::{HeaderMap, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::date;
use crate::proxy::body::{BoxError, ProxyBody};

/// Body bytes copied next to the head (or the previous part) before
/// writing; a larger part is written on its own, uncopied.
const COALESCE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    #[error("writing to the client failed: {0}")]
    Client(#[source] std::io::Error),
    #[error("the answer's body broke off: {0}")]
    Body(#[source] BoxError),
    #[error("the answer's body ended before its length")]
    ShortBody,
}

/// How the body goes out after the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// None at all (HEAD, 204, 304).
    Bodiless,
    Length(u64),
    Chunked,
}

/// Writes the status line and headers of `response` into `out` and says
/// how its body follows. `head_request`: the request was HEAD.
pub(super) fn encode_head(
    response: &Response<ProxyBody>,
    head_request: bool,
    keep_alive: bool,
    out: &mut BytesMut,
) -> Framing {
    let status = response.status();
    let framing = if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Bodiless
    } else {
        response
            .body()
            .size_hint()
            .exact()
            .map_or(Framing::Chunked, Framing::Length)
    };
    out.reserve(256);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.put_slice(b"\r\n");
    let headers = response.headers();
    for (name, value) in headers {
        // A bodiless answer keeps what the guest said of the body it would
        // have sent (the length of a HEAD's GET); others get the framing
        // of the body that follows.
        if framing != Framing::Bodiless && (name == CONTENT_LENGTH || name == TRANSFER_ENCODING) {
            continue;
        }
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        Framing::Bodiless => {}
        Framing::Length(length) => put_field(out, b"content-length", itoa::Buffer::new().format(length).as_bytes()),
        Framing::Chunked => put_field(out, b"transfer-encoding", b"chunked"),
    }
    if !has(headers, &DATE) {
        date::with_now(|now| put_field(out, b"date", now));
    }
    if !keep_alive {
        put_field(out, b"connection", b"close");
    }
    out.put_slice(b"\r\n");
    framing
}

fn has(headers: &HeaderMap, name: &hyper::header::HeaderName) -> bool {
    !headers.is_empty() && headers.contains_key(name)
}

fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Sends `out` (the head, from [`encode_head`]) and then `body` as
/// `framing` says; `out` is empty again afterwards.
pub(super) async fn send<S>(
    stream: &mut S,
    out: &mut BytesMut,
    mut body: ProxyBody,
    framing: Framing,
) -> Result<(), WriteError>
where
    S: AsyncWrite + Unpin,
{
    let mut left = match framing {
        Framing::Bodiless => return flush(stream, out).await,
        Framing::Length(length) => Some(length),
        Framing::Chunked => None,
    };
    while !body.is_end_stream() {
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // Nothing more at hand: what is buffered goes out first.
                flush(stream, out).await?;
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(WriteError::Body)?.into_data() else {
            // Trailers are not passed on.
            continue;
        };
        if data.is_empty() {
            continue;
        }
        match left.as_mut() {
            Some(left) => {
                // More than the length announced would be read by the client
                // as the start of the next answer.
                *left = left.checked_sub(data.len() as u64).ok_or(WriteError::ShortBody)?;
                put_data(stream, out, data).await?;
            }
            None => {
                out.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
                put_data(stream, out, data).await?;
                out.put_slice(b"\r\n");
            }
        }
    }
    match left {
        Some(0) => {}
        Some(_) => return Err(WriteError::ShortBody),
        None => out.put_slice(b"0\r\n\r\n"),
    }
    flush(stream, out).await
}

async fn put_data<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut BytesMut, data: Bytes) -> Result<(), WriteError> {
    if out.len() + data.len() <= COALESCE {
        out.put_slice(&data);
        return Ok(());
    }
    flush(stream, out).await?;
    stream.write_all(&data).await.map_err(WriteError::Client)
}

async fn flush<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut BytesMut) -> Result<(), WriteError> {
    if !out.is_empty() {
        stream.write_all(out).await.map_err(WriteError::Client)?;
        out.clear();
    }
    // TLS holds what was written until flushed.
    stream.flush().await.map_err(WriteError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::body::json_error;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    fn head_of(response: &Response<ProxyBody>, head_request: bool, keep_alive: bool) -> (String, Framing) {
        let mut out = BytesMut::new();
        let framing = encode_head(response, head_request, keep_alive, &mut out);
        (String::from_utf8(out.to_vec()).unwrap(), framing)
    }

    fn streamed(parts: &[&'static str]) -> ProxyBody {
        let frames = parts
            .iter()
            .map(|part| Ok::<_, BoxError>(Frame::data(Bytes::from_static(part.as_bytes()))));
        StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>())).boxed()
    }

    async fn sent(response: Response<ProxyBody>, head_request: bool) -> Result<String, WriteError> {
        let mut out = BytesMut::new();
        let framing = encode_head(&response, head_request, true, &mut out);
        let mut written = Vec::new();
        send(&mut written, &mut out, response.into_body(), framing).await?;
        assert!(out.is_empty());
        Ok(String::from_utf8(written).unwrap())
    }

    #[test]
    fn a_sized_answer_gets_its_length_a_date_and_close_when_the_connection_ends() {
        let response = json_error(StatusCode::NOT_FOUND, "no route");
        let (head, framing) = head_of(&response, false, false);
        assert_eq!(framing, Framing::Length(r#"{"error":"no route"}"#.len() as u64));
        assert!(
            head.starts_with(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 20\r\ndate: "
            ),
            "{head}"
        );
        assert!(head.ends_with(" GMT\r\nconnection: close\r\n\r\n"), "{head}");
    }

    #[test]
    fn head_and_not_modified_answers_keep_the_guests_length_and_send_no_body() {
        let mut response = Response::new(streamed(&[]));
        response.headers_mut().insert(CONTENT_LENGTH, "1234".parse().unwrap());
        response
            .headers_mut()
            .insert(DATE, "Tue, 01 Dec 2026 00:00:00 GMT".parse().unwrap());
        let (head, framing) = head_of(&response, true, true);
        assert_eq!(framing, Framing::Bodiless);
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n"
        );
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        assert_eq!(head_of(&response, false, true).1, Framing::Bodiless);
    }

    #[tokio::test]
    async fn an_answer_of_unknown_length_is_chunked_part_by_part() {
        let mut response = Response::new(streamed(&["hello", "", " world"]));
        response
            .headers_mut()
            .insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        let written = sent(response, false).await.unwrap();
        let (head, body) = written.split_once("\r\n\r\n").unwrap();
        assert_eq!(head.matches("transfer-encoding: chunked").count(), 1, "{head}");
        assert_eq!(body, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    }

    #[tokio::test]
    async fn a_body_that_differs_from_its_length_ends_the_connection() {
        let short = http_body_util::Full::new(Bytes::from_static(b"abc")).map_err(|never| match never {});
        let mut response = Response::new(http_body_util::combinators::BoxBody::new(LyingLength {
            inner: short,
            claimed: 5,
        }));
        response.headers_mut().insert(CONTENT_LENGTH, "5".parse().unwrap());
        assert!(matches!(sent(response, false).await, Err(WriteError::ShortBody)));
    }

    /// A fake body that claims more bytes than it has, as a guest that
    /// closes early would leave the proxy's body without an error.
    struct LyingLength<B> {
        inner: B,
        claimed: u64,
    }

    impl<B: Body<Data = Bytes, Error = BoxError> + Unpin> Body for LyingLength<B> {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Pin::new(&mut self.inner).poll_frame(cx)
        }

        fn size_hint(&self) -> hyper::body::SizeHint {
            hyper::body::SizeHint::with_exact(self.claimed)
        }
    }
}
