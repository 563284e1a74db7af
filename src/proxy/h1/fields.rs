//! Header fields as httparse finds them in a head, turned into a
//! [`HeaderMap`] whose values share the head's bytes (no copy per value).
//! Used for the guest's response heads and the client's request heads.

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use super::head::MAX_HEADERS;
use crate::proxy::headers::Present;

/// A header field that is no valid name or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidField;

/// Where one part of a head lies in it (offset and length; a head is far
/// smaller than 4 GiB).
#[derive(Clone, Copy, Default)]
pub(crate) struct Span {
    offset: u32,
    len: u32,
}

impl Span {
    /// Where `part`, a slice of `head`, lies in it.
    pub(crate) fn of(head: &[u8], part: &[u8]) -> Self {
        Self {
            offset: (part.as_ptr() as usize - head.as_ptr() as usize) as u32,
            len: part.len() as u32,
        }
    }

    pub(crate) fn range(self) -> std::ops::Range<usize> {
        self.offset as usize..(self.offset + self.len) as usize
    }
}

/// Where each field of a parsed head lies, noted while httparse's fields
/// still borrow the buffer, so that the head can then be taken out of it.
pub(crate) struct FieldSpans {
    // On the stack: small enough to clear.
    spans: [(Span, Span); MAX_HEADERS],
    count: usize,
}

impl FieldSpans {
    pub(crate) fn new() -> Self {
        Self {
            spans: [(Span::default(), Span::default()); MAX_HEADERS],
            count: 0,
        }
    }

    /// Notes where `fields`, parsed from `head`, lie. In place: returned,
    /// the spans would be copied (1.6 KiB, twice per request).
    pub(crate) fn note(&mut self, head: &[u8], fields: &[httparse::Header<'_>]) {
        for (field, noted) in fields.iter().zip(self.spans.iter_mut()) {
            *noted = (Span::of(head, field.name.as_bytes()), Span::of(head, field.value));
        }
        self.count = fields.len().min(MAX_HEADERS);
    }

    /// The fields as a map sharing `head`'s bytes, and what it holds of
    /// the headers the proxy acts on.
    pub(crate) fn header_map(&self, head: &Bytes) -> Result<(HeaderMap, Present), InvalidField> {
        let mut headers = HeaderMap::with_capacity(self.count);
        let mut present = Present::default();
        for (name, value) in &self.spans[..self.count] {
            let name = HeaderName::from_bytes(&head[name.range()]).map_err(|_| InvalidField)?;
            let value = HeaderValue::from_maybe_shared(head.slice(value.range())).map_err(|_| InvalidField)?;
            present.note(&name);
            headers.append(name, value);
        }
        Ok((headers, present))
    }
}
