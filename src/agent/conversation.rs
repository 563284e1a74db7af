//! One live conversation with a guest agent: the sync and Hello, then many
//! channels at once over the one stream.
//!
//! A reader task owns the read half and hands each frame to its channel
//! through a bounded queue, so a slow consumer (an HTTP client reading a
//! file slowly) holds the stream back instead of growing memory. Writers
//! share the write half under a lock and write whole frames.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use hatch_agent_proto::{
    frame::parse_header, host_preamble, Frame, Hello, Kind, Request, SyncScanner, CONTROL_CHANNEL, HEADER_LEN,
    PROTOCOL_VERSION,
};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use super::AgentError;

type Reader = BufReader<Box<dyn AsyncRead + Send + Unpin>>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Frames queued per channel before the reader waits for its consumer.
const CHANNEL_QUEUE: usize = 32;

pub struct Conversation {
    hello: Hello,
    writer: tokio::sync::Mutex<Writer>,
    channels: Mutex<HashMap<u32, mpsc::Sender<Frame>>>,
    next_channel: AtomicU32,
    closed: watch::Sender<bool>,
    is_closed: AtomicBool,
    /// The socket (a duplicate descriptor), to shut it down on close: the
    /// peer (QEMU's chardev serves one client at a time) must see the end
    /// even while a reader or writer half is still held somewhere.
    socket: OwnedFd,
}

impl Conversation {
    /// Starts a conversation on a fresh stream: sends the host preamble,
    /// skips whatever precedes the agent's sync, and reads its Hello. Waits
    /// as long as it takes (a guest still booting answers when its agent
    /// starts); callers bound it when they need to.
    pub async fn start(stream: UnixStream) -> Result<Arc<Conversation>, AgentError> {
        let socket = stream.as_fd().try_clone_to_owned().map_err(lost)?;
        let (read, write) = tokio::io::split(stream);
        let mut writer: Writer = Box::new(write);
        let mut reader: Reader = BufReader::new(Box::new(read));
        writer.write_all(&host_preamble()).await.map_err(lost)?;
        writer.flush().await.map_err(lost)?;
        skip_to_sync(&mut reader).await?;
        let first = read_frame(&mut reader).await?;
        if first.kind != Kind::Hello || first.channel != CONTROL_CHANNEL {
            return Err(AgentError::Protocol(format!(
                "expected Hello on channel 0, got {:?} on channel {}",
                first.kind, first.channel
            )));
        }
        let hello: Hello = first.parse()?;
        if hello.protocol != PROTOCOL_VERSION {
            return Err(AgentError::Protocol(format!(
                "the agent speaks protocol {}, this daemon speaks {PROTOCOL_VERSION}; install a matching hatch-agent",
                hello.protocol
            )));
        }
        let conversation = Arc::new(Conversation {
            hello,
            writer: tokio::sync::Mutex::new(writer),
            channels: Mutex::new(HashMap::new()),
            next_channel: AtomicU32::new(1),
            closed: watch::channel(false).0,
            is_closed: AtomicBool::new(false),
            socket,
        });
        tokio::spawn(read_loop(Arc::downgrade(&conversation), reader));
        Ok(conversation)
    }

    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    pub fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Acquire)
    }

    /// Resolves when the stream has ended.
    pub async fn closed(&self) {
        let mut closed = self.closed.subscribe();
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Opens a channel with `request`.
    pub async fn open(self: &Arc<Self>, request: &Request) -> Result<Channel, AgentError> {
        if self.is_closed() {
            return Err(AgentError::Lost);
        }
        let id = self.next_channel.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(CHANNEL_QUEUE);
        self.lock_channels().insert(id, sender);
        let channel = Channel {
            id,
            conversation: self.clone(),
            frames: receiver,
            finished: false,
        };
        channel.send_frame(Frame::json(id, Kind::Request, request)).await?;
        Ok(channel)
    }

    async fn write(&self, frame: &Frame) -> Result<(), AgentError> {
        let mut writer = self.writer.lock().await;
        let written = async {
            writer.write_all(&frame.to_bytes()).await?;
            writer.flush().await
        }
        .await;
        if written.is_err() {
            self.close();
        }
        written.map_err(lost)
    }

    fn lock_channels(&self) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::Sender<Frame>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the conversation: every open channel sees the loss (a request
    /// under way answers `Lost`), and the agent sees the stream end when
    /// the last holder lets go of it.
    pub fn close(&self) {
        self.is_closed.store(true, Ordering::Release);
        let _ = nix::sys::socket::shutdown(self.socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        self.lock_channels().clear();
        self.closed.send_replace(true);
    }
}

async fn read_loop(conversation: std::sync::Weak<Conversation>, mut reader: Reader) {
    loop {
        let frame = read_frame(&mut reader).await;
        let Some(conversation) = conversation.upgrade() else {
            return;
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                if !matches!(error, AgentError::Lost) {
                    tracing::warn!(%error, "dropping the agent connection");
                }
                conversation.close();
                return;
            }
        };
        let sender = conversation.lock_channels().get(&frame.channel).cloned();
        // A frame for a channel already given up on is dropped.
        if let Some(sender) = sender {
            drop(conversation);
            let _ = sender.send(frame).await;
        }
    }
}

async fn skip_to_sync(reader: &mut Reader) -> Result<(), AgentError> {
    let mut scanner = SyncScanner::default();
    loop {
        let buffer = tokio::io::AsyncBufReadExt::fill_buf(reader).await.map_err(lost)?;
        if buffer.is_empty() {
            return Err(AgentError::Lost);
        }
        let (consumed, found) = match scanner.feed(buffer) {
            Some(end) => (end, true),
            None => (buffer.len(), false),
        };
        tokio::io::AsyncBufReadExt::consume(reader, consumed);
        if found {
            return Ok(());
        }
    }
}

async fn read_frame(reader: &mut Reader) -> Result<Frame, AgentError> {
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header).await.map_err(lost)?;
    let (len, channel, kind) = parse_header(&header)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await.map_err(lost)?;
    Ok(Frame { channel, kind, payload })
}

