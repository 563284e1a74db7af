//! Writing an answer to the client the way hyper's server would: the
//! status line, the headers (a guest's as they came, but the hop-by-hop
//! ones), `Date` and HSTS when the answer has none, framing from the body
//! (its exact length, else chunked), `Connection: close` when the
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
use hyper::header::HeaderValue;
use hyper::StatusCode;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::date;
use crate::proxy::body::{BoxError, ProxyBody};
use crate::proxy::h1::put_field;
use crate::proxy::handler::Answer;
use crate::proxy::headers::{Fields, HopByHop, Present};

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

/// Writes the status line and headers of `answer` into `out` (the
/// guest's fields as they came, but the hop-by-hop ones) and says how its
/// body, returned, follows. `head_request`: the request was HEAD. `hsts`:
/// the Strict-Transport-Security to add when the answer has none.
pub(super) fn encode_head(
    answer: Answer,
    head_request: bool,
    keep_alive: bool,
    hsts: Option<&HeaderValue>,
    out: &mut BytesMut,
) -> (Framing, ProxyBody) {
    match answer {
        Answer::Guest(head, body) => {
            let hop_by_hop = HopByHop::of(&head.fields, head.present);
            let fields = head.fields.each().filter(|(name, _)| !hop_by_hop.stops(name));
            let head = Head {
                status: head.status,
                fields,
                present: head.present,
            };
            (head.encode(&body, head_request, keep_alive, hsts, out), body)
        }
        Answer::Response(response) => {
            let (parts, body) = response.into_parts();
            let head = Head {
                status: parts.status,
                fields: parts.headers.each(),
                present: Present::of(&parts.headers),
            };
            (head.encode(&body, head_request, keep_alive, hsts, out), body)
        }
    }
}

/// An answer's status and the header fields it passes on.
struct Head<F> {
    status: StatusCode,
    fields: F,
    /// What the fields hold of the headers the proxy acts on.
    present: Present,
}

