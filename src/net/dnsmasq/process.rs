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
    conf::prune_leases(&paths.leases, &conf::read_reservations(&paths.conf)).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&paths.pid);
    rotate_log(paths);
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
            return Ok(child);
        }
        if tokio::time::Instant::now() >= deadline {
            stop(child).await;
            return Err(format!("dnsmasq did not become ready within {READY_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
                    if let Some(running) = child.take() {
                        stop(running).await;
                    }
                    let result = start(&paths).await.map(|started| child = Some(started));
                    started_at = tokio::time::Instant::now();
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
