//! One channel's side of things: what its thread receives, how it writes
//! frames, how it is cancelled, and its one final reply.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use hatch_agent_proto::{AgentError, ErrorCode, Frame, Kind, Reply, Request, WindowSize, MAX_PAYLOAD};

use crate::exec::ProcessGroup;
use crate::session::{invalid, reply_frame, Session};

/// Stack for the agent's threads: they keep their buffers on the heap, and
/// a small guest may run hundreds of them.
pub const STACK_SIZE: usize = 256 * 1024;

/// What the reader hands a channel's thread, in stream order.
pub enum Input {
    Data(Vec<u8>),
    Eof,
    Resize(WindowSize),
}

/// The conversation this channel belongs to is over.
#[derive(Debug)]
pub struct Lost;

/// How the reader stops a channel's work from outside its thread.
#[derive(Default)]
pub struct Control {
    cancelled: AtomicBool,
    /// Set when the host broke the protocol on this channel; its final
    /// reply becomes this error.
    refused: Mutex<Option<String>>,
    group: Mutex<Option<Arc<ProcessGroup>>>,
}

impl Control {
    /// Cancel, a lost conversation: kills the exec's process group (while
    /// the command runs) and makes the channel's thread stop.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(group) = self.group.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            group.kill();
        }
    }

    pub fn refuse(&self, message: String) {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
        self.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Puts a started command under this channel's cancel.
    pub fn attach(&self, group: Arc<ProcessGroup>) {
        *self.group.lock().unwrap_or_else(|e| e.into_inner()) = Some(group.clone());
        // A cancel that came while the command was starting.
        if self.is_cancelled() {
            group.kill();
        }
    }
}

/// A channel's handle for its thread.
pub struct Channel {
    session: Arc<Session>,
    generation: u64,
    id: u32,
    pub control: Arc<Control>,
}

impl Channel {
    pub fn new(session: Arc<Session>, generation: u64, id: u32, control: Arc<Control>) -> Channel {
        Channel {
            session,
            generation,
            id,
            control,
        }
    }

    pub fn send(&self, kind: Kind, payload: Vec<u8>) -> Result<(), Lost> {
        self.session.send(self.generation, &Frame::new(self.id, kind, payload))
    }

    /// Sends `bytes` as frames of at most [`MAX_PAYLOAD`].
    pub fn send_bytes(&self, kind: Kind, bytes: &[u8]) -> Result<(), Lost> {
        bytes
            .chunks(MAX_PAYLOAD)
            .try_for_each(|chunk| self.send(kind, chunk.to_vec()))
    }

    /// A Response frame that is not the final one (ReadFile's FileInfo).
    pub fn send_reply(&self, reply: &Reply) -> Result<(), Lost> {
        self.session.send(self.generation, &reply_frame(self.id, reply))
    }

    /// The channel's final reply; the channel is forgotten first so the
    /// host may reuse its id as soon as it reads the reply.
    fn finish(self, reply: Reply) {
        self.session.close(self.id, &self.control);
        let refused = self.control.refused.lock().unwrap_or_else(|e| e.into_inner()).take();
        let reply = refused.map(invalid).unwrap_or(reply);
        let _ = self.send_reply(&reply);
    }
}

/// A channel's thread: does the request, then sends its final reply (an
/// error one should the handler panic: the host is never left waiting).
pub fn run(channel: Channel, input: Receiver<Input>, request: Request) {
    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(&channel, input, request)));
    let reply = handled.unwrap_or_else(|_| error(ErrorCode::Io, "the agent failed while handling this request"));
    channel.finish(reply);
}

fn handle(channel: &Channel, input: Receiver<Input>, request: Request) -> Reply {
    match request {
        Request::Exec(request) => crate::exec::run(channel, input, request),
        Request::WriteFile(request) => crate::files::write(channel, input, &request),
        Request::ReadFile { path } => crate::files::read(channel, &path),
        Request::DeleteFile { path } => crate::files::delete(&path),
        Request::ListDir { path } => crate::files::list(channel, &path),
        Request::SetClock { unix_ns } => crate::clock::set(&crate::clock::SystemClock, unix_ns),
        Request::SetIdentity(identity) => crate::identity::set(&identity),
    }
}

pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Error(AgentError {
        code,
        message: message.into(),
    })
}

/// An I/O failure as a reply, its kind mapped to the protocol's codes.
pub fn io_error(what: &str, error: &io::Error) -> Reply {
    let code = match error.kind() {
        io::ErrorKind::NotFound => ErrorCode::NotFound,
        io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        io::ErrorKind::InvalidInput | io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory => ErrorCode::Invalid,
        _ => ErrorCode::Io,
    };
    self::error(code, format!("{what}: {error}"))
}

pub fn cancelled() -> Reply {
    error(ErrorCode::Io, "cancelled")
}
