//! Fork and create-from-snapshot: one VM's saved state restored into new
//! VMs.
//!
//! The state comes from a running VM (paused only while the hypervisor
//! saves it and its disk is cloned, then resumed) or from a snapshot. It is
//! staged in a scratch directory of the source VM (`work-fork-…`, which the
//! reconciler sweeps after a crash). Each new VM is recorded like a create
//! (`creating` first, so a crash rolls it back; its own TAP, IP, MAC, port,
//! disk and seed), restored instead of booted, and stays `creating` until
//! its agent has taken its own identity; only then does it run, so no two
//! VMs ever answer for one address. A fork is all or nothing: every clone
//! stays `creating` until all have taken their identity, so a failure or a
//! crash before that leaves none of them.

mod clones;
mod stage;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::model::{Egress, Image, Lifetime, RestartPolicy, Vm};
use crate::vmm::SnapshotFiles;

use super::operations::Accepted;
use super::{OrchError, Orchestrator};
use stage::remove_staged;

/// Most VMs one fork makes.
pub const MAX_FORK_COUNT: u32 = 16;
/// How long a clone may take from restore until it has taken its identity
/// (a software-emulated guest on a busy host is slow to be scheduled).
const IDENTITY_WAIT: Duration = Duration::from_secs(120);
/// Clones restored at once: each restore reads the whole saved state.
const RESTORES_AT_ONCE: usize = 4;

/// What a clone may choose for itself; everything else is its parent's.
#[derive(Debug, Clone, Default)]
pub struct CloneSettings {
    /// The key that will own the clones (quotas are checked against it).
    pub owner: Option<String>,
    pub lifetime: Option<Lifetime>,
    pub restart_policy: Option<RestartPolicy>,
    pub egress: Option<Egress>,
}

/// A VM's state saved for clones: the hypervisor's files and the disk as
/// it was saved, in a scratch directory of the parent's.
pub(super) struct Staged {
    dir: PathBuf,
    files: SnapshotFiles,
    disk: Option<PathBuf>,
    parent: Vm,
    image: Image,
    /// Named in the clones' events.
    origin: String,
}
impl Orchestrator {
    /// `POST /vms/{id}/fork`: `count` new VMs from the VM's state now (a
    /// running VM is paused briefly) or from the snapshot it was suspended
    /// with. Answers them ready, or nothing was made.
    pub async fn fork_vm(
        self: &Arc<Self>,
        id: &str,
        count: u32,
        settings: CloneSettings,
    ) -> Result<Vec<Vm>, OrchError> {
        if !(1..=MAX_FORK_COUNT).contains(&count) {
            return Err(OrchError::InvalidField {
                field: "count",
                message: format!("count must be 1 to {MAX_FORK_COUNT}, got {count}"),
            });
        }
        let id = id.to_string();
        self.run_vm_operation(Some(id.clone()), move |orch| async move {
            let staged = orch.stage_vm(&id, count, settings.owner.as_deref()).await?;
            let made = orch.clone_staged(&staged, count, &settings, Accepted::default()).await;
            remove_staged(&staged.dir).await;
            made
        })
        .await
    }

    /// `POST /vms {"snapshot_id": …}`: one new VM restored from the
    /// snapshot (the caller's right to read it was checked by the API).
    pub(super) async fn create_from_snapshot_op(
        self: &Arc<Self>,
        snapshot_id: &str,
        settings: CloneSettings,
        accepted: Accepted,
    ) -> Result<Vm, OrchError> {
        let missing = || OrchError::InvalidField {
            field: "snapshot_id",
            message: format!("no snapshot {snapshot_id}"),
        };
        let snapshot = self.stored_snapshot(snapshot_id).await?.ok_or_else(missing)?;
        let staged = {
            let _guard = self.locks.lock(&snapshot.vm_id).await;
            let vm = self.get_vm(&snapshot.vm_id).await?;
            // Read again under the lock: a delete may have removed it.
            let snapshot = self.stored_snapshot(snapshot_id).await?.ok_or_else(missing)?;
            self.stage_snapshot(vm, &snapshot).await?
        };
        let made = self.clone_staged(&staged, 1, &settings, accepted).await;
        remove_staged(&staged.dir).await;
        made?
            .pop()
            .ok_or_else(|| OrchError::Internal("the clone was not made".into()))
    }
}

fn no_agent(vm_id: &str, why: &str) -> OrchError {
    OrchError::AgentUnavailable {
        message: format!(
            "VM {vm_id} cannot be cloned: {why}. Forks need an image with hatch-agent, through which each clone \
             takes its own MAC, address and hostname"
        ),
    }
}
