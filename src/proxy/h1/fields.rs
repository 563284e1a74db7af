//! Header fields as httparse finds them in a head, kept as they came: the
//! head's bytes and where each field lies in them. Passed on, a field is
//! copied from there; a [`HeaderMap`] (whose values share the head's bytes)
//! is built only where hyper needs one. Used for the guest's response
//! heads and the client's request heads.

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use super::head::MAX_HEADERS;
use crate::proxy::headers::{Fields, Present};

/// A header field that is no valid name or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidField;

/// Where one part of a head lies in it (offset and length; a head is far
/// smaller than 4 GiB).
#[derive(Debug, Clone, Copy, Default)]
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
    present: Present,
}

impl FieldSpans {
    pub(crate) fn new() -> Self {
        Self {
            spans: [(Span::default(), Span::default()); MAX_HEADERS],
            count: 0,
            present: Present::default(),
        }
    }

    /// Notes where `fields`, parsed from `head`, lie, and what they hold
    /// of the headers the proxy acts on. In place: returned, the spans
    /// would be copied (1.6 KiB, twice per request).
    pub(crate) fn note(&mut self, head: &[u8], fields: &[httparse::Header<'_>]) -> Present {
        self.present = Present::default();
        for (field, noted) in fields.iter().zip(self.spans.iter_mut()) {
            *noted = (Span::of(head, field.name.as_bytes()), Span::of(head, field.value));
            self.present.note(field.name.as_bytes());
        }
        self.count = fields.len().min(MAX_HEADERS);
        self.present
    }

    /// The fields in `head` (taken from the buffer they were noted in),
    /// and what they hold of the headers the proxy acts on.
    pub(crate) fn raw(&self, head: Bytes) -> (RawFields, Present) {
        let spans = self.spans[..self.count].to_vec();
        (RawFields { head, spans }, self.present)
    }
}

/// A head's header fields as they came. httparse has checked each name
/// (a token) and value (no control bytes but tab) as [`HeaderName`] and
/// [`HeaderValue`] would.
#[derive(Debug, Clone)]
pub(crate) struct RawFields {
    head: Bytes,
    spans: Vec<(Span, Span)>,
}

impl RawFields {
    /// The part of the head `span` says.
    pub(crate) fn part(&self, span: Span) -> &[u8] {
        &self.head[span.range()]
    }

    /// `part`, a slice of the head, sharing the head's bytes.
    pub(crate) fn shared(&self, part: &[u8]) -> Bytes {
        self.head.slice_ref(part)
    }

    /// The fields `keep` keeps, as a map sharing the head's bytes.
    pub(crate) fn header_map(&self, keep: impl Fn(&[u8]) -> bool) -> Result<HeaderMap, InvalidField> {
        let mut headers = HeaderMap::with_capacity(self.spans.len());
        for (name, value) in &self.spans {
            let name = &self.head[name.range()];
            if !keep(name) {
                continue;
            }
            let name = HeaderName::from_bytes(name).map_err(|_| InvalidField)?;
            let value = HeaderValue::from_maybe_shared(self.head.slice(value.range())).map_err(|_| InvalidField)?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

impl Fields for RawFields {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|(name, value)| (&self.head[name.range()], &self.head[value.range()]))
    }
}

impl Fields for [httparse::Header<'_>] {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().map(|field| (field.name.as_bytes(), field.value))
    }
}
