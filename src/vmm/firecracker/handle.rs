//! A running Firecracker process and the API operations on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use super::api::*;
use crate::vmm::supervisor::VmmProcess;
use crate::vmm::{ExitReport, SnapshotFiles, VmHandle, VmmError};

/// File names of a Full snapshot inside the snapshot directory.
pub const STATE_FILE: &str = "vmstate";
pub const MEMORY_FILE: &str = "memory";

pub struct FirecrackerVm {
    process: VmmProcess,
    api: FirecrackerApi,
    /// The jail's root when jailed: snapshots are written inside it (all the
    /// jailed process can reach) and then moved to the snapshot directory.
    jail_root: Option<PathBuf>,
}

impl FirecrackerVm {
    pub fn new(process: VmmProcess, api: FirecrackerApi) -> Self {
        FirecrackerVm {
            process,
            api,
            jail_root: None,
        }
    }

    pub fn jailed(mut self, root: Option<PathBuf>) -> Self {
        self.jail_root = root;
        self
    }

    /// Removes the jail once its process is gone: its hard links would keep
    /// a deleted VM's disks on disk. Only the jail this process ran in (its
    /// pid file names it), never a newer one made for a restore.
    fn remove_jail(&self) {
        let Some(root) = &self.jail_root else {
            return;
        };
        let pid = std::fs::read_to_string(root.join("firecracker.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if pid == Some(self.process.pid()) && !crate::sys::process::is_alive(self.process.pid()) {
            if let Some(jail) = root.parent() {
                let _ = std::fs::remove_dir_all(jail);
            }
        }
    }

    fn ensure_running(&self) -> Result<(), VmmError> {
        match self.process.exited() {
            Some(report) => Err(VmmError::Control(format!(
                "Firecracker has exited (code {:?}, signal {:?})",
                report.code, report.signal
            ))),
            None => Ok(()),
        }
    }

    async fn set_state(&self, state: RequestedVmState) -> Result<(), VmmError> {
        self.ensure_running()?;
        self.api.patch("/vm", &VmStateChange { state }).await
    }

    /// The graceful shutdown request: Ctrl-Alt-Del through the i8042. A
    /// paused guest cannot react to it, so resume it first.
    async fn ask_to_shut_down(&self) -> Result<(), VmmError> {
        if self.api.instance_info().await?.state == "Paused" {
            self.set_state(RequestedVmState::Resumed).await?;
        }
        self.api
            .put(
                "/actions",
                &Action {
                    action_type: ActionType::SendCtrlAltDel,
                },
            )
            .await
    }
}

#[async_trait]
impl VmHandle for FirecrackerVm {
    fn pid(&self) -> u32 {
        self.process.pid()
    }

    async fn pause(&self) -> Result<(), VmmError> {
        self.set_state(RequestedVmState::Paused).await
    }

    async fn resume(&self) -> Result<(), VmmError> {
        self.set_state(RequestedVmState::Resumed).await
    }

    async fn save_snapshot(&self, dir: &Path) -> Result<SnapshotFiles, VmmError> {
        std::fs::create_dir_all(dir).map_err(|source| VmmError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        // Firecracker snapshots only a paused VM.
        self.pause().await?;
        let files = SnapshotFiles {
            state: dir.join(STATE_FILE),
            memory: Some(dir.join(MEMORY_FILE)),
        };
        let (state, memory) = match &self.jail_root {
            Some(_) => (Path::new("/").join(STATE_FILE), Path::new("/").join(MEMORY_FILE)),
            None => (files.state.clone(), dir.join(MEMORY_FILE)),
        };
        let request = SnapshotCreate {
            snapshot_type: SnapshotType::Full,
            snapshot_path: state,
            mem_file_path: memory,
        };
        self.api.put_snapshot("/snapshot/create", &request).await?;
        if let Some(root) = &self.jail_root {
            for name in [STATE_FILE, MEMORY_FILE] {
                move_file(&root.join(name), &dir.join(name))?;
            }
        }
        Ok(files)
    }

    async fn stop(&self, grace: Duration) -> ExitReport {
        let report = self.process.stop_with(|| self.ask_to_shut_down(), grace).await;
        self.remove_jail();
        report
    }

    async fn wait_exit(&self) -> ExitReport {
        let report = self.process.wait_exit().await;
        self.remove_jail();
        report
    }
}

/// Renames, or copies and removes across file systems.
fn move_file(from: &Path, to: &Path) -> Result<(), VmmError> {
    let io = |source| VmmError::Io {
        path: to.to_path_buf(),
        source,
    };
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map_err(io)?;
    std::fs::remove_file(from).map_err(io)
}
