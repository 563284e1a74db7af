//! The stream to the host, and the loop that keeps one open forever.
//!
//! - virtio-serial (QEMU): the port named [`SERIAL_PORT_NAME`] is opened
//!   once and kept. The host comes and goes behind it: while no host is
//!   connected the kernel answers read() with 0 at once (it does not block),
//!   so the agent polls for the host's sync with a short back-off.
//! - vsock (Firecracker): a connection to CID 2, port 1024, remade with
//!   back-off after every EOF or error.
//! - a Unix socket (`--connect-unix`): like vsock; for tests and debugging.
//!
//! Every conversation starts with the host's sync; see `hatch_agent_proto::sync`.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hatch_agent_proto::{skip_to_sync, FrameError, HEADER_LEN, HOST_CID, MAX_PAYLOAD, SERIAL_PORT_NAME, VSOCK_PORT};

use crate::session::Session;

/// Where the agent looks for its host.
pub enum Transport {
    /// In a guest: the virtio-serial port when there is one, else vsock.
    /// Looked for again at every attempt: the port's module may be loaded
    /// after the agent starts.
    Guest,
    /// `--connect-unix`.
    Unix(PathBuf),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Guest => write!(
                f,
                "the virtio-serial port {SERIAL_PORT_NAME}, else vsock {HOST_CID}:{VSOCK_PORT}"
            ),
            Transport::Unix(path) => write!(f, "unix socket {}", path.display()),
        }
    }
}

impl Transport {
    fn endpoint(&self) -> Endpoint {
        match self {
            Transport::Guest => match find_serial_port(Path::new("/sys/class/virtio-ports"), Path::new("/dev")) {
                Some(path) => Endpoint::Serial(path),
                None => Endpoint::Vsock {
                    cid: HOST_CID,
                    port: VSOCK_PORT,
                },
            },
            Transport::Unix(path) => Endpoint::Unix(path.clone()),
        }
    }
}

/// One concrete stream to open.
enum Endpoint {
    Serial(PathBuf),
    Vsock { cid: u32, port: u32 },
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Serial(path) => write!(f, "virtio-serial port {}", path.display()),
            Endpoint::Vsock { cid, port } => write!(f, "vsock {cid}:{port}"),
            Endpoint::Unix(path) => write!(f, "unix socket {}", path.display()),
        }
    }
}

impl Endpoint {
    fn is_serial(&self) -> bool {
        matches!(self, Endpoint::Serial(_))
    }

    fn open(&self) -> io::Result<File> {
        match self {
            Endpoint::Serial(path) => std::fs::OpenOptions::new().read(true).write(true).open(path),
            Endpoint::Vsock { cid, port } => connect_vsock(*cid, *port),
            Endpoint::Unix(path) => Ok(File::from(OwnedFd::from(UnixStream::connect(path)?))),
        }
    }
}

/// The device node of the port named [`SERIAL_PORT_NAME`]: the minimal
/// image has devtmpfs but no udev, so the /dev/virtio-ports symlinks may be
/// missing; the node is /dev/<the sysfs directory's name>.
fn find_serial_port(sysfs: &Path, dev: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(sysfs).ok()?;
    entries.flatten().find_map(|entry| {
        let name = std::fs::read_to_string(entry.path().join("name")).ok()?;
        (name.trim() == SERIAL_PORT_NAME).then(|| dev.join(entry.file_name()))
    })
}

fn connect_vsock(cid: u32, port: u32) -> io::Result<File> {
    // SAFETY: plain socket calls; the fd is owned by the File at once.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let file = File::from_raw_fd(fd);
        let mut address: libc::sockaddr_vm = std::mem::zeroed();
        address.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        address.svm_cid = cid;
        address.svm_port = port;
        let length = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        if libc::connect(
            fd,
            &address as *const libc::sockaddr_vm as *const libc::sockaddr,
            length,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(file)
    }
}

