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

/// What the in-memory view says about a subdomain: an answer, or a VM to
/// wake first.
enum Lookup {
    Answer(Resolution),
    Wake { vm_id: String, addr: SocketAddr },
}

impl OrchRouteResolver {
    /// From memory: a request never waits for SQLite.
    fn lookup(&self, subdomain: &str) -> Lookup {
        let found = self.orch.view.with_route(subdomain, |route, vm| {
            let vm = vm?;
            let Some(network) = &vm.network else {
                return Some(Lookup::Answer(Resolution::Unavailable {
                    retry_after: None,
                    message: format!("VM {} has no network", vm.id),
                }));
            };
            let addr = SocketAddr::from((network.guest_ip, route.target_port));
            let vm_id = vm.id.clone();
            Some(match vm.state {
                VmState::Running => Lookup::Answer(Resolution::Target { vm_id, addr }),
                VmState::Snapshotted | VmState::Restoring | VmState::Snapshotting if route.auto_wake => {
                    Lookup::Wake { vm_id, addr }
                }
                state => Lookup::Answer(Resolution::Unavailable {
                    retry_after: None,
                    message: format!(
                        "VM {vm_id} is {}{}",
                        state.as_str(),
                        if route.auto_wake {
                            ""
                        } else {
                            " and the route does not wake it"
                        }
                    ),
                }),
            })
        });
        found.flatten().unwrap_or(Lookup::Answer(Resolution::NotFound))
    }
}

#[async_trait]
impl RouteResolver for OrchRouteResolver {
    async fn resolve(&self, subdomain: &str) -> Resolution {
        let (vm_id, addr) = match self.lookup(subdomain) {
            Lookup::Answer(resolution) => return resolution,
            Lookup::Wake { vm_id, addr } => (vm_id, addr),
        };
        // The woken guest answers this request before the daemon's own
        // business with it (see wake_hold).
        self.orch.wake_holds.hold(&vm_id);
        let orch = self.orch.clone();
        let waking = vm_id.clone();
        let woken = self
            .wake
            .wake_until_ready(
                &vm_id,
                addr,
                move || async move { orch.wake_vm(&waking).await.map(|_| ()) },
            )
            .await;
        match woken {
            Ok(()) => Resolution::Target { vm_id, addr },
            Err(error) => {
                // No answer will come through the proxy for this request:
                // nothing to wait for (a hold left behind would delay the
                // VM's next agent link and make every request look it up).
                self.orch.wake_holds.release(&vm_id);
                Resolution::from_wake_error(&error, RETRY_AFTER)
            }
        }
    }

    fn resolve_now(&self, subdomain: &str) -> Option<Resolution> {
        match self.lookup(subdomain) {
            Lookup::Answer(resolution) => Some(resolution),
            Lookup::Wake { .. } => None,
        }
    }

    /// Answers come from the view alone, so they hold while it is unchanged.
    fn answers_version(&self) -> Option<u64> {
        Some(self.orch.view.version())
    }

    /// Activity is counted by the proxy's `ActiveConnections`, which the idle
    /// monitor reads. An answer (or a tunnel) lets a woken VM's held
    /// housekeeping go ahead.
    fn activity(&self, vm_id: &str, event: ActivityEvent) {
        if matches!(event, ActivityEvent::RequestFinished | ActivityEvent::TunnelOpened) {
            self.orch.wake_holds.release(vm_id);
        }
    }
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
