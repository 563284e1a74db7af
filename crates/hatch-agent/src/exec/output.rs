//! Forwarding the command's output while it runs, enforcing its timeout,
//! and draining what is left once it has exited.
//!
//! A process the command started in the background may hold the output
//! pipes open forever; once the command has exited the pump waits only
//! until the pipes are quiet for [`QUIET`] (or [`LINGER`] in all), then
//! hands them to a thread that reads and drops the rest, so that process
//! neither blocks nor dies of SIGPIPE.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hatch_agent_proto::{Kind, MAX_PAYLOAD};

use super::ProcessGroup;
use crate::channel::Channel;

const QUIET: Duration = Duration::from_millis(100);
const LINGER: Duration = Duration::from_secs(2);

pub trait Output: Read + AsRawFd + Send {}
impl<T: Read + AsRawFd + Send> Output for T {}

/// One output stream of the command.
pub struct Source {
    reader: Box<dyn Output>,
    kind: Kind,
    forwarded: u64,
    truncated: bool,
}

impl Source {
    pub fn new(reader: Box<dyn Output>, kind: Kind) -> Source {
        Source {
            reader,
            kind,
            forwarded: 0,
            truncated: false,
        }
    }
}

#[derive(Default)]
pub struct Pumped {
    pub timed_out: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

pub fn pump(
    channel: &Channel,
    mut sources: Vec<Source>,
    limit: u64,
    exit_notice: std::fs::File,
    mut deadline: Option<Instant>,
    group: &ProcessGroup,
) -> Pumped {
    let mut pumped = Pumped::default();
    let mut notice = Some(exit_notice);
    let mut exited_at: Option<Instant> = None;
    let mut last_data = Instant::now();
    let mut lost = false;
    let mut buffer = vec![0u8; MAX_PAYLOAD];
    loop {
        if exited_at.is_some() && sources.is_empty() {
            break;
        }
        let mut fds: Vec<libc::pollfd> = sources
            .iter()
            .map(|source| poll_fd(source.reader.as_raw_fd()))
            .collect();
        if let Some(notice) = &notice {
            fds.push(poll_fd(notice.as_raw_fd()));
        }
        let timeout = match exited_at {
            None => deadline.map(until).unwrap_or(-1),
            Some(at) => until((last_data.max(at) + QUIET).min(at + LINGER)),
        };
        // SAFETY: fds is a valid array of pollfd.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log!("poll failed: {}", io::Error::last_os_error());
            break;
        }
        // Checked on every wake-up: a command that writes without pause
        // never lets poll time out.
        if exited_at.is_none() && deadline.is_some_and(|at| Instant::now() >= at) {
            group.kill();
            pumped.timed_out = true;
            deadline = None;
        }
        if ready == 0 {
            if exited_at.is_some() {
                break;
            }
            continue;
        }
        if notice.is_some() && fds.last().is_some_and(|fd| fd.revents != 0) {
            notice = None;
            exited_at = Some(Instant::now());
        }
        for index in (0..sources.len()).rev() {
            if fds[index].revents == 0 {
                continue;
            }
            let source = &mut sources[index];
            match source.reader.read(&mut buffer) {
                Ok(0) => pumped.retire(sources.remove(index)),
                Ok(count) => {
                    last_data = Instant::now();
                    if !lost && forward(channel, source, &buffer[..count], limit).is_err() {
                        // A lost conversation kills the command; its output is still drained.
                        lost = true;
                        group.kill();
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) => {}
                // EIO: a terminal whose every slave side is closed.
                Err(_) => pumped.retire(sources.remove(index)),
            }
        }
    }
    for source in &sources {
        pumped.note(source);
    }
    discard(sources);
    pumped
}

impl Pumped {
    fn note(&mut self, source: &Source) {
        match source.kind {
            Kind::Stderr => self.stderr_truncated |= source.truncated,
            _ => self.stdout_truncated |= source.truncated,
        }
    }

    /// A stream that has ended.
    fn retire(&mut self, source: Source) {
        self.note(&source);
    }
}

/// Forwards up to the limit; the rest only marks the stream truncated.
fn forward(channel: &Channel, source: &mut Source, bytes: &[u8], limit: u64) -> Result<(), crate::channel::Lost> {
    let room = limit.saturating_sub(source.forwarded);
    let take = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
    if take < bytes.len() {
        source.truncated = true;
    }
    if take == 0 {
        return Ok(());
    }
    source.forwarded += take as u64;
    channel.send_bytes(source.kind, &bytes[..take])
}

/// Reads and drops what background processes still write (terminals are
/// closed instead: a hang-up, as when a login session ends).
fn discard(sources: Vec<Source>) {
    for mut source in sources {
        if source.kind == Kind::Stdout && is_terminal(source.reader.as_raw_fd()) {
            continue;
        }
        let _ = std::thread::Builder::new()
            .name("exec-drain".into())
            .stack_size(crate::channel::STACK_SIZE)
            .spawn(move || {
                let mut buffer = [0u8; 8192];
                while matches!(source.reader.read(&mut buffer), Ok(n) if n > 0) {}
            });
    }
}

fn is_terminal(fd: i32) -> bool {
    // SAFETY: isatty only inspects the fd.
    unsafe { libc::isatty(fd) == 1 }
}

fn poll_fd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Milliseconds until `at` for poll, rounded up, at least 0.
fn until(at: Instant) -> libc::c_int {
    let left = at.saturating_duration_since(Instant::now());
    left.as_millis()
        .saturating_add(u128::from(!left.subsec_nanos().is_multiple_of(1_000_000)))
        .min(i32::MAX as u128) as libc::c_int
}
