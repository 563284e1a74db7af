//! Orchestration: one controller per VM that owns every change of it.
//!
//! - Every operation (create, start, stop, snapshot, restore, delete) runs
//!   as a server-side task ([`operations`]) that no client disconnect or
//!   timeout can cancel; shutdown waits for them.
//! - It takes the VM's lock ([`locks::VmLocks`]), asks the state machine
//!   ([`transitions::decide`]) and records its intent (a transitional state)
//!   in the store before it touches the host; so after a crash, the
//!   reconciler finds what was under way and finishes or undoes it.
//! - The one write path of a VM's state is [`Orchestrator::apply`]: the row
//!   and its event in one transaction, then observers are told.
//! - A reconciler ([`reconcile`]) runs at start-up, every
//!   `HATCH_RECONCILE_INTERVAL` and after any failed operation, and makes
//!   the host match the database again.
//!
//! Long-running tasks (one supervisor per VMM process, one readiness probe
//! per boot, the reconciler) act through the same locks.

mod admission;
mod agent;
mod console;
mod create;
mod durability;
mod error;
mod expiry;
mod fork;
mod hot_copy;
mod identity;
mod idle;
mod layout;
mod ledger;
mod lifecycle;
mod locks;
mod observe;
mod operations;
mod pool;
mod proxy;
mod reconcile;
mod routes;
mod snapshot;
mod snapshot_disk;
mod stream_restore;
mod supervise;
pub mod transitions;
mod view;
mod wake_hold;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::metrics::{Metrics, Sample, VmUsage};
use crate::model::{Vm, VmState};
use crate::net::{HostNetwork, Network};
use crate::snapshot::SnapshotStore;
use crate::store::Store;
use crate::vmm::{Hypervisor, VmHandle};
use transitions::{Decision, Event};

/// What [`Orchestrator::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Entered,
    Removed,
    /// The request was already satisfied; nothing was written.
    Already,
}

