//! The proxy's view of routes: which VM and port a subdomain goes to, and
//! waking a snapshotted VM (one restore however many requests wait; the
//! request is held until the guest's port accepts, never answered 502).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::model::VmState;
use crate::proxy::{ActivityEvent, Resolution, RouteResolver, UpstreamConnections, WakeCoordinator};

use super::{Orchestrator, VmChange, VmObserver};

/// What clients are told to wait before retrying after a failed wake.
const RETRY_AFTER: Duration = Duration::from_secs(5);

pub struct OrchRouteResolver {
    orch: Arc<Orchestrator>,
    wake: WakeCoordinator,
}

impl OrchRouteResolver {
    pub fn new(orch: Arc<Orchestrator>, wake_timeout: Duration) -> Self {
        Self {
            orch,
            wake: WakeCoordinator::new(wake_timeout),
        }
    }
}

#[async_trait]
impl RouteResolver for OrchRouteResolver {
    async fn resolve(&self, subdomain: &str) -> Resolution {
        // From memory: a request never waits for SQLite.
        let view = &self.orch.view;
        let Some(route) = view.route(subdomain) else {
            return Resolution::NotFound;
        };
        let Some(vm) = view.vm(&route.vm_id) else {
            return Resolution::NotFound;
        };
        let Some(network) = &vm.network else {
            return Resolution::Unavailable {
                retry_after: None,
                message: format!("VM {} has no network", vm.id),
            };
        };
        let addr = SocketAddr::from((network.guest_ip, route.target_port));
        match vm.state {
            VmState::Running => Resolution::Target { vm_id: vm.id, addr },
            VmState::Snapshotted | VmState::Restoring | VmState::Snapshotting if route.auto_wake => {
                let orch = self.orch.clone();
                let vm_id = vm.id.clone();
                let woken = self
                    .wake
                    .wake_until_ready(
                        &vm.id,
                        addr,
                        move || async move { orch.wake_vm(&vm_id).await.map(|_| ()) },
                    )
                    .await;
                match woken {
                    Ok(()) => Resolution::Target { vm_id: vm.id, addr },
                    Err(error) => Resolution::from_wake_error(&error, RETRY_AFTER),
                }
            }
            state => Resolution::Unavailable {
                retry_after: None,
                message: format!(
                    "VM {} is {}{}",
                    vm.id,
                    state.as_str(),
                    if route.auto_wake {
                        ""
                    } else {
                        " and the route does not wake it"
                    }
                ),
            },
        }
    }

    /// Activity is counted by the proxy's `ActiveConnections`, which the idle
    /// monitor reads; nothing more to do per event.
    fn activity(&self, _vm_id: &str, _event: ActivityEvent) {}
}

/// The proxy's pooled connections to a VM go stale once it stops serving
/// (snapshot, stop, crash, delete): the guest behind them is gone or will
/// come back without them, and its address may go to another VM. Dropping
/// them as the state changes means the next request opens a fresh one.
impl VmObserver for UpstreamConnections {
    fn on_vm_change(&self, event: &VmChange<'_>) {
        if event.serving_after() == Some(false) {
            self.forget_vm(event.vm_id());
        }
    }
}
