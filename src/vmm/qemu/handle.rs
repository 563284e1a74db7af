//! A running QEMU process and the QMP operations on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::qmp::Qmp;
use crate::vmm::supervisor::VmmProcess;
use crate::vmm::{ExitReport, SnapshotFiles, VmHandle, VmmError};

/// The file a QEMU snapshot's migration stream (device state and RAM) goes to.
pub const STATE_FILE: &str = "vmstate";
/// Saving a snapshot should not be throttled (QEMU's default is 128 MiB/s).
const MIGRATION_MAX_BANDWIDTH: u64 = 16 << 30;
/// The name the snapshot stream's descriptor is registered under (QMP `getfd`).
const MIGRATION_FD_NAME: &str = "hatch-vmstate";
const SAVE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a save in progress is asked about: the guest waits for the
/// save, so a coarse poll would add up to its period to every snapshot.
const POLL: Duration = Duration::from_millis(5);
/// How long a failed QMP call waits to see whether QEMU is exiting.
const EXIT_SETTLE: Duration = Duration::from_secs(2);

pub struct QemuVm {
    process: VmmProcess,
    qmp_path: PathBuf,
    /// One QMP session, reopened on demand after an error.
    qmp: Mutex<Option<Qmp>>,
}

impl QemuVm {
    pub fn new(process: VmmProcess, qmp_path: PathBuf, qmp: Option<Qmp>) -> Self {
        QemuVm {
            process,
            qmp_path,
            qmp: Mutex::new(qmp),
        }
    }

    pub fn process(&self) -> &VmmProcess {
        &self.process
    }

    async fn call(&self, command: &str, arguments: Option<Value>) -> Result<Value, VmmError> {
        if let Some(report) = self.process.exited() {
            return Err(VmmError::Control(format!(
                "QEMU has exited (code {:?}, signal {:?})",
                report.code, report.signal
            )));
        }
        let mut session = self.qmp.lock().await;
        if session.is_none() {
            *session = Some(Qmp::connect(&self.qmp_path).await?);
        }
        let Some(qmp) = session.as_mut() else {
            return Err(VmmError::Control("QMP session unavailable".into()));
        };
        let result = qmp.execute(command, arguments).await;
        if matches!(result, Err(VmmError::Control(_))) {
            // The connection is in an unknown state; start afresh next time.
            *session = None;
        }
        result
    }

    async fn call_with_fd(&self, command: &str, arguments: Value, fd: std::os::fd::RawFd) -> Result<Value, VmmError> {
        if self.process.exited().is_some() {
            return Err(VmmError::Control("QEMU has exited".into()));
        }
        let mut session = self.qmp.lock().await;
        if session.is_none() {
            *session = Some(Qmp::connect(&self.qmp_path).await?);
        }
        let Some(qmp) = session.as_mut() else {
            return Err(VmmError::Control("QMP session unavailable".into()));
        };
        let result = qmp.execute_with_fd(command, Some(arguments), Some(fd)).await;
        if matches!(result, Err(VmmError::Control(_))) {
            *session = None;
        }
        result
    }

    async fn status(&self) -> Result<String, VmmError> {
        let reply = self.call("query-status", None).await?;
        Ok(reply
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// After `-incoming`: waits until the saved state is loaded. The guest
    /// stays paused (QEMU was started with `-S`) until [`VmHandle::resume`]:
    /// a streamed state is verified only once all of it was read.
    pub async fn wait_incoming_loaded(&self, timeout: Duration) -> Result<(), VmmError> {
        let status = self
            .process
            .wait_until("the saved state to load", timeout, || async {
                match self.status().await {
                    Ok(status) if status == "inmigrate" => None,
                    Ok(status) => Some(Ok(status)),
                    // QEMU closes QMP as it exits on a failed load: let
                    // wait_until report the exit with QEMU's own message.
                    Err(_) if self.process.wait_exit_timeout(EXIT_SETTLE).await.is_some() => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .await??;
        match status.as_str() {
            "paused" | "prelaunch" => Ok(()),
            other => Err(VmmError::Rejected {
                request: "incoming migration".into(),
                message: format!("VM ended in state {other}, not paused"),
            }),
        }
    }

    /// Streams the VM state into `state` through a descriptor the daemon
    /// opened (QEMU, as the VMM user, cannot create files, and its sandbox
    /// forbids the shell an `exec:` URI would start).
    async fn migrate_to(&self, state: &Path) -> Result<(), VmmError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        self.call(
            "migrate-set-parameters",
            Some(json!({ "max-bandwidth": MIGRATION_MAX_BANDWIDTH })),
        )
        .await?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(state)
            .map_err(|source| VmmError::Io {
                path: state.to_path_buf(),
                source,
            })?;
        self.call_with_fd("getfd", json!({ "fdname": MIGRATION_FD_NAME }), file.as_raw_fd())
            .await?;
        drop(file);
        self.call("migrate", Some(json!({ "uri": format!("fd:{MIGRATION_FD_NAME}") })))
            .await?;
        let deadline = tokio::time::Instant::now() + SAVE_TIMEOUT;
        loop {
            let info = self.call("query-migrate", None).await?;
            match info.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => {
                    let why = info
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    return Err(VmmError::Rejected {
                        request: "migrate".into(),
                        message: why.to_string(),
                    });
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    let _ = self.call("migrate_cancel", None).await;
                    return Err(VmmError::Timeout {
                        what: "saving the VM state".into(),
                    });
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// The graceful shutdown request: a paused guest cannot react to the
    /// power button, so continue it first.
    async fn ask_to_power_down(&self) -> Result<(), VmmError> {
        if matches!(self.status().await?.as_str(), "paused" | "postmigrate" | "prelaunch") {
            self.call("cont", None).await?;
        }
        self.call("system_powerdown", None).await.map(|_| ())
    }
}

#[async_trait]
impl VmHandle for QemuVm {
    fn pid(&self) -> u32 {
        self.process.pid()
    }

    async fn pause(&self) -> Result<(), VmmError> {
        self.call("stop", None).await.map(|_| ())
    }

    async fn resume(&self) -> Result<(), VmmError> {
        self.call("cont", None).await.map(|_| ())
    }

    async fn save_snapshot(&self, dir: &Path) -> Result<SnapshotFiles, VmmError> {
        std::fs::create_dir_all(dir).map_err(|source| VmmError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let state = dir.join(STATE_FILE);
        self.pause().await?;
        self.migrate_to(&state).await?;
        Ok(SnapshotFiles { state, memory: None })
    }

    async fn stop(&self, grace: Duration) -> ExitReport {
        let report = self.process.stop_with(|| self.ask_to_power_down(), grace).await;
        *self.qmp.lock().await = None;
        report
    }

    async fn wait_exit(&self) -> ExitReport {
        self.process.wait_exit().await
    }
}
