//! Starting the command: pipes or a pseudo-terminal, a new session (so its
//! process group can be killed as one), the account's credentials, and a
//! waiter thread that marks the group finished before reaping the leader.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use hatch_agent_proto::{ErrorCode, Kind, Reply, WindowSize};

use super::output::Source;
use super::prepare::Prepared;
use super::{lock, Terminal};
use crate::channel::{error, io_error};

/// The command's process group. Killing it is only allowed while the
/// leader has not been reaped: `running` is cleared under the same lock
/// before the waiter reaps it, so the group id is never a stranger's.
pub struct ProcessGroup {
    pgid: libc::pid_t,
    running: Mutex<bool>,
}

impl ProcessGroup {
    pub fn kill(&self) {
        let running = lock(&self.running);
        if *running {
            // SAFETY: signals a group we created and whose leader is unreaped.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
    }

    fn exited(&self) {
        *lock(&self.running) = false;
    }
}

pub struct Started {
    pub group: Arc<ProcessGroup>,
    pub at: Instant,
    pub stdin: Option<ChildStdin>,
    pub terminal: Option<Terminal>,
    pub outputs: Vec<Source>,
    /// Becomes readable (hung up) when the command has exited.
    pub exit_notice: File,
    pub waiter: JoinHandle<(io::Result<ExitStatus>, Instant)>,
}

pub fn start(prepared: &Prepared, stdin: bool) -> Result<Started, Reply> {
    let mut command = Command::new(&prepared.program);
    command
        .arg0(&prepared.argv[0])
        .args(&prepared.argv[1..])
        .env_clear()
        .envs(&prepared.env);
    let terminal = match prepared.tty {
        Some(size) => {
            let (master, slave) =
                open_pty(size, prepared.account.uid).map_err(|e| io_error("opening a terminal", &e))?;
            let clone = || slave.try_clone().map_err(|e| io_error("opening a terminal", &e));
            command.stdin(clone()?).stdout(clone()?).stderr(slave);
            Some(Arc::new(master))
        }
        None => {
            command
                .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };
    set_credentials(&mut command, prepared);
    let (notice_read, notice_write) = pipe().map_err(|e| io_error("creating a pipe", &e))?;
    let at = Instant::now();
    let mut child = command.spawn().map_err(|e| {
        let code = if e.kind() == io::ErrorKind::NotFound {
            ErrorCode::NotFound
        } else {
            ErrorCode::SpawnFailed
        };
        error(code, format!("cannot start {}: {e}", prepared.argv[0]))
    })?;
    // The parent's copies of the terminal's slave side close with the
    // command, so the master sees the end when the command's side is gone.
    drop(command);
    let outputs = match &terminal {
        Some(master) => vec![Source::new(Box::new(master.clone()), Kind::Stdout)],
        None => vec![
            Source::new(Box::new(child.stdout.take().expect("piped")), Kind::Stdout),
            Source::new(Box::new(child.stderr.take().expect("piped")), Kind::Stderr),
        ],
    };
    let group = Arc::new(ProcessGroup {
        pgid: child.id() as libc::pid_t,
        running: Mutex::new(true),
    });
    let stdin = child.stdin.take();
    let waiter = {
        let group = group.clone();
        std::thread::Builder::new()
            .name("exec-wait".into())
            .stack_size(crate::channel::STACK_SIZE)
            .spawn(move || wait(child, &group, notice_write))
            .map_err(|e| io_error("starting a thread", &e))?
    };
    Ok(Started {
        group,
        at,
        stdin,
        terminal,
        outputs,
        exit_notice: notice_read,
        waiter,
    })
}

/// New session (and process group), the terminal as controlling terminal,
/// the account's groups and ids, then its working directory (checked as
/// that user). Runs in the forked child: system calls only, no allocation.
fn set_credentials(command: &mut Command, prepared: &Prepared) {
    let tty = prepared.tty.is_some();
    let switch = prepared.switch_user;
    let (uid, gid) = (prepared.account.uid, prepared.account.gid);
    let groups: Vec<libc::gid_t> = prepared.account.groups.clone();
    let cwd = prepared.cwd.clone();
    let check = |result: libc::c_int| {
        if result < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: the closure makes only async-signal-safe system calls on
    // data prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            reset_signals();
            check(libc::setsid())?;
            if tty {
                check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            if switch {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            check(libc::chdir(cwd.as_ptr()))
        });
    }
}

/// Every signal back to its default action: ignored signals survive exec,
/// and the agent's parent (an init, a test runner) may have ignored some.
/// The raw system call, because libc refuses to touch the signals it
/// reserves for itself (32 and 33), which a parent may have ignored too.
/// Runs in the forked child: async-signal-safe.
fn reset_signals() {
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::c_ulong,
        flags: libc::c_ulong,
        restorer: libc::c_ulong,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL as libc::c_ulong,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a valid sigaction for the kernel's ABI (8-byte mask).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
}

/// Waits for the leader without reaping it, ends kills of its group, then
/// reaps it and signals the output pump.
fn wait(mut child: Child, group: &ProcessGroup, notice: File) -> (io::Result<ExitStatus>, Instant) {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let result = unsafe {
            libc::waitid(
                libc::P_PID,
                child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if result == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    let at = Instant::now();
    group.exited();
    let status = child.wait();
    drop(notice);
    (status, at)
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two; both ends are owned at once.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])))
    }
}

/// A pseudo-terminal pair (both ends close-on-exec), the slave owned by
/// the user who runs on it, like a login terminal.
fn open_pty(size: WindowSize, uid: u32) -> io::Result<(File, File)> {
    let master = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/ptmx")?;
    let mut unlock: libc::c_int = 0;
    let mut number: libc::c_uint = 0;
    // SAFETY: ioctls on the master with valid out pointers.
    unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) < 0
            || libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(format!("/dev/pts/{number}"))?;
    std::os::unix::fs::fchown(&slave, Some(uid), None)?;
    set_size(&master, size)?;
    Ok((master, slave))
}

pub fn set_size(terminal: &File, size: WindowSize) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: a valid winsize on a terminal fd.
    if unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