impl<'a, F: Iterator<Item = (&'a [u8], &'a [u8])>> Head<F> {
    fn encode(
        self,
        body: &ProxyBody,
        head_request: bool,
        keep_alive: bool,
        hsts: Option<&HeaderValue>,
        out: &mut BytesMut,
    ) -> Framing {
        let status = self.status;
        let framing = if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Bodiless
        } else {
            body.size_hint().exact().map_or(Framing::Chunked, Framing::Length)
        };
        out.reserve(256);
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
        out.put_slice(b"\r\n");
        // A bodiless answer keeps what the guest said of the body it would
        // have sent (the length of a HEAD's GET); others get the framing
        // of the body that follows.
        let reframed = framing != Framing::Bodiless && (self.present.content_length || self.present.transfer_encoding);
        for (name, value) in self.fields {
            if reframed
                && (name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding"))
            {
                continue;
            }
            put_field(out, name, value);
        }
        match framing {
            Framing::Bodiless => {}
            Framing::Length(length) => put_field(out, b"content-length", itoa::Buffer::new().format(length).as_bytes()),
            Framing::Chunked => put_field(out, b"transfer-encoding", b"chunked"),
        }
        if !self.present.date {
            date::with_now(|now| put_field(out, b"date", now));
        }
        if let Some(hsts) = hsts.filter(|_| !self.present.strict_transport_security) {
            put_field(out, b"strict-transport-security", hsts.as_bytes());
        }
        if !keep_alive {
            put_field(out, b"connection", b"close");
        }
        out.put_slice(b"\r\n");
        framing
    }
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
    use crate::proxy::h1::parse_response;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    fn head_of(answer: Answer, head_request: bool, keep_alive: bool) -> (String, Framing) {
        let mut out = BytesMut::new();
        let (framing, _) = encode_head(answer, head_request, keep_alive, None, &mut out);
        (String::from_utf8(out.to_vec()).unwrap(), framing)
    }

    /// The guest's answer with this head (and `body`), as the exchange
    /// with it gives it.
    fn guest(head: &str, body: ProxyBody) -> Answer {
        let head = parse_response(&mut BytesMut::from(head), false).unwrap().unwrap();
        Answer::Guest(head, body)
    }

    fn streamed(parts: &[&'static str]) -> ProxyBody {
        let frames = parts
            .iter()
            .map(|part| Ok::<_, BoxError>(Frame::data(Bytes::from_static(part.as_bytes()))));
        StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>())).boxed()
    }

    async fn sent(answer: Answer, head_request: bool) -> Result<String, WriteError> {
        let mut out = BytesMut::new();
        let (framing, body) = encode_head(answer, head_request, true, None, &mut out);
        let mut written = Vec::new();
        send(&mut written, &mut out, body, framing).await?;
        assert!(out.is_empty());
        Ok(String::from_utf8(written).unwrap())
    }

    #[test]
    fn a_sized_answer_gets_its_length_a_date_and_close_when_the_connection_ends() {
        let response = json_error(StatusCode::NOT_FOUND, "no route");
        let (head, framing) = head_of(Answer::Response(response), false, false);
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
        let answer = || {
            guest(
                "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n",
                streamed(&[]),
            )
        };
        let (head, framing) = head_of(answer(), true, true);
        assert_eq!(framing, Framing::Bodiless);
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n"
        );
        let not_modified = guest(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n",
            streamed(&[]),
        );
        let (head, framing) = head_of(not_modified, false, true);
        assert_eq!(framing, Framing::Bodiless);
        assert!(
            head.starts_with("HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\ndate: "),
            "{head}"
        );
    }

    #[tokio::test]
    async fn an_answer_of_unknown_length_is_chunked_part_by_part() {
        let answer = guest(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            streamed(&["hello", "", " world"]),
        );
        let written = sent(answer, false).await.unwrap();
        let (head, body) = written.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            head.to_ascii_lowercase().matches("transfer-encoding: chunked").count(),
            1,
            "{head}"
        );
        assert_eq!(body, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    }

    #[tokio::test]
    async fn a_body_that_differs_from_its_length_ends_the_connection() {
        let short = http_body_util::Full::new(Bytes::from_static(b"abc")).map_err(|never| match never {});
        let body = http_body_util::combinators::BoxBody::new(LyingLength {
            inner: short,
            claimed: 5,
        });
        let answer = guest("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", body);
        assert!(matches!(sent(answer, false).await, Err(WriteError::ShortBody)));
    }

    #[test]
    fn the_guests_fields_pass_as_they_came_but_the_hop_by_hop_ones() {
        let answer = guest(
            "HTTP/1.1 200 OK\r\nX-Trace: A b\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
             X-Hop: 1\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 3\r\nProxy-Authenticate: x\r\n\r\n",
            streamed(&["abc"]),
        );
        let (head, framing) = head_of(answer, false, true);
        assert_eq!(framing, Framing::Chunked, "a streamed body of no known length");
        let fields: Vec<&str> = head
            .split("\r\n")
            .skip(1)
            .filter(|line| !line.starts_with("date: "))
            .collect();
        assert_eq!(
            fields,
            [
                "X-Trace: A b",
                "Set-Cookie: a=1",
                "set-cookie: b=2",
                "transfer-encoding: chunked",
                "",
                ""
            ]
        );
    }

    #[test]
    fn strict_transport_security_is_added_unless_the_guest_sent_its_own() {
        let hsts = HeaderValue::from_static("max-age=60");
        let head_with = |answer: Answer| {
            let mut out = BytesMut::new();
            encode_head(answer, false, true, Some(&hsts), &mut out);
            String::from_utf8(out.to_vec()).unwrap()
        };
        let plain = head_with(guest("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", streamed(&[])));
        assert_eq!(
            plain.matches("strict-transport-security: max-age=60\r\n").count(),
            1,
            "{plain}"
        );
        let own = head_with(guest(
            "HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=5\r\nContent-Length: 0\r\n\r\n",
            streamed(&[]),
        ));
        assert!(own.contains("Strict-Transport-Security: max-age=5\r\n"), "{own}");
        assert!(!own.contains("max-age=60"), "{own}");
        let error = head_with(Answer::Response(json_error(StatusCode::BAD_GATEWAY, "x")));
        assert!(error.contains("strict-transport-security: max-age=60\r\n"), "{error}");
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
