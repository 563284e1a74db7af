//! Starting, stopping and supervising the dnsmasq child process.

use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::mpsc;

use super::conf::{self, Paths};
use super::Request;
use crate::sys::process as proc;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// dnsmasq rereads two small files on SIGHUP in well under a millisecond;
/// longer means it is stuck, and a restart is the cure.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(3);
const LOG_POLL: Duration = Duration::from_millis(2);
const STOP_GRACE: Duration = Duration::from_secs(3);
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A child that ran this long is considered healthy again (back-off resets).
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

fn conf_marker(paths: &Paths) -> String {
    format!("--conf-file={}", paths.conf.display())
}

/// A dnsmasq left over from an earlier daemon run (same config file) would
/// hold the DHCP and DNS sockets; stop it before starting ours.
pub(super) async fn stop_orphan(paths: &Paths) {
    let Some(pid) = std::fs::read_to_string(&paths.pid)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return;
    };
    if proc::is_alive_with_marker(pid, &conf_marker(paths)) {
        tracing::info!(pid, "stopping a dnsmasq left by an earlier run");
        proc::terminate(pid, STOP_GRACE).await;
    }
}

/// Starts dnsmasq in the foreground and waits until it wrote its pid file,
/// which it does after reading the configuration and binding its sockets.
pub(super) async fn start(paths: &Paths) -> Result<Child, String> {
    // Leases of deleted VMs would block their addresses for new VMs.
    conf::prune_leases(&paths.leases, &conf::read_reservations(paths)).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&paths.pid);
    rotate_log(paths);
    let log_start = log_len(paths);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(|e| format!("cannot open {}: {e}", paths.log.display()))?;
    let mut child = crate::sys::cmd::command("dnsmasq")
        .arg("--keep-in-foreground")
        .arg(conf_marker(paths))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start dnsmasq (is dnsmasq-base installed?): {e}"))?;
    let pid = child.id().unwrap_or(0);
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "dnsmasq exited at start ({status}): {}",
                proc::tail(&paths.log, 2000).trim()
            ));
        }
        let written = std::fs::read_to_string(&paths.pid)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if written == Some(pid) {
            // The hosts file is read after the pid file is written.
            return match hosts_read(paths, log_start, deadline).await {
                Ok(()) => Ok(child),
                Err(e) => {
                    stop(child).await;
                    Err(e)
                }
            };
        }
        if tokio::time::Instant::now() >= deadline {
            stop(child).await;
            return Err(format!("dnsmasq did not become ready within {READY_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log_len(paths: &Paths) -> u64 {
    std::fs::metadata(&paths.log).map(|m| m.len()).unwrap_or(0)
}

/// Waits until dnsmasq's log, after byte `from`, says it read the hosts
/// file (`read <path>`), or says it could not (`cannot read <path>: why`).
async fn hosts_read(paths: &Paths, from: u64, deadline: tokio::time::Instant) -> Result<(), String> {
    let hosts = paths.hosts.display().to_string();
    let (done, failed) = (format!(": read {hosts}"), format!("cannot read {hosts}"));
    loop {
        let tail = read_log_from(&paths.log, from);
        for line in tail.lines() {
            if line.contains(&failed) {
                return Err(line.to_string());
            }
            if line.ends_with(&done) {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("dnsmasq did not read {hosts} within its deadline"));
        }
        tokio::time::sleep(LOG_POLL).await;
    }
}

/// The log after byte `from` (all of it when it is shorter: rotated).
fn read_log_from(path: &std::path::Path, from: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(if len >= from { from } else { 0 }));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Makes the running dnsmasq reread its hosts files (SIGHUP) and waits
/// until it has: from then on it serves the new reservations.
async fn reload(paths: &Paths, child: &Child) -> Result<(), String> {
    let pid = child.id().ok_or("dnsmasq has exited")?;
    let from = log_len(paths);
    proc::signal(pid, Signal::SIGHUP);
    hosts_read(paths, from, tokio::time::Instant::now() + RELOAD_TIMEOUT).await
}

/// Stops `child` if one runs and starts a new dnsmasq in its place.
async fn restart(paths: &Paths, child: &mut Option<Child>) -> Result<(), String> {
    if let Some(running) = child.take() {
        stop(running).await;
    }
    *child = Some(start(paths).await?);
    Ok(())
}

/// Keeps one previous log (`dnsmasq.log.1`) once the log passes 1 MiB, so
/// DHCP chatter cannot fill the disk over months.
fn rotate_log(paths: &Paths) {
    const MAX_LOG_BYTES: u64 = 1 << 20;
    if std::fs::metadata(&paths.log).is_ok_and(|m| m.len() > MAX_LOG_BYTES) {
        let _ = std::fs::rename(&paths.log, paths.log.with_extension("log.1"));
    }
}

pub(super) async fn stop(mut child: Child) {
    if let Some(pid) = child.id() {
        proc::signal(pid, Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

enum Event {
    Exited(String),
    RetryDue,
}

async fn next_event(child: &mut Option<Child>, backoff: Duration) -> Event {
    match child.as_mut() {
        Some(running) => Event::Exited(match running.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        }),
        None => {
            tokio::time::sleep(backoff).await;
            Event::RetryDue
        }
    }
}

/// Keeps dnsmasq running until asked to stop.
pub(super) async fn supervise(
    paths: Paths,
    first: Child,
    mut requests: mpsc::Receiver<Request>,
    pid: Arc<AtomicU32>,
    exits: Arc<AtomicU32>,
) {
    let mut child = Some(first);
    let mut started_at = tokio::time::Instant::now();
    let mut backoff = MIN_BACKOFF;
    let publish = |child: &Option<Child>| pid.store(child.as_ref().and_then(Child::id).unwrap_or(0), Ordering::SeqCst);
    publish(&child);
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(Request::Restart(reply)) => {
                    let result = restart(&paths, &mut child).await;
                    started_at = tokio::time::Instant::now();
                    publish(&child);
                    let _ = reply.send(result);
                }
                Some(Request::Reload(reply)) => {
                    let reloaded = match child.as_ref() {
                        Some(running) => reload(&paths, running).await,
                        None => Err("dnsmasq is not running".into()),
                    };
                    let result = match reloaded {
                        Ok(()) => Ok(()),
                        Err(why) => {
                            // An unreadable hosts file leaves dnsmasq with no
                            // reservations at all; started afresh (as root)
                            // it reads them.
                            tracing::warn!(%why, "dnsmasq did not reread its hosts files; restarting it");
                            let result = restart(&paths, &mut child).await;
                            started_at = tokio::time::Instant::now();
                            result
                        }
                    };
                    publish(&child);
                    let _ = reply.send(result);
                }
                Some(Request::Stop(reply)) => {
                    if let Some(running) = child.take() {
                        stop(running).await;
                    }
                    publish(&child);
                    let _ = reply.send(());
                    return;
                }
                None => {
                    if let Some(running) = child.take() {
                        stop(running).await;
                    }
                    publish(&child);
                    return;
                }
            },
            event = next_event(&mut child, backoff) => {
                match event {
                    Event::Exited(status) => {
                        tracing::warn!(%status, log = %proc::tail(&paths.log, 500).trim(), "dnsmasq exited; restarting");
                        child = None;
                        exits.fetch_add(1, Ordering::SeqCst);
                        backoff = if started_at.elapsed() >= HEALTHY_AFTER { MIN_BACKOFF } else { (backoff * 2).min(MAX_BACKOFF) };
                    }
                    Event::RetryDue => match start(&paths).await {
                        Ok(started) => {
                            tracing::info!("dnsmasq restarted");
                            child = Some(started);
                            started_at = tokio::time::Instant::now();
                        }
                        Err(e) => {
                            tracing::warn!("dnsmasq restart failed: {e}");
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    },
                }
                publish(&child);
            }
        }
    }
}
