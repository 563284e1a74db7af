//! Decoding a chunked body (RFC 9112 §7.1) as it arrives: data is handed
//! out as it is read, without waiting for whole chunks. Extensions are
//! skipped and trailers dropped, both within a bound, and line ends must be
//! CRLF: a guest must not make the proxy buffer without limit, nor frame a
//! body two ways.

use bytes::{Buf, Bytes, BytesMut};

/// The most bytes of chunk extensions (per size line) and of trailers.
const MAX_EXTENSION_BYTES: usize = 4096;
const MAX_TRAILER_BYTES: usize = 64 * 1024;
/// Hex digits of a chunk size: at most a u64.
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    InvalidSize,
    #[error("chunk size larger than 64 bits")]
    SizeTooLarge,
    #[error("chunk extensions longer than {MAX_EXTENSION_BYTES} bytes")]
    ExtensionTooLong,
    #[error("chunk data not followed by CRLF")]
    MissingDataEnd,
    #[error("trailers longer than {MAX_TRAILER_BYTES} bytes")]
    TrailersTooLong,
    #[error("invalid line end in the trailers")]
    InvalidTrailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { value: u64, digits: u8 },
    Extension { value: u64, len: usize },
    SizeLf { value: u64 },
    Data { left: u64 },
    DataCr,
    DataLf,
    Trailer { line: usize },
    TrailerLf { empty: bool },
    Done,
}

/// What the buffer held next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Data(Bytes),
    /// The buffer is used up before the body's end: read more.
    NeedMore,
    /// The last chunk and the trailers are read.
    Done,
}

#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: State::Size { value: 0, digits: 0 },
            trailer_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Takes from `buf` what belongs to the body, up to the next data.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::Done),
                State::Data { left } if !buf.is_empty() => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    self.state = if left == 0 { State::DataCr } else { State::Data { left } };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                _ if buf.is_empty() => return Ok(Decoded::NeedMore),
                _ => {
                    let byte = buf[0];
                    buf.advance(1);
                    self.state = self.step(byte)?;
                }
            }
        }
    }

    /// The state after one byte outside chunk data.
    fn step(&mut self, byte: u8) -> Result<State, ChunkError> {
        Ok(match (self.state, byte) {
            (State::Size { value, digits }, _) if byte.is_ascii_hexdigit() => {
                if digits == MAX_SIZE_DIGITS {
                    return Err(ChunkError::SizeTooLarge);
                }
                let digit = u64::from((byte as char).to_digit(16).unwrap_or(0));
                State::Size {
                    value: value << 4 | digit,
                    digits: digits + 1,
                }
            }
            (State::Size { digits: 0, .. }, _) => return Err(ChunkError::InvalidSize),
            (State::Size { value, .. }, b'\r') => State::SizeLf { value },
            (State::Size { value, .. }, b';' | b' ' | b'\t') => State::Extension { value, len: 1 },
            (State::Size { .. }, _) => return Err(ChunkError::InvalidSize),
            (State::Extension { value, .. }, b'\r') => State::SizeLf { value },
            (State::Extension { .. }, b'\n') => return Err(ChunkError::InvalidSize),
            (State::Extension { len, .. }, _) if len >= MAX_EXTENSION_BYTES => {
                return Err(ChunkError::ExtensionTooLong)
            }
            (State::Extension { value, len }, _) => State::Extension { value, len: len + 1 },
            (State::SizeLf { value: 0 }, b'\n') => State::Trailer { line: 0 },
            (State::SizeLf { value }, b'\n') => State::Data { left: value },
            (State::SizeLf { .. }, _) => return Err(ChunkError::InvalidSize),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size { value: 0, digits: 0 },
            (State::DataCr | State::DataLf, _) => return Err(ChunkError::MissingDataEnd),
            (State::Trailer { line }, b'\r') => State::TrailerLf { empty: line == 0 },
            (State::Trailer { .. }, b'\n') => return Err(ChunkError::InvalidTrailer),
            (State::Trailer { line }, _) => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(ChunkError::TrailersTooLong);
                }
                State::Trailer { line: line + 1 }
            }
            (State::TrailerLf { empty: true }, b'\n') => State::Done,
            (State::TrailerLf { empty: false }, b'\n') => State::Trailer { line: 0 },
            (State::TrailerLf { .. }, _) => return Err(ChunkError::InvalidTrailer),
            // `decode` never steps in these (data is taken whole, the end is final).
            (State::Data { .. } | State::Done, _) => return Err(ChunkError::InvalidSize),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes: the body, or the error.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(data) => body.extend_from_slice(&data),
                    Decoded::NeedMore => break,
                    Decoded::Done => return Ok((body, buf.is_empty())),
                }
            }
        }
        Ok((body, false))
    }

    #[test]
    fn decodes_whole_or_byte_by_byte() {
        let input = b"5;name=value\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in [1, 3, input.len()] {
            let (body, all_used) = decode_in_steps(input, step).unwrap();
            assert_eq!(body, b"hello, world!!!", "step {step}");
            assert!(all_used);
        }
    }

    #[test]
    fn stops_at_the_end_leaving_what_follows() {
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"[..]);
        let mut decoder = ChunkedDecoder::default();
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::Data(Bytes::from_static(b"abc"))));
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::Done));
        assert_eq!(&buf[..], b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn refuses_what_could_be_read_two_ways() {
        let cases: [(&[u8], ChunkError); 7] = [
            (b"\r\n", ChunkError::InvalidSize),
            (b"5\n", ChunkError::InvalidSize),
            (b"x\r\n", ChunkError::InvalidSize),
            (b"3\r\nabcd\r\n", ChunkError::MissingDataEnd),
            (b"11112222333344445\r\n", ChunkError::SizeTooLarge),
            (b"0\r\nX: 1\n\r\n", ChunkError::InvalidTrailer),
            (b"0\r\n\r\r", ChunkError::InvalidTrailer),
        ];
        for (input, error) in cases {
            assert_eq!(
                decode_in_steps(input, 1),
                Err(error),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn bounds_extensions_and_trailers() {
        let mut long_extension = b"1;".to_vec();
        long_extension.extend(std::iter::repeat_n(b'a', MAX_EXTENSION_BYTES));
        assert_eq!(decode_in_steps(&long_extension, 512), Err(ChunkError::ExtensionTooLong));
        let mut long_trailer = b"0\r\n".to_vec();
        long_trailer.extend(std::iter::repeat_n(b'a', MAX_TRAILER_BYTES + 1));
        assert_eq!(decode_in_steps(&long_trailer, 4096), Err(ChunkError::TrailersTooLong));
    }
}
