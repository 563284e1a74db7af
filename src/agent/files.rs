//! Files in the guest: write (streamed, atomic in the guest), read
//! (streamed), delete, list; and the clock.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hatch_agent_proto::{DirEntry, FileInfo, Kind, Reply, Request, WriteFileRequest};

use super::conversation::{Channel, Conversation};
use super::{final_reply, next_reply, unexpected, AgentError};

/// Streams `body` into the guest file `request.path`; answers the bytes written.
pub async fn write<S, E>(
    conversation: &Arc<Conversation>,
    request: WriteFileRequest,
    body: S,
) -> Result<u64, AgentError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut channel = conversation.open(&Request::WriteFile(request)).await?;
    let mut body = body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| AgentError::Unavailable(format!("reading the request body failed: {e}")))?;
        // The agent answers early only to refuse (no such directory): stop sending then.
        if let Some(reply) = channel.try_reply()? {
            return Err(unexpected(reply, "to receive the file"));
        }
        channel.send_data(&chunk).await?;
    }
    channel.send_eof().await?;
    match final_reply(&mut channel).await? {
        Reply::Done { bytes } => Ok(bytes),
        other => Err(unexpected(other, "the end of the write")),
    }
}

/// Opens a guest file for reading: its size and mode, then its content.
pub async fn read(conversation: &Arc<Conversation>, path: String) -> Result<(FileInfo, FileContent), AgentError> {
    let mut channel = conversation.open(&Request::ReadFile { path }).await?;
    match next_reply(&mut channel).await? {
        Reply::FileInfo(info) => Ok((info, FileContent { channel, done: false })),
        other => {
            channel.finish();
            Err(unexpected(other, "file information"))
        }
    }
}

/// A guest file's content as it arrives.
pub struct FileContent {
    channel: Channel,
    done: bool,
}

impl FileContent {
    /// The next piece, or `None` at the end (after the agent confirmed it).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, AgentError> {
        if self.done {
            return Ok(None);
        }
        loop {
            let frame = self.channel.recv().await?;
            match frame.kind {
                Kind::Data => return Ok(Some(Bytes::from(frame.payload))),
                Kind::Eof => {}
                Kind::Response => {
                    self.channel.finish();
                    self.done = true;
                    return match frame.parse()? {
                        Reply::Done { .. } => Ok(None),
                        other => Err(unexpected(other, "the end of the file")),
                    };
                }
                other => {
                    return Err(AgentError::Protocol(format!(
                        "unexpected {other:?} frame in a file read"
                    )))
                }
            }
        }
    }

    /// The content as a body stream (an error ends it; the client sees a cut body).
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, AgentError>> + Send {
        futures_util::stream::unfold(self, |mut content| async move {
            match content.next_chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), content)),
                Ok(None) => None,
                Err(error) => {
                    content.done = true;
                    Some((Err(error), content))
                }
            }
        })
    }
}

pub async fn delete(conversation: &Arc<Conversation>, path: String) -> Result<(), AgentError> {
    let mut channel = conversation.open(&Request::DeleteFile { path }).await?;
    match final_reply(&mut channel).await? {
        Reply::Done { .. } => Ok(()),
        other => Err(unexpected(other, "a deletion")),
    }
}

/// A directory's entries. A large listing arrives in pieces (Data frames,
/// each a JSON array of entries) before the final reply with the rest.
pub async fn list(conversation: &Arc<Conversation>, path: String) -> Result<Vec<DirEntry>, AgentError> {
    let mut channel = conversation.open(&Request::ListDir { path }).await?;
    let mut entries = Vec::new();
    loop {
        let frame = channel.recv().await?;
        match frame.kind {
            Kind::Data => {
                let piece: Vec<DirEntry> = frame.parse()?;
                entries.extend(piece);
            }
            Kind::Response => {
                channel.finish();
                return match frame.parse()? {
                    Reply::Listing { entries: rest } => {
                        entries.extend(rest);
                        Ok(entries)
                    }
                    other => Err(unexpected(other, "a listing")),
                };
            }
            other => return Err(AgentError::Protocol(format!("unexpected {other:?} frame in a listing"))),
        }
    }
}

/// Sets the guest clock to the host's; answers how far off it was, in
/// milliseconds (positive: the guest was behind).
pub async fn set_clock(conversation: &Arc<Conversation>) -> Result<i128, AgentError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| AgentError::Unavailable(format!("the host clock is before 1970: {e}")))?;
    let unix_ns = now.as_nanos() as i128;
    let mut channel = conversation.open(&Request::SetClock { unix_ns }).await?;
    match final_reply(&mut channel).await? {
        Reply::ClockSet { previous_unix_ns, .. } => Ok((unix_ns - previous_unix_ns) / 1_000_000),
        other => Err(unexpected(other, "the clock set")),
    }
}
