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
use std::sync::mpsc::{sync_channel, SyncSender};
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
    input: SyncSender<Input>,
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
        loop {
            let frame = match Frame::read_from(reader) {
                Ok(frame) => frame,
                Err(error) => return error,
            };
            match frame.kind {
                Kind::Request => self.open(generation, frame),
                Kind::Data => self.forward(frame.channel, Input::Data(frame.payload)),
                Kind::Eof => self.forward(frame.channel, Input::Eof),
                Kind::Resize => match frame.parse::<WindowSize>() {
                    Ok(size) => self.forward(frame.channel, Input::Resize(size)),
                    Err(error) => log!("{error}; ignored"),
                },
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
        let control = Arc::new(Control::default());
        let channel = Channel::new(self.clone(), generation, id, control.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("channel-{id}"))
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
    /// full; input for channels that are not open is dropped.
    fn forward(&self, id: u32, input: Input) {
        let sender = lock(&self.channels).get(&id).map(|entry| entry.input.clone());
        if let Some(sender) = sender {
            let _ = sender.send(input);
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

pub fn reply_frame(channel: u32, reply: &Reply) -> Frame {
    Frame::json(channel, Kind::Response, reply)
}

pub fn invalid(message: String) -> Reply {
    error(ErrorCode::Invalid, message)
}
