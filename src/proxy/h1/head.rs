//! Request heads as they go to the guest, and the guest's response heads
//! with the framing of the body that follows them (RFC 9112 §6.3).
//!
//! The guest is not trusted: a head is refused when it is too large, has
//! too many headers, or frames its body ambiguously (Content-Length next to
//! Transfer-Encoding, or lengths that disagree), since a proxy that guessed
//! there could read a second, smuggled response as part of the next exchange.

use std::mem::MaybeUninit;

use bytes::{BufMut, BytesMut};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode, Version};

use super::fields::FieldSpans;
use crate::proxy::headers::{connection_tokens, Present};

/// The largest response head accepted from a guest.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields accepted in one response head.
pub(crate) const MAX_HEADERS: usize = 100;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("the response head is larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("the response head has more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("the response head is malformed: {0}")]
    Malformed(httparse::Error),
    #[error("the response has an invalid status code")]
    InvalidStatus,
    #[error("the response has an invalid header field")]
    InvalidHeader,
    #[error("the response has both Content-Length and Transfer-Encoding")]
    LengthAndTransferEncoding,
    #[error("the response has an invalid or ambiguous Content-Length")]
    InvalidLength,
    #[error("the response switches protocols although no upgrade was asked for")]
    UnaskedUpgrade,
}

/// How the body after a response head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// After this many bytes (0 for HEAD, 1xx, 204 and 304 answers).
    Length(u64),
    /// With the last chunk of a chunked body.
    Chunked,
    /// When the guest closes the connection, which is then not reusable.
    UntilClose,
}

/// A response head read from the guest.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    /// Status, version and headers (the body comes separately).
    pub response: Response<()>,
    pub framing: Framing,
    /// Whether the connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// How a request's body is sent to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    None,
    /// As the client sent it, under its own Content-Length.
    Length,
    /// Chunked (the client's length is unknown).
    Chunked,
}

/// Writes the request line and headers (`extra` after the request's own)
/// in origin form over HTTP/1.1.
pub(crate) fn encode_request<'a>(
    parts: &'a Parts,
    extra: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    framing: RequestFraming,
    out: &mut BytesMut,
) {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.reserve(256);
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in parts.headers.iter().chain(extra) {
        if framing == RequestFraming::Chunked && name == CONTENT_LENGTH {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if framing == RequestFraming::Chunked {
        out.put_slice(b"transfer-encoding: chunked\r\n");
    }
    out.put_slice(b"\r\n");
}

/// Parses a response head at the start of `buf` and takes it out of `buf`;
/// `Ok(None)` while it is incomplete (then `buf` is untouched).
/// `head_request`: the request was HEAD (no body follows). Header values
/// share the head's bytes instead of each being copied.
pub(crate) fn parse_response(buf: &mut BytesMut, head_request: bool) -> Result<Option<ResponseHead>, HeadError> {
    // Uninitialised: zeroing 100 fields (3 KiB) on every parse is
    // measurable at the proxy's request rates.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut fields)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(error) => return Err(HeadError::Malformed(error)),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(HeadError::InvalidStatus)?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(HeadError::UnaskedUpgrade);
    }
    let version = if parsed.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let mut spans = FieldSpans::new();
    spans.note(buf, parsed.headers);
    let head = buf.split_to(len).freeze();
    let (headers, present) = spans.header_map(&head).map_err(|_| HeadError::InvalidHeader)?;
    let framing = framing(status, &headers, present, head_request)?;
    let keep_alive = version == Version::HTTP_11
        && framing != Framing::UntilClose
        && !(present.connection && connection_tokens(&headers).any(|token| token.eq_ignore_ascii_case("close")));
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some(ResponseHead {
        response,
        framing,
        keep_alive,
    }))
}

