//! Reading a client's request head, and deciding whether the proxy's own
//! loop answers it or the connection goes over to hyper's server.
//!
//! The own loop takes only what it can answer exactly as hyper would:
//! HTTP/1.1, an origin-form target, no body, no `Expect`, no upgrade. Any
//! other request, and any head httparse finds malformed or too large, is
//! left unread for hyper, which then serves the rest of the connection
//! (bodies, `100 Continue`, WebSockets, HTTP/1.0, its own 400 and 431
//! answers). The choice is made before anything of the request is acted
//! on, so a request is never half-handled by both.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use hyper::Method;

use crate::proxy::h1::{FieldSpans, RawFields, Span, MAX_HEADERS};
use crate::proxy::headers::{Fields, Present};

/// The largest head the own loop waits for; a longer one goes to hyper,
/// which has its own limit and answers 431 beyond it.
pub(super) const MAX_OWN_HEAD: usize = 16 * 1024;

/// A whole request head, and who answers it.
// Not boxed: made once per request, where a box is one more allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Parsed {
    /// A request the own loop answers, taken from the buffer.
    Own(OwnRequest),
    /// A request for hyper, left in the buffer as it came.
    ForHyper,
}

/// A bodiless HTTP/1.1 request with an origin-form target, its head as
/// it came.
pub(crate) struct OwnRequest {
    pub method: Method,
    /// Where its target (path and query) lies in the head.
    pub target: Span,
    pub fields: RawFields,
    /// What `fields` holds of the headers the proxy acts on.
    pub present: Present,
    /// Whether the client lets the connection carry another request.
    pub keep_alive: bool,
}

/// Parses the request head at the start of `buf`; `None` while it is not
/// whole (nothing is taken from the buffer then).
pub(super) fn parse_request(buf: &mut BytesMut) -> Option<Parsed> {
    // Uninitialised: zeroing 100 fields on every request is measurable.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut parsed, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_OWN_HEAD => return None,
        Ok(httparse::Status::Partial) | Err(_) => return Some(Parsed::ForHyper),
    };
    let (Some(method), Some(target), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Some(Parsed::ForHyper);
    };
    if len > MAX_OWN_HEAD || !target.starts_with('/') {
        return Some(Parsed::ForHyper);
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Some(Parsed::ForHyper);
    };
    let target = Span::of(buf, target.as_bytes());
    let mut spans = FieldSpans::new();
    let present = spans.note(buf, parsed.headers);
    let headers: &[httparse::Header<'_>] = parsed.headers;
    if present.transfer_encoding || present.upgrade || present.expect || (present.content_length && has_body(headers)) {
        return Some(Parsed::ForHyper);
    }
    let keep_alive = !present.says_close(headers);
    let (fields, present) = spans.raw(buf.split_to(len).freeze());
    Some(Parsed::Own(OwnRequest {
        method,
        target,
        fields,
        present,
        keep_alive,
    }))
}

/// Whether the Content-Length fields say anything but an empty body.
fn has_body(fields: &[httparse::Header<'_>]) -> bool {
    fields.values("content-length").any(|value| value.trim_ascii() != b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Option<Parsed>, BytesMut) {
        let mut buf = BytesMut::from(text);
        (parse_request(&mut buf), buf)
    }

    #[test]
    fn an_ordinary_get_is_the_own_loops_and_what_follows_stays() {
        let (parsed, rest) =
            parse("GET /a?b=1 HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n");
        let Some(Parsed::Own(request)) = parsed else {
            panic!("not the own loop's");
        };
        assert_eq!(request.method, Method::GET);
        assert_eq!(request.fields.part(request.target), b"/a?b=1");
        assert_eq!(request.fields.values("host").collect::<Vec<_>>(), [b"app.example.test"]);
        assert!(request.keep_alive);
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn connection_close_ends_keep_alive() {
        let (parsed, _) = parse("HEAD / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n");
        let Some(Parsed::Own(request)) = parsed else {
            panic!("not the own loop's");
        };
        assert!(!request.keep_alive);
    }

    #[test]
    fn a_partial_head_waits_and_an_oversized_one_goes_to_hyper() {
        let (parsed, rest) = parse("GET / HTTP/1.1\r\nHost: a\r\n");
        assert!(parsed.is_none());
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\nHost: a\r\n");
        let huge = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(MAX_OWN_HEAD));
        assert!(matches!(parse(&huge).0, Some(Parsed::ForHyper)));
    }

    #[test]
    fn whatever_hyper_must_handle_is_left_whole_for_it() {
        for text in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost a\r\n\r\n",
            "GET / HTTP/1.1\r\nX-Bad: \u{1}\r\n\r\n",
        ] {
            let (parsed, rest) = parse(text);
            assert!(matches!(parsed, Some(Parsed::ForHyper)), "{text:?}");
            assert_eq!(&rest[..], text.as_bytes(), "{text:?}");
        }
    }
}
