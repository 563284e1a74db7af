//! Supervision of one VMM process, shared by both backends.
//!
//! The VMM runs in its own session (setsid), with its output going to files in
//! the VM's run directory, so it survives the daemon's exit and a restarted
//! daemon can adopt it. While the daemon lives, one reaper task per process
//! waits for it (no zombies) and publishes the [`ExitReport`] on a watch
//! channel, so any number of callers can await the exit concurrently.

use std::ffi::OsString;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;

use super::privilege::VmmUser;
use super::{serial_tail, ExitReport, VmmError};
use crate::sys::process;

/// File in the run directory holding the VMM's pid.
pub const PID_FILE: &str = "vmm.pid";
/// File in the run directory receiving the VMM's own stderr.
pub const VMM_LOG: &str = "vmm.log";
/// How often an adopted (non-child) process is checked for liveness.
const ADOPTED_POLL: Duration = Duration::from_millis(200);
/// How long to wait for the kernel to deliver a SIGKILLed process's exit.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How often a graceful shutdown request is repeated while waiting.
const ASK_AGAIN: Duration = Duration::from_secs(3);
/// Poll interval of [`VmmProcess::wait_until`].
const STARTUP_POLL: Duration = Duration::from_millis(20);

/// What to run and where its output goes.
pub struct SpawnSpec<'a> {
    pub program: &'a Path,
    pub args: Vec<OsString>,
    pub run_dir: &'a Path,
    /// Where the process's stdout goes (Firecracker's serial console is its stdout).
    pub stdout: PathBuf,
    /// A network namespace (a file such as /run/netns/NAME) to run the VMM
    /// in, so that it finds TAP devices created there; None: our own.
    pub netns: Option<&'a Path>,
    /// The unprivileged user to switch to before exec; None: the daemon's own.
    pub user: Option<&'a VmmUser>,
    /// Open descriptors the VMM inherits under their own numbers (all others
    /// are close-on-exec). The caller keeps them open until spawn returns.
    pub pass_fds: &'a [RawFd],
    /// The cgroup v2 directory the process joins before exec.
    pub cgroup: Option<PathBuf>,
}

/// A supervised VMM process (our child, or adopted from an earlier daemon).
pub struct VmmProcess {
    pid: u32,
    run_dir: PathBuf,
    /// The VMM's cgroup, removed once it exits.
    cgroup: Option<PathBuf>,
    exit: watch::Receiver<Option<ExitReport>>,
}

