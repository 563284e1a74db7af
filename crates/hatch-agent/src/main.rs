//! hatch-agent: Hatch's agent inside a guest. It opens one stream to the
//! host (a virtio-serial port or vsock; `--connect-unix` for tests and
//! debugging), answers the host's sync with a Hello, and then serves exec,
//! file, clock and identity requests over the framed protocol of `hatch-agent-proto`.
//! It never exits on its own: a lost host is waited for or reconnected to.

/// Diagnostics go to stderr (the guest's console or journal).
/// One line, written at once: the console is shared with init and user
/// scripts, and a line written in pieces gets theirs mixed into it.
macro_rules! log {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!("hatch-agent: {}\n", format_args!($($arg)*));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

mod channel;
mod clock;
mod dhcp;
mod exec;
mod files;
mod hello;
mod identity;
mod session;
mod system_tools;
mod transport;
mod users;

use std::path::PathBuf;

use transport::Transport;

const USAGE: &str = "usage: hatch-agent [--connect-unix PATH]

Without options the agent uses the virtio-serial port named org.hatch.agent.0
when the guest has one, else vsock (host CID 2, port 1024).
--connect-unix PATH connects to a Unix socket instead (tests, debugging).";

fn main() {
    let transport = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(transport)) => transport,
        Ok(None) => Transport::Guest,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    close_inherited_descriptors();
    // Files the agent creates get exact modes from fchmod; children start
    // with the usual umask whatever the agent's parent had.
    unsafe { libc::umask(0o022) };
    log!("version {} using {transport}", env!("CARGO_PKG_VERSION"));
    transport::run(&transport)
}

fn parse_args(mut args: impl Iterator<Item = std::ffi::OsString>) -> Result<Option<Transport>, String> {
    let mut transport = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--connect-unix") => {
                let path = args.next().ok_or("--connect-unix needs a socket path")?;
                transport = Some(Transport::Unix(PathBuf::from(path)));
            }
            Some("--version") => {
                println!("hatch-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            Some("--help" | "-h") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(transport)
}

/// Marks every descriptor above stderr that the agent's parent left open
/// close-on-exec, so commands never inherit them (everything the agent
/// opens itself is close-on-exec already).
fn close_inherited_descriptors() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: flags on a descriptor number; one that closed meanwhile
        // (the directory's own) just fails.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}
