//! Process inspection for supervising VMMs that may have been started by an
//! earlier run of the daemon (and so are not our children).

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Whether a process with this pid exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state letter follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// The process's command line arguments, if it exists.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
    )
}

/// Whether `pid` is alive and its command line mentions `marker`
/// (used to be sure a recorded pid was not reused by another program).
pub fn is_alive_with_marker(pid: u32, marker: &str) -> bool {
    is_alive(pid) && cmdline(pid).is_some_and(|args| args.iter().any(|a| a.contains(marker)))
}

pub fn signal(pid: u32, signal: Signal) -> bool {
    kill(Pid::from_raw(pid as i32), signal).is_ok()
}

/// Waits until `pid` is gone, polling; returns false on timeout.
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while is_alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// SIGTERM, then SIGKILL after `grace`; returns once the process is gone.
pub async fn terminate(pid: u32, grace: Duration) {
    if !is_alive(pid) {
        return;
    }
    signal(pid, Signal::SIGTERM);
    if !wait_gone(pid, grace).await {
        signal(pid, Signal::SIGKILL);
        wait_gone(pid, Duration::from_secs(5)).await;
    }
}

/// The last `max_bytes` of a log file, lossily decoded (for exit reports);
/// reads only those bytes.
pub fn tail(path: &Path, max_bytes: usize) -> String {
    let bytes = super::console_log::read_tail(path, max_bytes as u64).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