/// RFC 9112 §6.3, strictly: no body for HEAD, 1xx, 204 and 304; chunked
/// when chunked is the final transfer coding; until close for any other
/// transfer coding or when no length is given.
/// `present`: what was noted of `headers` (lookups only for what is there).
fn framing(
    status: StatusCode,
    headers: &HeaderMap,
    present: Present,
    head_request: bool,
) -> Result<Framing, HeadError> {
    let transfer_encoding = present.transfer_encoding;
    let length = if present.content_length {
        content_length(headers)?
    } else {
        None
    };
    if transfer_encoding && length.is_some() {
        return Err(HeadError::LengthAndTransferEncoding);
    }
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Length(0));
    }
    if transfer_encoding {
        // A value that is not text is a coding other than chunked.
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("?").split(','))
            .map(str::trim)
            .rfind(|coding| !coding.is_empty());
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// The Content-Length, if any: every value (several fields, or a list in
/// one) must be digits and all must agree.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, HeadError> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|byte| *byte == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::InvalidLength);
            }
            let parsed = item.iter().fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'));
            match length {
                Some(previous) if previous != parsed => return Err(HeadError::InvalidLength),
                _ => length = Some(parsed),
            }
        }
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<Option<ResponseHead>, HeadError> {
        parse_response(&mut BytesMut::from(head), false)
    }

    fn framed(head: &str) -> (Framing, bool) {
        let head = parse(head).unwrap().unwrap();
        (head.framing, head.keep_alive)
    }

    #[test]
    fn length_chunked_and_close_delimited_bodies() {
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            (Framing::Chunked, true)
        );
        assert_eq!(framed("HTTP/1.1 200 OK\r\n\r\n"), (Framing::UntilClose, false));
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            (Framing::UntilClose, false)
        );
        // The same length twice is one length.
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n"),
            (Framing::Length(3), true)
        );
    }

    #[test]
    fn bodiless_answers_whatever_their_headers_say() {
        for head in [
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
        ] {
            assert_eq!(framed(head), (Framing::Length(0), true), "{head}");
        }
        let head = parse_response(
            &mut BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, Framing::Length(0));
        assert_eq!(head.response.headers()[CONTENT_LENGTH], "10");
    }

    #[test]
    fn a_parsed_head_is_taken_from_the_buffer_and_what_follows_stays() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Multi: a\r\nx-multi:  b \r\n\r\nhello");
        let head = parse_response(&mut buf, false).unwrap().unwrap();
        assert_eq!(&buf[..], b"hello");
        let values: Vec<_> = head.response.headers().get_all("x-multi").iter().collect();
        assert_eq!(values, ["a", "b"]);
        assert_eq!(head.response.headers()[CONTENT_LENGTH], "5");

        let mut partial = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(parse_response(&mut partial, false).unwrap().is_none());
        assert_eq!(&partial[..], b"HTTP/1.1 200 OK\r\nContent-Le");
    }

    #[test]
    fn only_http_1_1_without_close_is_kept_alive() {
        assert!(!framed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").1);
        assert!(!framed("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n").1);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let refused = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::LengthAndTransferEncoding,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                HeadError::InvalidLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
                HeadError::InvalidLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                HeadError::InvalidLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n",
                HeadError::InvalidLength,
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", HeadError::InvalidLength),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                HeadError::InvalidLength,
            ),
            ("HTTP/1.1 101 Switching Protocols\r\n\r\n", HeadError::UnaskedUpgrade),
        ];
        for (head, error) in refused {
            assert_eq!(parse(head).unwrap_err(), error, "{head}");
        }
    }

    #[test]
    fn oversized_heads_are_refused_and_partial_ones_wait() {
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        let huge = format!("HTTP/1.1 200 OK\r\nX-Big: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(&huge).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let head = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert_eq!(parse(&head).unwrap_err(), HeadError::TooManyHeaders);
        assert!(matches!(parse("HTTP/1.1 2x0 OK\r\n\r\n"), Err(HeadError::Malformed(_))));
    }

    #[test]
    fn requests_go_out_in_origin_form_with_their_framing() {
        let request = hyper::Request::post("http://app.example.test/orders?x=1")
            .header("host", "app.example.test")
            .header("content-length", "3")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let mut out = BytesMut::new();
        let forwarded_for = (
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static("10.0.0.1"),
        );
        let extra = || std::iter::once((&forwarded_for.0, &forwarded_for.1));
        encode_request(&parts, extra(), RequestFraming::Length, &mut out);
        assert_eq!(
            &out[..],
            b"POST /orders?x=1 HTTP/1.1\r\nhost: app.example.test\r\ncontent-length: 3\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
        );
        out.clear();
        encode_request(&parts, std::iter::empty(), RequestFraming::Chunked, &mut out);
        assert_eq!(
            &out[..],
            b"POST /orders?x=1 HTTP/1.1\r\nhost: app.example.test\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
