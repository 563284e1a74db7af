//! One host conversation at a time: the shared writer, the generation
//! counter and the table of open channels, and the reader loop that
//! dispatches frames to them.
//!
//! Each sync starts a new generation. Channel threads carry the generation
//! they were opened in and every frame they write is checked against the
//! current one under the writer lock, so a thread of a lost conversation
//! never writes into the next. Ending a generation cancels its channels.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};

use hatch_agent_proto::{ErrorCode, Frame, FrameError, Kind, Reply, Request, WindowSize, CONTROL_CHANNEL, SYNC};

use crate::channel::{error, Channel, Control, Input, Lost};

/// Frames queued per channel before the reader waits for the channel's
/// thread (backpressure onto the stream instead of unbounded memory).
const CHANNEL_QUEUE: usize = 16;
/// Channels open at once; beyond, requests are refused (a thread each).
const MAX_CHANNELS: usize = 1024;

pub struct Session {
    /// The generation frames may be written for; bumped when a
    /// conversation ends (without the writer lock, which a blocked writer
    /// may hold) and when the next one begins.
    current: AtomicU64,
    out: Mutex<Out>,
    channels: Mutex<HashMap<u32, Entry>>,
}

struct Out {
    generation: u64,
    stream: Option<File>,
}

/// What the reader keeps of an open channel.
struct Entry {
    /// None for requests that take no input: their frames are dropped, so
    /// they can never hold the reader up.
    input: Option<SyncSender<Input>>,
    control: Arc<Control>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking channel thread must not take the whole agent down with it.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Session {
    pub fn new() -> Session {
        Session {
            current: AtomicU64::new(0),
            out: Mutex::new(Out {
                generation: 0,
                stream: None,
            }),
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a conversation on `stream` (the host's sync was just read):
    /// writes SYNC and the Hello in one write.
    pub fn begin(&self, stream: File) -> std::io::Result<u64> {
        let generation = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        let mut out = lock(&self.out);
        out.generation = generation;
        let mut bytes = SYNC.to_vec();
        bytes.extend_from_slice(&Frame::json(CONTROL_CHANNEL, Kind::Hello, &crate::hello::current()).to_bytes());
        let stream = out.stream.insert(stream);
        stream.write_all(&bytes)?;
        Ok(generation)
    }

    /// Ends `generation`: nothing more is written for it and its channels
    /// are cancelled (their exec process groups killed).
    pub fn end(&self, generation: u64) {
        let _ = self
            .current
            .compare_exchange(generation, generation + 1, Ordering::SeqCst, Ordering::SeqCst);
        let entries: Vec<Entry> = lock(&self.channels).drain().map(|(_, entry)| entry).collect();
        for entry in entries {
            entry.control.cancel();
        }
    }

    /// Closes the stream kept for writing (before a port is reopened).
    pub fn release(&self) {
        lock(&self.out).stream = None;
    }

    /// Writes one whole frame for `generation`, unless that conversation is over.
    pub fn send(&self, generation: u64, frame: &Frame) -> Result<(), Lost> {
        let mut out = lock(&self.out);
        if out.generation != generation || self.current.load(Ordering::SeqCst) != generation {
            return Err(Lost);
        }
        let stream = out.stream.as_mut().ok_or(Lost)?;
        if let Err(error) = stream.write_all(&frame.to_bytes()) {
            log!("writing to the host failed: {error}");
            // Wakes the reader so the conversation ends (harmless on a port).
            // SAFETY: shutdown on a fd the session owns.
            unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
            return Err(Lost);
        }
        Ok(())
    }

    /// Reads and dispatches frames until the conversation ends; answers why.
    pub fn serve(self: &Arc<Self>, reader: &mut BufReader<File>, generation: u64) -> FrameError {
        let stream = reader.get_ref().as_raw_fd();
        loop {
            let frame = match Frame::read_from(reader) {
                Ok(frame) => frame,
                Err(error) => return error,
            };
            match frame.kind {
                Kind::Request => self.open(generation, frame),
                Kind::Data | Kind::Eof | Kind::Resize => {
                    let input = match frame.kind {
                        Kind::Data => Input::Data(frame.payload),
                        Kind::Eof => Input::Eof,
                        _ => match frame.parse::<WindowSize>() {
                            Ok(size) => Input::Resize(size),
                            Err(error) => {
                                log!("{error}; ignored");
                                continue;
                            }
                        },
                    };
                    if let Err(hangup) = self.forward(frame.channel, input, stream) {
                        return hangup;
                    }
                }
                Kind::Cancel => {
                    let entry = lock(&self.channels).remove(&frame.channel);
                    if let Some(entry) = entry {
                        entry.control.cancel();
                    }
                }
                Kind::Hello | Kind::Stdout | Kind::Stderr | Kind::Response => {
                    return FrameError::Protocol(format!(
                        "the host sent a {:?} frame (channel {}), which only the agent sends",
                        frame.kind, frame.channel
                    ))
                }
            }
        }
    }

    fn open(self: &Arc<Self>, generation: u64, frame: Frame) {
        let id = frame.channel;
        if id == CONTROL_CHANNEL {
            log!("a request on the control channel; ignored");
            return;
        }
        let request: Request = match frame.parse() {
            Ok(request) => request,
            Err(error) => return self.answer(generation, id, invalid(error.to_string())),
        };
        let mut channels = lock(&self.channels);
        if let Some(open) = channels.remove(&id) {
            // The channel's one final reply becomes this error.
            open.control
                .refuse(format!("a second request on channel {id}, which is still open"));
            return;
        }
        if channels.len() >= MAX_CHANNELS {
            drop(channels);
            let reply = error(ErrorCode::Io, format!("{MAX_CHANNELS} channels are open already"));
            return self.answer(generation, id, reply);
        }
        let (input, receiver) = sync_channel(CHANNEL_QUEUE);
        let input = matches!(request, Request::Exec(_) | Request::WriteFile(_)).then_some(input);
        let control = Arc::new(Control::default());
        let channel = Channel::new(self.clone(), generation, id, control.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("channel-{id}"))
            .stack_size(crate::channel::STACK_SIZE)
            .spawn(move || crate::channel::run(channel, receiver, request));
        match spawned {
            Ok(_) => {
                channels.insert(id, Entry { input, control });
            }
            Err(e) => {
                drop(channels);
                self.answer(
                    generation,
                    id,
                    error(ErrorCode::Io, format!("the agent cannot start a thread: {e}")),
                );
            }
        }
    }

    /// A channel's only reply, sent by the reader itself.
    fn answer(&self, generation: u64, id: u32, reply: Reply) {
        let _ = self.send(generation, &reply_frame(id, &reply));
    }

    /// Hands `input` to its channel's thread, waiting while its queue is
    /// full; input for channels that are not open is dropped. While it
    /// waits (a command that does not read its stdin holds the whole stream
    /// up) it watches the stream: a host that hangs up ends the
    /// conversation, which kills that command, instead of wedging the agent.
    fn forward(&self, id: u32, input: Input, stream: i32) -> Result<(), FrameError> {
        let Some(sender) = lock(&self.channels).get(&id).and_then(|entry| entry.input.clone()) else {
            return Ok(());
        };
        let mut input = input;
        // Short at first, so a consumer that keeps up is not slowed down.
        let mut wait = 1;
        loop {
            match sender.try_send(input) {
                Err(TrySendError::Full(back)) => input = back,
                // Sent, or the channel is done with its input.
                _ => return Ok(()),
            }
            if hung_up(stream, wait) {
                return Err(FrameError::Closed);
            }
            wait = (wait * 2).min(MAX_QUEUE_WAIT_MS);
        }
    }

    /// Forgets channel `id` if it is still the one `control` belongs to;
    /// called before its final reply so the host may reuse the id at once.
    pub fn close(&self, id: u32, control: &Arc<Control>) {
        let mut channels = lock(&self.channels);
        if channels
            .get(&id)
            .is_some_and(|entry| Arc::ptr_eq(&entry.control, control))
        {
            channels.remove(&id);
        }
    }
}

/// The longest the reader waits on a full channel queue between looks at the stream.
const MAX_QUEUE_WAIT_MS: libc::c_int = 50;

/// Whether the host hung up (socket peer closed; no host behind a port),
/// waiting up to `timeout_ms` for it.
fn hung_up(stream: i32, timeout_ms: libc::c_int) -> bool {
    let mut fd = libc::pollfd {
        fd: stream,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut fd, 1, timeout_ms) };
    ready > 0 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

pub fn reply_frame(channel: u32, reply: &Reply) -> Frame {
    Frame::json(channel, Kind::Response, reply)
}

pub fn invalid(message: String) -> Reply {
    error(ErrorCode::Invalid, message)
}