pub use create::CreateVm;
pub use error::OrchError;
pub use fork::{CloneSettings, MAX_FORK_COUNT};
pub use hot_copy::{hot_checksums, restore_hot, HotDamage};
pub use idle::OrchIdleTarget;
pub use layout::VmLayout;
pub use observe::{VmChange, VmObserver};
pub use operations::Operation;
pub use pool::PoolStatus;
pub use proxy::OrchRouteResolver;
pub use routes::CreateRoute;
pub use snapshot::UnpackedSnapshot;
pub use stream_restore::restore_streamed;

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
    observers: Arc<observe::Observers>,
    /// Operations in flight, waited for at shutdown.
    operations: operations::Operations,
    /// Held shared by every operation and exclusively by the reconciler, so
    /// the reconciler sees no half-made VM and no operation sees a repair
    /// half-done.
    host_ops: tokio::sync::RwLock<()>,
    /// Wakes the reconciler early (after a failed operation).
    reconcile_now: tokio::sync::Notify,
    /// Consecutive unasked VMM deaths per VM, for restart back-off.
    crashes: Mutex<HashMap<String, reconcile::CrashCount>>,
    /// How many bytes have been cut from each console log's head.
    console_cuts: console::Cuts,
    /// The daemon's metrics (`GET /metrics`), recorded here and by the API and proxy.
    metrics: Arc<Metrics>,
    /// Snapshots being made durable in the background.
    durability: Arc<durability::Passes>,
    /// Every VM and route in memory, for reads that must not wait on SQLite.
    view: Arc<view::View>,
    /// The guest agent link of every VM whose VMM runs (the view shows
    /// each one's status).
    agents: Arc<crate::agent::Agents>,
    /// Housekeeping that waits for the answer to the request that woke its VM.
    wake_holds: wake_hold::WakeHolds,
    /// Traffic and agent calls per VM, as the idle monitor sees them.
    activity: Arc<crate::proxy::ActiveConnections>,
    /// New identities waiting for their clones' agents.
    identities: identity::PendingIdentities,
    /// The warm pools' filler.
    pools: pool::Pools,
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
        let agents = Arc::new(crate::agent::Agents::default());
        let view = Arc::new(view::View::load(store.clone(), agents.clone())?);
        let shown = Arc::downgrade(&view);
        agents.on_status_change(Arc::new(move |vm_id: &str| {
            if let Some(view) = shown.upgrade() {
                view.agent_changed(vm_id);
            }
        }));
        let observers = Arc::new(observe::Observers::default());
        // First, so every other observer already sees the change in the view.
        observers.add(view.clone());
        let orch = Arc::new(Self {
            store: store.off_workers(),
            config,
            hypervisor,
            network,
            snapshots,
            locks: locks::VmLocks::default(),
            handles: Mutex::new(HashMap::new()),
            allocation: tokio::sync::Mutex::new(()),
            observers,
            operations: operations::Operations::default(),
            host_ops: tokio::sync::RwLock::new(()),
            reconcile_now: tokio::sync::Notify::new(),
            crashes: Mutex::new(HashMap::new()),
            console_cuts: console::Cuts::default(),
            metrics: Arc::new(Metrics::new()),
            durability: Arc::default(),
            view,
            agents,
            wake_holds: Default::default(),
            activity: crate::proxy::ActiveConnections::new(),
            identities: Default::default(),
            pools: Default::default(),
        });
        orch.reconcile_at_start().await?;
        Ok(orch)
    }

    /// Refuses new operations, waits up to `timeout` for those in flight,
    /// then stops background work (dnsmasq supervision). VMs keep running;
    /// the next start adopts them.
    pub async fn shutdown(&self, timeout: Duration) {
        self.operations.drain(timeout).await;
        self.network.shutdown().await;
    }

    /// The daemon's one activity registry (proxied traffic, exec and file calls).
    pub fn activity(&self) -> Arc<crate::proxy::ActiveConnections> {
        self.activity.clone()
    }

    /// The daemon's one metrics registry.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// What `GET /metrics` reads at scrape time: VMs by state, each live
    /// VM's usage (from the VMM processes this daemon supervises) and the
    /// bytes snapshots hold.
    pub async fn metrics_sample(&self) -> Result<Sample, OrchError> {
        let live: Vec<(String, u32)> = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, handle)| (id.clone(), handle.pid()))
            .collect();
        let sample = self.store.run(move |store| -> Result<Sample, OrchError> {
            let vms = store.list_vms()?;
            let mut vms_by_state: Vec<(VmState, i64)> = Vec::new();
            for vm in &vms {
                match vms_by_state.iter_mut().find(|(s, _)| *s == vm.state) {
                    Some((_, n)) => *n += 1,
                    None => vms_by_state.push((vm.state, 1)),
                }
            }
            let net_dev = crate::metrics::read_net_dev();
            let usage: Vec<VmUsage> = live
                .iter()
                .filter_map(|(id, pid)| {
                    let vm = vms.iter().find(|vm| &vm.id == id)?;
                    let tap = vm.network.as_ref().map(|n| n.tap_name.as_str());
                    Some(crate::metrics::read_usage(id, *pid, tap, &net_dev))
                })
                .collect();
            Ok(Sample {
                vms_by_state,
                vms: usage,
                snapshot_bytes: store.snapshot_bytes_stored()?,
            })
        });
        sample.await
    }

    pub fn hypervisor_kind(&self) -> crate::vmm::HypervisorKind {
        self.hypervisor.kind()
    }

    /// The VM as stored, read off the async workers.
    pub async fn get_vm(&self, id: &str) -> Result<Vm, OrchError> {
        self.stored_vm(id)
            .await?
            .map(|vm| self.with_agent(vm))
            .ok_or_else(|| OrchError::vm_not_found(id))
    }

    /// The VM as the in-memory view holds it (agent status not filled in):
    /// no SQLite read, and current once any change of the VM has returned.
    pub fn viewed_vm(&self, id: &str) -> Option<Vm> {
        self.view.vm(id)
    }

    /// Every VM but warm pools', oldest first, from memory.
    pub async fn list_vms(&self) -> Result<Vec<Vm>, OrchError> {
        Ok(self
            .view
            .vms(view::Listing::Listed)
            .into_iter()
            .map(|vm| self.with_agent(vm))
            .collect())
    }

    /// `GET /vms`'s answer, a JSON array, from memory: every VM but warm
    /// pools' (`owner` `None`) or the VMs of one API key, oldest first.
    pub fn list_vms_json(&self, owner: Option<&str>) -> Result<Vec<u8>, OrchError> {
        let listing = match owner {
            None => view::Listing::Listed,
            Some(owner) => view::Listing::Owner(owner),
        };
        self.view
            .vms_json(listing)
            .map_err(|e| OrchError::Internal(format!("rendering the VM list: {e}")))
    }

    /// Waits until the VM's `ready_at` is set (its agent said hello, or the
    /// guest accepted TCP on port 22).
    /// A VM without networking is ready once it runs. Wakes on each change
    /// of a VM (the readiness probe's among them), never on a timer.
    pub async fn wait_ready(&self, id: &str, timeout: Duration) -> Result<Vm, OrchError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.view.subscribe();
        loop {
            changes.borrow_and_update();
            let vm = self.view.vm(id).ok_or_else(|| OrchError::vm_not_found(id))?;
            let ready = if vm.enable_network {
                vm.ready_at.is_some()
            } else {
                vm.state == VmState::Running
            };
            if ready && vm.state == VmState::Running {
                return Ok(vm);
            }
            if !matches!(
                vm.state,
                VmState::Creating | VmState::Starting | VmState::Running | VmState::Restoring
            ) {
                return Err(OrchError::InvalidState {
                    state: vm.state,
                    message: format!(
                        "VM {id} is {} and will not become ready{}",
                        vm.state.as_str(),
                        vm.state_reason.map(|r| format!(": {r}")).unwrap_or_default()
                    ),
                });
            }
            let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(OrchError::Timeout {
                    message: format!(
                        "VM {id} did not become ready (agent hello or SSH) within {}s (state {}); see GET /vms/{id}/logs",
                        timeout.as_secs(),
                        vm.state.as_str()
                    ),
                });
            }
        }
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
            None => {
                self.agents.detach(vm_id);
                handles.remove(vm_id)
            }
        };
    }

    /// The one write path of a VM's state: asks the state machine what
    /// `event` does to `vm`, and records the outcome (the whole row, with
    /// whatever else the caller changed on `vm`, and the event, in one
    /// transaction) before the observers are told. Callers hold the VM's lock.
    ///
    /// A request the table refuses is `InvalidState`; a refused outcome is a
    /// bug in the caller and reported as internal.
    async fn apply(&self, vm: &mut Vm, event: Event, reason: Option<String>) -> Result<Applied, OrchError> {
        let from = vm.state;
        match transitions::decide(from, event) {
            Decision::Already => Ok(Applied::Already),
            Decision::Refuse if event.is_request() => Err(OrchError::invalid_state(&vm.id, from, event.as_str())),
            Decision::Refuse => Err(OrchError::Internal(format!(
                "VM {}: outcome {} is not valid while {}",
                vm.id,
                event.as_str(),
                from.as_str()
            ))),
            Decision::Remove => {
                let vm_id = vm.id.clone();
                self.record(move |store, observers| {
                    store.delete_vm(&vm_id)?;
                    tracing::info!(vm = %vm_id, from = from.as_str(), event = event.as_str(), "removed");
                    observers.notify(&VmChange::Deleted { vm_id: &vm_id });
                    Ok(())
                })
                .await?;
                self.locks.forget(&vm.id);
                Ok(Applied::Removed)
            }
            Decision::Enter(to) => {
                vm.state = to;
                vm.state_reason = reason;
                vm.updated_at = crate::model::now();
                let row = vm.clone();
                self.record(move |store, observers| {
                    if !store.update_vm_with_transition(&row, Some(from), row.state_reason.as_deref())? {
                        return Err(OrchError::vm_not_found(&row.id));
                    }
                    tracing::info!(vm = %row.id, from = from.as_str(), to = to.as_str(), event = event.as_str(), reason = ?row.state_reason, "state change");
                    observers.notify(&VmChange::StateChanged {
                        vm_id: &row.id,
                        from,
                        to,
                    });
                    Ok(())
                })
                .await?;
                Ok(Applied::Entered)
            }
        }
    }

    /// [`Self::apply`] of an outcome to several VMs at once, in one
    /// transaction (e.g. the clones of a fork become `running` together).
    /// Every one must enter a state; callers hold every VM's lock.
    async fn apply_together(&self, vms: &mut [Vm], event: Event, reason: &str) -> Result<(), OrchError> {
        let mut rows = Vec::new();
        for vm in vms.iter_mut() {
            let from = vm.state;
            let Decision::Enter(to) = transitions::decide(from, event) else {
                return Err(OrchError::Internal(format!(
                    "VM {}: outcome {} is not valid while {}",
                    vm.id,
                    event.as_str(),
                    from.as_str()
                )));
            };
            vm.state = to;
            vm.state_reason = Some(reason.to_string());
            vm.updated_at = crate::model::now();
            rows.push((vm.clone(), from));
        }
        let reason = reason.to_string();
        self.record(move |store, observers| {
            let changes: Vec<(&Vm, VmState)> = rows.iter().map(|(vm, from)| (vm, *from)).collect();
            if !store.update_vms_with_transitions(&changes, Some(&reason))? {
                return Err(OrchError::Internal("a VM changed together with others is gone".into()));
            }
            for (vm, from) in &rows {
                tracing::info!(vm = %vm.id, from = from.as_str(), to = vm.state.as_str(), event = event.as_str(), reason, "state change");
                observers.notify(&VmChange::StateChanged {
                    vm_id: &vm.id,
                    from: *from,
                    to: vm.state,
                });
            }
            Ok(())
        })
        .await
    }

    /// Runs `write` (a change stored, then the observers told: a state
    /// change in one transaction, or any other write to a VM or its routes)
    /// on a blocking thread, so no SQLite write or reread
    /// holds a runtime worker. Both happen there together: a caller that
    /// goes away while it waits cannot leave a stored change untold.
    async fn record<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Store, &observe::Observers) -> Result<T, OrchError> + Send + 'static,
    ) -> Result<T, OrchError> {
        let observers = self.observers.clone();
        self.store.run(move |store| write(store, &observers)).await
    }

    /// The VM's row as stored (the agent status not filled in), read on a
    /// blocking thread: for callers that hold its lock and act on the row.
    async fn stored_vm(&self, id: &str) -> Result<Option<Vm>, crate::store::StoreError> {
        let id = id.to_string();
        self.store.run(move |store| store.get_vm(&id)).await
    }

    /// The snapshot's record, read on a blocking thread.
    async fn stored_snapshot(&self, id: &str) -> Result<Option<crate::model::Snapshot>, crate::store::StoreError> {
        let id = id.to_string();
        self.store.run(move |store| store.get_snapshot(&id)).await
    }

    /// The image's record, read on a blocking thread.
    async fn stored_image(&self, id: &str) -> Result<Option<crate::model::Image>, crate::store::StoreError> {
        let id = id.to_string();
        self.store.run(move |store| store.get_image(&id)).await
    }

    /// All networked VMs that should have host network state: every one
    /// but those being deleted.
    async fn desired_network(&self) -> Result<Vec<(String, crate::model::NetworkIdentity)>, OrchError> {
        Ok(self
            .store
            .run(|store| store.list_vms())
            .await?
            .into_iter()
            .filter(|vm| vm.state != VmState::Deleting)
            .filter_map(|vm| vm.network.map(|net| (vm.id, net)))
            .collect())
    }
}
