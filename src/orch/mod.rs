//! Orchestration: one VM's state machine and lock, creation as a ledger with
//! rollback, supervision of VMM processes, and reconcilers that derive host
//! state from the database.
//!
//! Every operation on a VM takes that VM's lock ([`locks::VmLocks`]), checks
//! the transition ([`transitions::begin`]), records the state change in the
//! store, and only then touches the host. Long-running tasks (one supervisor
//! per VMM process, one readiness probe per boot) act through the same lock.

mod create;
mod error;
mod idle;
mod layout;
mod ledger;
mod lifecycle;
mod locks;
mod observe;
mod proxy;
mod reconcile;
mod snapshot;
mod supervise;
pub mod transitions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::model::{Vm, VmState};
use crate::net::{HostNetwork, Network};
use crate::snapshot::SnapshotStore;
use crate::store::Store;
use crate::vmm::{Hypervisor, VmHandle};

pub use create::CreateVm;
pub use error::OrchError;
pub use idle::OrchIdleTarget;
pub use layout::VmLayout;
pub use observe::{VmChange, VmObserver};
pub use proxy::OrchRouteResolver;
pub use snapshot::UnpackedSnapshot;

/// The VM manager the API talks to.
pub struct Orchestrator {
    store: Store,
    config: Arc<Config>,
    hypervisor: Arc<dyn Hypervisor>,
    network: Arc<dyn HostNetwork>,
    /// Where snapshot artefacts live (local directory or S3 bucket), chosen
    /// once at start from the configuration.
    snapshots: Arc<dyn SnapshotStore>,
    locks: locks::VmLocks,
    /// Live VMM processes by VM id.
    handles: Mutex<HashMap<String, Arc<dyn VmHandle>>>,
    /// Serialises choosing network resources and recording them, so
    /// concurrent creates never pick the same IP, MAC, TAP or port.
    allocation: tokio::sync::Mutex<()>,
    /// Told about every state change and deletion (e.g. the proxy's pool).
    observers: observe::Observers,
}

impl Orchestrator {
    /// Chooses the hypervisor, prepares host networking and reconciles the
    /// host with the database (adopting live VMs, cleaning up dead ones).
    pub async fn start(config: Arc<Config>, store: Store) -> Result<Arc<Self>, OrchError> {
        let (hypervisor, checks) = crate::vmm::select::choose(&config.hypervisor)?;
        for check in checks.iter().filter(|c| !c.ok) {
            tracing::warn!(check = %check.name, detail = %check.detail, "prerequisite");
        }
        tracing::info!(hypervisor = hypervisor.kind().as_str(), "hypervisor chosen");
        let snapshots = crate::snapshot::open_store(&config).await?;
        tracing::info!(store = %snapshots.describe(), "snapshot storage");
        let network = Arc::new(Network::new(config.net.clone()));
        Self::start_with(config, store, hypervisor, network, snapshots).await
    }

    /// Like [`start`](Self::start), with the hypervisor, host network and
    /// snapshot storage given (fakes in tests): reconciles the host with
    /// the database through them.
    pub async fn start_with(
        config: Arc<Config>,
        store: Store,
        hypervisor: Arc<dyn Hypervisor>,
        network: Arc<dyn HostNetwork>,
        snapshots: Arc<dyn SnapshotStore>,
    ) -> Result<Arc<Self>, OrchError> {
        let orch = Arc::new(Self {
            store,
            config,
            hypervisor,
            network,
            snapshots,
            locks: locks::VmLocks::default(),
            handles: Mutex::new(HashMap::new()),
            allocation: tokio::sync::Mutex::new(()),
            observers: observe::Observers::default(),
        });
        orch.reconcile().await?;
        Ok(orch)
    }

    /// Stops background work (dnsmasq supervision) and leaves VMs running;
    /// the next start adopts them.
    pub async fn shutdown(&self) {
        self.network.shutdown().await;
    }

    pub fn hypervisor_kind(&self) -> crate::vmm::HypervisorKind {
        self.hypervisor.kind()
    }

    pub async fn get_vm(&self, id: &str) -> Result<Vm, OrchError> {
        self.store.get_vm(id)?.ok_or_else(|| OrchError::vm_not_found(id))
    }

    pub async fn list_vms(&self) -> Result<Vec<Vm>, OrchError> {
        Ok(self.store.list_vms()?)
    }

    /// Waits until the VM's `ready_at` is set (guest accepted TCP on port 22).
    /// A VM without networking is ready once it runs.
    pub async fn wait_ready(&self, id: &str, timeout: Duration) -> Result<Vm, OrchError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let vm = self.get_vm(id).await?;
            let ready = if vm.enable_network {
                vm.ready_at.is_some()
            } else {
                vm.state == VmState::Running
            };
            if ready && vm.state == VmState::Running {
                return Ok(vm);
            }
            if !matches!(vm.state, VmState::Starting | VmState::Running | VmState::Restoring) {
                return Err(OrchError::Conflict {
                    field: None,
                    message: format!(
                        "VM {id} is {} and will not become ready{}",
                        vm.state.as_str(),
                        vm.state_reason.map(|r| format!(": {r}")).unwrap_or_default()
                    ),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(OrchError::Timeout {
                    message: format!(
                        "VM {id} did not accept SSH connections within {}s (state {}); see GET /vms/{id}/logs",
                        timeout.as_secs(),
                        vm.state.as_str()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The tail of the VM's serial console.
    pub async fn logs(&self, id: &str, max_bytes: usize) -> Result<String, OrchError> {
        self.get_vm(id).await?;
        let layout = self.layout(id);
        Ok(crate::sys::process::tail(&layout.serial_log(), max_bytes))
    }

    fn layout(&self, vm_id: &str) -> VmLayout {
        VmLayout::new(&self.config.data_dir, vm_id)
    }

    fn handle(&self, vm_id: &str) -> Option<Arc<dyn VmHandle>> {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(vm_id)
            .cloned()
    }

    fn set_handle(&self, vm_id: &str, handle: Option<Arc<dyn VmHandle>>) {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        match handle {
            Some(handle) => handles.insert(vm_id.to_string(), handle),
            None => handles.remove(vm_id),
        };
    }

    /// Moves a VM to `to`, recording the change. Callers hold the VM's lock.
    fn transition(&self, vm: &mut Vm, to: VmState, reason: Option<String>) -> Result<(), OrchError> {
        let from = vm.state;
        vm.state = to;
        vm.state_reason = reason;
        vm.updated_at = crate::model::now();
        self.store.update_vm(vm)?;
        self.store
            .record_transition(&vm.id, Some(from), to, vm.state_reason.as_deref())?;
        tracing::info!(vm = %vm.id, from = from.as_str(), to = to.as_str(), reason = ?vm.state_reason, "state change");
        self.observers.notify(&VmChange::StateChanged {
            vm_id: &vm.id,
            from,
            to,
        });
        Ok(())
    }

    /// All networked VMs in the database: the desired host network state.
    fn desired_network(&self) -> Result<Vec<(String, crate::model::NetworkIdentity)>, OrchError> {
        Ok(self
            .store
            .list_vms()?
            .into_iter()
            .filter_map(|vm| vm.network.map(|net| (vm.id, net)))
            .collect())
    }
}
