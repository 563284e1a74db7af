//! A running Firecracker process and the API operations on it.

use std::path::Path;
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
}

impl FirecrackerVm {
    pub fn new(process: VmmProcess, api: FirecrackerApi) -> Self {
        FirecrackerVm { process, api }
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
        let request = SnapshotCreate {
            snapshot_type: SnapshotType::Full,
            snapshot_path: files.state.clone(),
            mem_file_path: dir.join(MEMORY_FILE),
        };
        self.api.put_snapshot("/snapshot/create", &request).await?;
        Ok(files)
    }

    async fn stop(&self, grace: Duration) -> ExitReport {
        self.process.stop_with(|| self.ask_to_shut_down(), grace).await
    }

    async fn wait_exit(&self) -> ExitReport {
        self.process.wait_exit().await
    }
}
