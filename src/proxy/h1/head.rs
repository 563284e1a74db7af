//! Request heads as they go to the guest, and the guest's response heads
//! with the framing of the body that follows them (RFC 9112 §6.3).
//!
//! The guest is not trusted: a head is refused when it is too large, has
//! too many headers, or frames its body ambiguously (Content-Length next to
//! Transfer-Encoding, or lengths that disagree), since a proxy that guessed
//! there could read a second, smuggled response as part of the next exchange.

use std::mem::MaybeUninit;

use bytes::{BufMut, BytesMut};
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};

use super::fields::{FieldSpans, RawFields};
use crate::proxy::headers::{Fields, Forwarded, Present};

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
    pub status: StatusCode,
    /// Its header fields as they came (hop-by-hop ones included).
    pub fields: RawFields,
    /// What `fields` holds of the headers the proxy acts on.
    pub present: Present,
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

/// A request head as it goes to the guest.
pub(crate) struct RequestHead<'a, F> {
    pub method: &'a Method,
    /// In origin form (path and query).
    pub target: &'a [u8],
    /// The client's fields that go on ([`crate::proxy::headers::onward`]).
    pub fields: F,
    pub host: &'a HeaderValue,
    pub forwarded: &'a Forwarded,
}

/// Writes the request line, the client's fields, `Host` and the forwarding
/// headers, over HTTP/1.1 with the body's `framing`.
pub(crate) fn encode_request<'a>(
    head: RequestHead<'a, impl Iterator<Item = (&'a [u8], &'a [u8])>>,
    framing: RequestFraming,
    out: &mut BytesMut,
) {
    out.reserve(256);
    out.put_slice(head.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(head.target);
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in head.fields {
        if framing == RequestFraming::Chunked && name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        put_field(out, name, value);
    }
    put_field(out, b"host", head.host.as_bytes());
    for (name, value) in head.forwarded.fields() {
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if framing == RequestFraming::Chunked {
        out.put_slice(b"transfer-encoding: chunked\r\n");
    }
    out.put_slice(b"\r\n");
}

/// Appends one `name: value` line.
pub(crate) fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Parses a response head at the start of `buf` and takes it out of `buf`;
/// `Ok(None)` while it is incomplete (then `buf` is untouched).
/// `head_request`: the request was HEAD (no body follows). The fields keep
/// sharing the head's bytes.
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
    let http_1_1 = parsed.version == Some(1);
    let mut spans = FieldSpans::new();
    spans.note(buf, parsed.headers);
    let (fields, present) = spans.raw(buf.split_to(len).freeze());
    let framing = framing(status, &fields, present, head_request)?;
    let keep_alive = http_1_1 && framing != Framing::UntilClose && !present.says_close(&fields);
    Ok(Some(ResponseHead {
        status,
        fields,
        present,
        framing,
        keep_alive,
    }))
}

/// RFC 9112 §6.3, strictly: no body for HEAD, 1xx, 204 and 304; chunked
/// when chunked is the final transfer coding; until close for any other
/// transfer coding or when no length is given.
/// `present`: what was noted of `fields` (lookups only for what is there).
fn framing(status: StatusCode, fields: &RawFields, present: Present, head_request: bool) -> Result<Framing, HeadError> {
    let transfer_encoding = present.transfer_encoding;
    let length = if present.content_length {
        content_length(fields)?
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
        let last = fields
            .values("transfer-encoding")
            .flat_map(|value| value.split(|byte| *byte == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|coding| !coding.is_empty())
            .last();
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// The Content-Length, if any: every value (several fields, or a list in
/// one) must be digits and all must agree.
fn content_length(fields: &RawFields) -> Result<Option<u64>, HeadError> {
    let mut length = None;
    for value in fields.values("content-length") {
        for item in value.split(|byte| *byte == b',') {
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
        assert_eq!(head.fields.values("content-length").collect::<Vec<_>>(), [b"10"]);
    }

    #[test]
    fn a_parsed_head_is_taken_from_the_buffer_and_what_follows_stays() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Multi: a\r\nx-multi:  b \r\n\r\nhello");
        let head = parse_response(&mut buf, false).unwrap().unwrap();
        assert_eq!(&buf[..], b"hello");
        let values: Vec<_> = head.fields.values("x-multi").collect();
        assert_eq!(values, [b"a", b"b"]);
        assert_eq!(head.fields.values("content-length").collect::<Vec<_>>(), [b"5"]);

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
    fn requests_go_out_with_host_and_forwarding_after_the_clients_fields_and_their_framing() {
        let client = [(&b"Content-Length"[..], &b"3"[..]), (b"accept", b"*/*")];
        let host = HeaderValue::from_static("app.example.test");
        let forwarded = Forwarded::default();
        let head = || RequestHead {
            method: &Method::POST,
            target: b"/orders?x=1",
            fields: client.iter().copied(),
            host: &host,
            forwarded: &forwarded,
        };
        let mut out = BytesMut::new();
        encode_request(head(), RequestFraming::Length, &mut out);
        assert_eq!(
            &out[..],
            b"POST /orders?x=1 HTTP/1.1\r\nContent-Length: 3\r\naccept: */*\r\nhost: app.example.test\r\n\r\n"
        );
        out.clear();
        encode_request(head(), RequestFraming::Chunked, &mut out);
        assert_eq!(
            &out[..],
            b"POST /orders?x=1 HTTP/1.1\r\naccept: */*\r\nhost: app.example.test\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