impl VmmProcess {
    /// Starts the process in its own session and begins reaping it.
    pub async fn spawn(spec: SpawnSpec<'_>) -> Result<VmmProcess, VmmError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| VmmError::Io { path, source }
        };
        let stdout = append_file(&spec.stdout).map_err(io_err(&spec.stdout))?;
        let log_path = spec.run_dir.join(VMM_LOG);
        let stderr = append_file(&log_path).map_err(io_err(&log_path))?;
        let netns = match spec.netns {
            Some(path) => Some(std::fs::File::open(path).map_err(io_err(path))?),
            None => None,
        };
        let netns_fd = netns.as_ref().map(|file| file.as_raw_fd());
        let cgroup_procs = match &spec.cgroup {
            Some(dir) => {
                let path = dir.join("cgroup.procs");
                Some(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path))?,
                )
            }
            None => None,
        };
        let cgroup_fd = cgroup_procs.as_ref().map(|file| file.as_raw_fd());
        let pass_fds = spec.pass_fds.to_vec();
        let user = spec.user.map(|u| {
            (
                nix::unistd::Uid::from_raw(u.uid),
                nix::unistd::Gid::from_raw(u.gid),
                u.groups
                    .iter()
                    .map(|g| nix::unistd::Gid::from_raw(*g))
                    .collect::<Vec<_>>(),
            )
        });
        let mut command = crate::sys::cmd::command(spec.program);
        command
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: only async-signal-safe system calls (setsid, setns, write,
        // fcntl, setgroups, setgid, setuid) on data prepared before the fork;
        // the files stay open until spawn returns.
        // A new session keeps the VMM alive (and out of our terminal's signals)
        // when the daemon exits; it is adopted again on restart.
        unsafe {
            command.pre_exec(move || {
                use nix::fcntl::{fcntl, FcntlArg, FdFlag};
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if let Some(fd) = netns_fd {
                    let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                }
                if let Some(fd) = cgroup_fd {
                    // Writing 0 moves the writing process itself.
                    nix::unistd::write(std::os::fd::BorrowedFd::borrow_raw(fd), b"0").map_err(std::io::Error::from)?;
                }
                for fd in &pass_fds {
                    fcntl(*fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(std::io::Error::from)?;
                }
                if let Some((uid, gid, groups)) = &user {
                    nix::unistd::setgroups(groups).map_err(std::io::Error::from)?;
                    nix::unistd::setgid(*gid).map_err(std::io::Error::from)?;
                    nix::unistd::setuid(*uid).map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        let spawned = command.spawn().map_err(VmmError::Spawn);
        drop(netns);
        drop(cgroup_procs);
        let mut child = spawned?;
        let Some(pid) = child.id() else {
            // Already exited and reaped by tokio; nothing is left to clean up.
            let status = child.wait().await.map_err(VmmError::Spawn)?;
            return Err(VmmError::EarlyExit {
                code: status.code(),
                serial_tail: String::new(),
            });
        };
        let (tx, rx) = watch::channel(None);
        let run_dir = spec.run_dir.to_path_buf();
        let reaper_dir = run_dir.clone();
        let cgroup = spec.cgroup.clone();
        let reaper_cgroup = cgroup.clone();
        tokio::spawn(async move {
            let (code, signal) = match child.wait().await {
                Ok(status) => (status.code(), status.signal()),
                Err(e) => {
                    tracing::error!(pid, error = %e, "waiting for VMM process failed");
                    (None, None)
                }
            };
            publish_exit(&tx, pid, &reaper_dir, reaper_cgroup.as_deref(), code, signal);
        });
        let process = VmmProcess {
            pid,
            run_dir,
            cgroup,
            exit: rx,
        };
        let pid_path = process.run_dir.join(PID_FILE);
        if let Err(source) = std::fs::write(&pid_path, format!("{pid}\n")) {
            process.kill_and_reap().await;
            return Err(VmmError::Io { path: pid_path, source });
        }
        Ok(process)
    }

    /// Takes over a running VMM started earlier. `marker` must appear in its
    /// command line (its control socket path), so a reused pid is never adopted.
    pub fn adopt(pid: u32, run_dir: &Path, marker: &str) -> Result<VmmProcess, VmmError> {
        if !process::is_alive_with_marker(pid, marker) {
            return Err(VmmError::NotAdoptable { pid });
        }
        let (tx, rx) = watch::channel(None);
        let reaper_dir = run_dir.to_path_buf();
        let cgroup = super::cgroup::of_process(pid);
        let reaper_cgroup = cgroup.clone();
        // Not our child: we cannot wait() for it, so poll until it is gone.
        tokio::spawn(async move {
            while process::is_alive(pid) {
                tokio::time::sleep(ADOPTED_POLL).await;
            }
            publish_exit(&tx, pid, &reaper_dir, reaper_cgroup.as_deref(), None, None);
        });
        Ok(VmmProcess {
            pid,
            run_dir: run_dir.to_path_buf(),
            cgroup,
            exit: rx,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The cgroup v2 directory holding the VMM, when limits apply.
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_deref()
    }

    /// The exit report, if the process has already exited.
    pub fn exited(&self) -> Option<ExitReport> {
        self.exit.borrow().clone()
    }

    pub async fn wait_exit(&self) -> ExitReport {
        let mut rx = self.exit.clone();
        let report = match rx.wait_for(Option::is_some).await {
            Ok(report) => report.clone(),
            // The reaper always publishes before dropping its sender.
            Err(_) => None,
        };
        report.unwrap_or_else(|| self.unknown_exit())
    }

    pub async fn wait_exit_timeout(&self, timeout: Duration) -> Option<ExitReport> {
        tokio::time::timeout(timeout, self.wait_exit()).await.ok()
    }

    fn unknown_exit(&self) -> ExitReport {
        ExitReport {
            code: None,
            signal: None,
            serial_tail: serial_tail(&self.run_dir),
        }
    }

    /// SIGKILL (if still running) and wait until the process is reaped or gone.
    pub async fn kill_and_reap(&self) -> ExitReport {
        if self.exited().is_none() {
            process::signal(self.pid, Signal::SIGKILL);
        }
        match self.wait_exit_timeout(KILL_WAIT).await {
            Some(report) => report,
            None => {
                tracing::error!(pid = self.pid, "VMM process did not go away after SIGKILL");
                self.unknown_exit()
            }
        }
    }

    /// The shared stop policy: `ask` the guest to shut down (the backend's
    /// graceful request), give it `grace` to exit, then kill. The request is
    /// repeated every few seconds, like pressing a power button again: a
    /// guest that was still starting its listener may have missed the first.
    pub async fn stop_with<F, Fut>(&self, mut ask: F, grace: Duration) -> ExitReport
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), VmmError>>,
    {
        if let Some(report) = self.exited() {
            return report;
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut first = true;
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, ask()).await {
                Ok(Ok(())) => {}
                // Later failures are expected while the VMM is exiting.
                Ok(Err(e)) if first => {
                    tracing::warn!(pid = self.pid, error = %e, "graceful shutdown request failed; killing the VMM");
                    break;
                }
                Ok(Err(_)) => {}
                Err(_) => break,
            }
            first = false;
            let next_ask = (tokio::time::Instant::now() + ASK_AGAIN).min(deadline);
            if let Ok(report) = tokio::time::timeout_at(next_ask, self.wait_exit()).await {
                return report;
            }
        }
        if !grace.is_zero() {
            tracing::warn!(
                pid = self.pid,
                "guest did not shut down within {grace:?}; killing the VMM"
            );
        }
        self.kill_and_reap().await
    }

    /// Polls `probe` until it yields a value, failing early if the process
    /// exits (with its output in the error) or after `timeout`.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, timeout: Duration, mut probe: F) -> Result<T, VmmError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(report) = self.exited() {
                return Err(self.early_exit_error(report));
            }
            if let Some(value) = probe().await {
                return Ok(value);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(VmmError::Timeout { what: what.to_string() });
            }
            tokio::time::sleep(STARTUP_POLL).await;
        }
    }

    /// An `EarlyExit` error carrying the VMM's own messages and the serial tail.
    pub fn early_exit_error(&self, report: ExitReport) -> VmmError {
        let vmm_output = process::tail(&self.run_dir.join(VMM_LOG), 2048);
        let mut text = vmm_output.trim().to_string();
        if !report.serial_tail.trim().is_empty() {
            text.push_str("\n--- serial console ---\n");
            text.push_str(report.serial_tail.trim());
        }
        VmmError::EarlyExit {
            code: report.code.or(report.signal.map(|s| 128 + s)),
            serial_tail: text,
        }
    }

    /// Runs the start-up steps (configure, boot, load). If they fail, the
    /// process is killed and reaped before the error is returned; if the
    /// caller is cancelled mid-way, the process is killed (its reaper then
    /// reaps it). Either way nothing is left behind.
    pub async fn startup<T, Fut>(&self, steps: Fut) -> Result<T, VmmError>
    where
        Fut: Future<Output = Result<T, VmmError>>,
    {
        let guard = KillOnDrop {
            pid: self.pid,
            exit: self.exit.clone(),
            armed: true,
        };
        let result = steps.await;
        if result.is_err() {
            self.kill_and_reap().await;
        }
        guard.disarm();
        result
    }
}

/// Kills the process when dropped while armed (a cancelled start-up).
struct KillOnDrop {
    pid: u32,
    exit: watch::Receiver<Option<ExitReport>>,
    armed: bool,
}

impl KillOnDrop {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Only while the reaper has not seen it exit, so a reused pid is never hit.
        if self.armed && self.exit.borrow().is_none() {
            process::signal(self.pid, Signal::SIGKILL);
        }
    }
}