/// Doubling delays between two bounds.
struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    fn wait(&mut self) {
        std::thread::sleep(self.next);
        self.next = (self.next * 2).min(self.max);
    }

    fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Keeps a stream to the host open and served, forever.
pub fn run(transport: &Transport) -> ! {
    let session = Arc::new(Session::new());
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
    let mut last_error = None;
    // Said once, and again after a failure was: a vsock stream is opened
    // again after every restore, and a console line then costs a guest its
    // first request's time.
    let mut announced = false;
    loop {
        let endpoint = transport.endpoint();
        match endpoint.open() {
            Ok(stream) => {
                if !announced || last_error.is_some() {
                    log!("opened {endpoint}");
                    announced = true;
                }
                last_error = None;
                if serve_stream(&endpoint, stream, &session) {
                    backoff.reset();
                }
            }
            Err(error) => {
                // Said once per kind of failure, not every 500 ms while no host listens.
                let text = format!("cannot open {endpoint}: {error}");
                if last_error.as_ref() != Some(&text) {
                    log!("{text}; retrying");
                    last_error = Some(text);
                }
            }
        }
        backoff.wait();
    }
}

/// Serves conversations on one open stream until it is unusable; answers
/// whether any conversation started on it.
fn serve_stream(endpoint: &Endpoint, stream: File, session: &Arc<Session>) -> bool {
    let serial = endpoint.is_serial();
    let mut started = false;
    let mut idle = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
    let raw = stream.as_raw_fd();
    let mut reader = BufReader::with_capacity(HEADER_LEN + MAX_PAYLOAD, stream);
    loop {
        match skip_to_sync(&mut reader) {
            Ok(()) => idle.reset(),
            // No host behind the port right now.
            Err(error) if serial && error.kind() == io::ErrorKind::UnexpectedEof => {
                idle.wait();
                continue;
            }
            Err(error) => {
                if error.kind() != io::ErrorKind::UnexpectedEof {
                    log!("{endpoint}: {error}");
                }
                break;
            }
        }
        let writer = match reader.get_ref().try_clone() {
            Ok(writer) => writer,
            Err(error) => {
                log!("cannot duplicate the stream: {error}");
                break;
            }
        };
        let Ok(generation) = session.begin(writer) else {
            log!("{endpoint}: the greeting could not be written");
            if serial {
                continue;
            }
            break;
        };
        started = true;
        let end = session.serve(&mut reader, generation);
        session.end(generation);
        match end {
            FrameError::Protocol(message) => log!("{message}; waiting for the host to sync again"),
            // Every wake and daemon restart: no console line, which an
            // emulated guest pays for with tens of milliseconds of its
            // first request after a restore.
            FrameError::Resync => {}
            FrameError::Closed if serial => {}
            FrameError::Closed => break,
            FrameError::Io(error) => {
                log!("{endpoint}: {error}");
                if !serial || error.kind() != io::ErrorKind::UnexpectedEof {
                    break;
                }
            }
        }
    }
    // Wakes writers still blocked on this stream (a socket; a serial port
    // is reopened and its writers time out with the host).
    // SAFETY: shutdown on a fd we still own; harmless on a non-socket.
    unsafe { libc::shutdown(raw, libc::SHUT_RDWR) };
    // A virtio-serial port opens only once at a time: the session's copy
    // must be closed before the port is opened again.
    session.release();
    started
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serial_port_is_found_by_name_not_by_symlink() {
        let root = std::env::temp_dir().join(format!("hatch-agent-ports-{}", std::process::id()));
        for (dir, name) in [
            ("vport0p0", "org.qemu.guest_agent.0\n"),
            ("vport0p1", "org.hatch.agent.0\n"),
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join("name"), name).unwrap();
        }
        assert_eq!(
            find_serial_port(&root, Path::new("/dev")),
            Some(PathBuf::from("/dev/vport0p1"))
        );
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(find_serial_port(&root, Path::new("/dev")), None);
    }
}