fn lost(_: std::io::Error) -> AgentError {
    AgentError::Lost
}

/// One request's channel. Dropping it before the agent's final reply
/// cancels the work in the guest (an exec's process group is killed).
pub struct Channel {
    id: u32,
    conversation: Arc<Conversation>,
    frames: mpsc::Receiver<Frame>,
    finished: bool,
}

impl Channel {
    async fn send_frame(&self, frame: Frame) -> Result<(), AgentError> {
        self.conversation.write(&frame).await
    }

    /// Sends bytes as Data frames of at most the protocol's frame size.
    pub async fn send_data(&self, bytes: &[u8]) -> Result<(), AgentError> {
        for chunk in bytes.chunks(hatch_agent_proto::MAX_PAYLOAD) {
            self.send_frame(Frame::new(self.id, Kind::Data, chunk.to_vec())).await?;
        }
        Ok(())
    }

    pub async fn send_eof(&self) -> Result<(), AgentError> {
        self.send_frame(Frame::new(self.id, Kind::Eof, Vec::new())).await
    }

    pub async fn send_json<T: serde::Serialize>(&self, kind: Kind, value: &T) -> Result<(), AgentError> {
        self.send_frame(Frame::json(self.id, kind, value)).await
    }

    /// The next frame from the agent; `Lost` if the conversation ended.
    pub async fn recv(&mut self) -> Result<Frame, AgentError> {
        let frame = self.frames.recv().await.ok_or(AgentError::Lost)?;
        Ok(frame)
    }

    /// A reply that already arrived, without waiting (an agent refusing a
    /// request while the host is still sending its data).
    pub fn try_reply(&mut self) -> Result<Option<hatch_agent_proto::Reply>, AgentError> {
        match self.frames.try_recv() {
            Ok(frame) if frame.kind == Kind::Response => {
                self.finished = true;
                Ok(Some(frame.parse()?))
            }
            Ok(frame) => Err(AgentError::Protocol(format!("unexpected {:?} frame", frame.kind))),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(AgentError::Lost),
        }
    }

    /// Asks the agent to end the channel's work (kills an exec's process
    /// group); its final reply still follows.
    pub async fn cancel(&self) -> Result<(), AgentError> {
        self.send_frame(Frame::new(self.id, Kind::Cancel, Vec::new())).await
    }

    /// Marks the channel complete (its final reply arrived): no Cancel on drop.
    pub fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.conversation.lock_channels().remove(&self.id);
        if !self.finished && !self.conversation.is_closed() {
            let conversation = self.conversation.clone();
            let cancel = Frame::new(self.id, Kind::Cancel, Vec::new());
            tokio::spawn(async move {
                let _ = conversation.write(&cancel).await;
            });
        }
    }
}