fn publish_exit(
    tx: &watch::Sender<Option<ExitReport>>,
    pid: u32,
    run_dir: &Path,
    cgroup: Option<&Path>,
    code: Option<i32>,
    signal: Option<i32>,
) {
    let report = ExitReport {
        code,
        signal,
        serial_tail: serial_tail(run_dir),
    };
    tracing::info!(pid, ?code, ?signal, "VMM process exited");
    remove_pid_file_if_ours(run_dir, pid);
    if let Some(dir) = cgroup {
        super::cgroup::remove(dir);
    }
    tx.send_replace(Some(report));
}

fn remove_pid_file_if_ours(run_dir: &Path, pid: u32) {
    let path = run_dir.join(PID_FILE);
    if read_pid_file(run_dir) == Some(pid) {
        let _ = std::fs::remove_file(path);
    }
}

/// The pid recorded in `run_dir`, if any (for adopting after a restart).
pub fn read_pid_file(run_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(run_dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn append_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// Creates the run directory and removes files a previous process left
/// behind (a stale socket would make the new VMM fail to bind). Refuses if a
/// live VMM whose command line contains `marker` still owns the directory.
pub fn prepare_run_dir(run_dir: &Path, marker: &str, stale_files: &[&str]) -> Result<(), VmmError> {
    std::fs::create_dir_all(run_dir).map_err(|source| VmmError::Io {
        path: run_dir.to_path_buf(),
        source,
    })?;
    if let Some(pid) = read_pid_file(run_dir) {
        if process::is_alive_with_marker(pid, marker) {
            return Err(VmmError::AlreadyRunning { pid });
        }
    }
    for name in stale_files {
        let path = run_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(VmmError::Io { path, source }),
        }
    }
    Ok(())
}

/// A network namespace given by name (as `ip netns` names them) or by path.
pub fn netns_path(name_or_path: &str) -> PathBuf {
    if name_or_path.contains('/') {
        PathBuf::from(name_or_path)
    } else {
        Path::new("/run/netns").join(name_or_path)
    }
}
