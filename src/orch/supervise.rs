//! Watching VMM processes: an exit the daemon did not ask for moves the VM to
//! `stopped` (clean guest shutdown) or `error` (crash) with the reason, and a
//! readiness probe records when a networked guest first accepts SSH.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::model::Vm;
use crate::vmm::{ExitReport, VmHandle};

use super::transitions::Event;
use super::Orchestrator;

/// The guest is seen ready within this much of its SSH server starting.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);
/// A guest on the bridge answers a SYN in well under this once its network
/// is up; before that (no ARP answer yet) an attempt would otherwise hang
/// for seconds and delay the next one.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

impl Orchestrator {
    /// Registers a live VMM process and starts its supervisor (and, for a
    /// networked VM not yet ready, its readiness probe).
    pub(super) async fn watch_process(self: &Arc<Self>, vm: &Vm, handle: Arc<dyn VmHandle>) {
        self.set_handle(&vm.id, Some(handle.clone()));
        let pid = handle.pid();
        self.attach_agent(vm, pid).await;
        let orch = Arc::downgrade(self);
        let vm_id = vm.id.clone();
        tokio::spawn(async move {
            let report = handle.wait_exit().await;
            if let Some(orch) = orch.upgrade() {
                orch.on_process_exit(&vm_id, pid, report).await;
            }
        });
        if let (Some(net), None) = (&vm.network, vm.ready_at) {
            self.probe_readiness(vm.id.clone(), pid, net.guest_ip);
        }
    }

    /// Whether `pid` is still the VM's current VMM process.
    pub(super) fn is_current(&self, vm_id: &str, pid: u32) -> bool {
        self.handle(vm_id).is_some_and(|handle| handle.pid() == pid)
    }

    async fn on_process_exit(self: &Arc<Self>, vm_id: &str, pid: u32, report: ExitReport) {
        let _guard = self.locks.lock(vm_id).await;
        // A stop, delete or snapshot that ended the process already settled the state.
        if !self.is_current(vm_id, pid) {
            return;
        }
        self.set_handle(vm_id, None);
        let Ok(Some(mut vm)) = self.stored_vm(vm_id).await else {
            return;
        };
        vm.pid = None;
        vm.ready_at = None;
        let recorded = if report.is_clean() {
            self.apply(&mut vm, Event::GuestShutdown, Some("the guest shut down".into()))
                .await
                .map(drop)
        } else {
            self.record_crash(vm, describe_crash(&report)).await
        };
        if let Err(error) = recorded {
            tracing::error!(vm = %vm_id, %error, "recording the VMM's exit failed");
        }
    }

    fn probe_readiness(self: &Arc<Self>, vm_id: String, pid: u32, guest_ip: Ipv4Addr) {
        let orch = Arc::downgrade(self);
        tokio::spawn(async move {
            let target = SocketAddr::from((guest_ip, 22));
            loop {
                let Some(orch) = orch.upgrade() else { return };
                // Gone, or already ready by its agent's hello: nothing to probe for.
                if !orch.is_current(&vm_id, pid) || orch.view.vm(&vm_id).is_some_and(|vm| vm.ready_at.is_some()) {
                    return;
                }
                let connected =
                    tokio::time::timeout(PROBE_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await;
                if matches!(connected, Ok(Ok(_))) {
                    orch.mark_ready(&vm_id, pid, "guest accepts SSH").await;
                    return;
                }
                drop(orch);
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        });
    }

    /// Records the guest's first sign of readiness since its VMM started
    /// (SSH accepting, or the agent's hello; the first one counts).
    pub(super) async fn mark_ready(&self, vm_id: &str, pid: u32, how: &str) {
        let _guard = self.locks.lock(vm_id).await;
        if !self.is_current(vm_id, pid) {
            return;
        }
        let Ok(Some(mut vm)) = self.stored_vm(vm_id).await else {
            return;
        };
        if vm.ready_at.is_some() {
            return;
        }
        vm.ready_at = Some(crate::model::now());
        vm.updated_at = crate::model::now();
        let how_stored = how.to_string();
        let recorded = self
            .record(move |store, observers| {
                store.update_vm_with_event(&vm, crate::store::EventKind::Ready, Some(&how_stored))?;
                // Wakes `wait=ready`.
                observers.notify(&super::VmChange::Updated { vm_id: &vm.id });
                Ok(())
            })
            .await;
        match recorded {
            Ok(()) => tracing::info!(vm = %vm_id, how, "guest ready"),
            Err(error) => tracing::error!(vm = %vm_id, %error, "recording readiness failed"),
        }
    }
}

fn describe_crash(report: &ExitReport) -> String {
    let how = match (report.code, report.signal) {
        (_, Some(signal)) => format!("killed by signal {signal}"),
        (Some(code), None) => format!("exited with code {code}"),
        (None, None) => "exited (code unknown: the process was adopted after a daemon restart)".to_string(),
    };
    let tail: Vec<&str> = report.serial_tail.lines().rev().take(5).collect();
    if tail.is_empty() {
        format!("the VMM {how}")
    } else {
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("the VMM {how}; serial console ends with: {}", tail.join(" | "))
    }
}
