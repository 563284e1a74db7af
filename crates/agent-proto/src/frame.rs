//! Frames: `len: u32 BE` (of what follows the length), `channel: u32 BE`,
//! `kind: u8`, then `len - 5` bytes of payload.

use std::io::{self, Read, Write};

/// Bytes before the payload: length, channel, kind.
pub const HEADER_LEN: usize = 9;
/// The largest payload either side sends or accepts. Data is split into
/// frames of at most this size so that one large transfer cannot hold the
/// stream for long against the other channels.
pub const MAX_PAYLOAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The agent's greeting, JSON [`crate::Hello`], on channel 0.
    Hello = 1,
    /// Opens a channel: JSON [`crate::Request`], host to agent.
    Request = 2,
    /// Bytes: stdin or a file's content being written (host to agent), or a
    /// file's content being read (agent to host).
    Data = 3,
    /// Bytes a process wrote to stdout (with a TTY: everything it wrote).
    Stdout = 4,
    /// Bytes a process wrote to stderr.
    Stderr = 5,
    /// No more data frames follow in this direction of the channel.
    Eof = 6,
    /// The channel's final answer: JSON [`crate::Reply`], agent to host.
    Response = 7,
    /// A terminal size change: JSON [`crate::WindowSize`], host to agent.
    Resize = 8,
    /// Ends the channel's work early (kills an exec's process group), host to agent.
    Cancel = 9,
}

impl Kind {
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Data,
            4 => Kind::Stdout,
            5 => Kind::Stderr,
            6 => Kind::Eof,
            7 => Kind::Response,
            8 => Kind::Resize,
            9 => Kind::Cancel,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub channel: u32,
    pub kind: Kind,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub enum FrameError {
    /// The stream ended cleanly between frames.
    Closed,
    Io(io::Error),
    /// The peer broke the protocol (unknown kind, oversized frame); the
    /// stream cannot be trusted further and is dropped.
    Protocol(String),
    /// A header of zero bytes where a frame belongs: the host's
    /// [`crate::sync::host_preamble`], which begins a new conversation (after
    /// every restore and daemon restart, an expected event).
    Resync,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => write!(f, "the agent stream closed"),
            FrameError::Io(e) => write!(f, "agent stream I/O error: {e}"),
            FrameError::Protocol(m) => write!(f, "agent protocol error: {m}"),
            FrameError::Resync => write!(f, "a new conversation began (a header of zero bytes)"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        }
    }
}

impl Frame {
    pub fn new(channel: u32, kind: Kind, payload: Vec<u8>) -> Frame {
        Frame { channel, kind, payload }
    }

    /// A frame whose payload is `value` as JSON.
    pub fn json<T: serde::Serialize>(channel: u32, kind: Kind, value: &T) -> Frame {
        let payload = serde_json::to_vec(value).expect("protocol types always serialize");
        Frame::new(channel, kind, payload)
    }

    /// The payload read as JSON of type `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| FrameError::Protocol(format!("bad {:?} body on channel {}: {e}", self.kind, self.channel)))
    }

    /// The header for this frame; the payload follows it on the wire.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&((self.payload.len() + 5) as u32).to_be_bytes());
        header[4..8].copy_from_slice(&self.channel.to_be_bytes());
        header[8] = self.kind as u8;
        header
    }

    /// Header and payload in one buffer (one write call, so frames from
    /// several threads never interleave under a shared writer lock).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.payload.len());
        bytes.extend_from_slice(&self.header());
        bytes.extend_from_slice(&self.payload);
        bytes
    }

    pub fn write_to<W: Write>(&self, out: &mut W) -> io::Result<()> {
        out.write_all(&self.to_bytes())?;
        out.flush()
    }

    /// Reads one frame. `Err(Closed)` when the stream ends before a header.
    pub fn read_from<R: Read>(input: &mut R) -> Result<Frame, FrameError> {
        let mut header = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match input.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Err(FrameError::Closed),
                Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
        let (payload_len, channel, kind) = parse_header(&header)?;
        let mut payload = vec![0u8; payload_len];
        input.read_exact(&mut payload).map_err(FrameError::Io)?;
        Ok(Frame { channel, kind, payload })
    }
}

/// Splits a header into payload length, channel and kind, refusing what no
/// honest peer sends.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(usize, u32, Kind), FrameError> {
    if header.iter().all(|&byte| byte == 0) {
        return Err(FrameError::Resync);
    }
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    if len < 5 {
        return Err(FrameError::Protocol(format!(
            "frame length {len} is shorter than its header"
        )));
    }
    let payload_len = len - 5;
    if payload_len > MAX_PAYLOAD {
        return Err(FrameError::Protocol(format!(
            "frame payload of {payload_len} bytes is over the limit of {MAX_PAYLOAD}"
        )));
    }
    let channel = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
    let kind =
        Kind::from_byte(header[8]).ok_or_else(|| FrameError::Protocol(format!("unknown frame kind {}", header[8])))?;
    Ok((payload_len, channel, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = vec![
            Frame::new(0, Kind::Hello, b"{}".to_vec()),
            Frame::new(7, Kind::Data, vec![0, 255, 10, 13]),
            Frame::new(u32::MAX, Kind::Eof, vec![]),
        ];
        let mut wire = Vec::new();
        for frame in &frames {
            frame.write_to(&mut wire).unwrap();
        }
        let mut input = &wire[..];
        for frame in &frames {
            assert_eq!(&Frame::read_from(&mut input).unwrap(), frame);
        }
        assert!(matches!(Frame::read_from(&mut input), Err(FrameError::Closed)));
    }

    #[test]
    fn hostile_headers_are_refused() {
        let mut oversized = Frame::new(1, Kind::Data, vec![]).header();
        oversized[..4].copy_from_slice(&((MAX_PAYLOAD + 6) as u32).to_be_bytes());
        assert!(matches!(parse_header(&oversized), Err(FrameError::Protocol(_))));
        let mut empty = Frame::new(3, Kind::Data, vec![]).header();
        empty[..4].copy_from_slice(&0u32.to_be_bytes());
        assert!(
            matches!(parse_header(&empty), Err(FrameError::Protocol(_))),
            "length 0 on a channel"
        );
        assert!(matches!(parse_header(&[0; HEADER_LEN]), Err(FrameError::Resync)));
        let mut short = Frame::new(1, Kind::Data, vec![]).header();
        short[..4].copy_from_slice(&4u32.to_be_bytes());
        assert!(matches!(parse_header(&short), Err(FrameError::Protocol(_))));
        let mut unknown = Frame::new(1, Kind::Data, vec![]).header();
        unknown[8] = 200;
        assert!(matches!(parse_header(&unknown), Err(FrameError::Protocol(_))));
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_an_error_not_a_clean_close() {
        let bytes = Frame::new(3, Kind::Data, vec![1, 2, 3]).to_bytes();
        assert!(matches!(Frame::read_from(&mut &bytes[..4]), Err(FrameError::Io(_))));
        assert!(matches!(Frame::read_from(&mut &bytes[..10]), Err(FrameError::Io(_))));
    }
}
