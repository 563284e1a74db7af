//! Finding the start of a conversation in a stream that may hold leftovers.
//!
//! A virtio-serial port outlives its host-side connections: when the daemon
//! restarts or the VM is restored into a new QEMU, the guest may still hold
//! half of a frame from the old connection, or be blocked writing one. So
//! every conversation starts with a sync: the host sends [`host_preamble`]
//! (enough zero bytes to complete any half-read frame and then fail the
//! next header, followed by [`SYNC`]); the agent, after any connect, EOF or
//! protocol error, discards input up to and including [`SYNC`], then answers
//! with [`SYNC`] and its Hello. The host likewise discards input up to the
//! agent's [`SYNC`]. Over vsock every connection is fresh and the sync costs
//! one short round trip.

use std::io::{self, BufRead};

use crate::frame::{HEADER_LEN, MAX_PAYLOAD};

/// Marks the start of a conversation, in both directions.
pub const SYNC: &[u8] = b"\nHATCH-AGENT-SYNC/1\n";

/// What the host sends first on every connection.
pub fn host_preamble() -> Vec<u8> {
    let mut bytes = vec![0u8; MAX_PAYLOAD + HEADER_LEN];
    bytes.extend_from_slice(SYNC);
    bytes
}

/// Tracks how much of [`SYNC`] the bytes seen so far end with.
#[derive(Debug, Default, Clone)]
pub struct SyncScanner {
    matched: usize,
}

impl SyncScanner {
    /// Feeds bytes; returns the index just past [`SYNC`] when it completes
    /// inside `bytes` (the rest belongs to the conversation).
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (index, &byte) in bytes.iter().enumerate() {
            if byte == SYNC[self.matched] {
                self.matched += 1;
            } else {
                // SYNC's first byte ('\n') occurs nowhere else in it, so a
                // mismatch can only restart a match at this byte.
                self.matched = usize::from(byte == SYNC[0]);
            }
            if self.matched == SYNC.len() {
                self.matched = 0;
                return Some(index + 1);
            }
        }
        None
    }
}

/// Reads and drops input up to and including [`SYNC`].
pub fn skip_to_sync<R: BufRead>(input: &mut R) -> io::Result<()> {
    let mut scanner = SyncScanner::default();
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match scanner.feed(buffer) {
            Some(end) => {
                input.consume(end);
                return Ok(());
            }
            None => {
                let len = buffer.len();
                input.consume(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, FrameError, Kind};

    #[test]
    fn sync_is_found_after_garbage_split_anywhere() {
        let mut stream = b"\n\nHATCH-AGENT\nHATCH-AGENT-SYN".to_vec();
        stream.extend_from_slice(SYNC);
        stream.extend_from_slice(b"rest");
        for split in 0..stream.len() {
            let mut scanner = SyncScanner::default();
            let found = match scanner.feed(&stream[..split]) {
                Some(end) => Some(end),
                None => scanner.feed(&stream[split..]).map(|end| end + split),
            };
            assert_eq!(&stream[found.expect("sync found")..], b"rest", "split at {split}");
        }
    }

    #[test]
    fn the_preamble_ends_a_half_read_frame_and_resyncs() {
        // An agent that had read a header promising a full payload and got
        // only part of it before the old host went away.
        let mut stream = Frame::new(5, Kind::Data, vec![7; MAX_PAYLOAD]).to_bytes();
        stream.truncate(HEADER_LEN + 100);
        stream.extend_from_slice(&host_preamble());
        stream.extend_from_slice(&Frame::new(9, Kind::Eof, vec![]).to_bytes());
        let mut input = &stream[..];
        // The stale frame completes with zeros; the next header is all
        // zeros: the host resyncs.
        assert_eq!(Frame::read_from(&mut input).expect("stale frame").channel, 5);
        assert!(matches!(Frame::read_from(&mut input), Err(FrameError::Resync)));
        skip_to_sync(&mut input).expect("sync");
        assert_eq!(Frame::read_from(&mut input).expect("frame").channel, 9);
    }
}
