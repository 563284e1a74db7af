//! Orchestration's side of the guest agent: a VM's agent link lives as long
//! as its VMM process; the agent's hello makes the VM ready (exact, and it
//! works without a network) and sets the guest clock from the host's (a
//! restored guest's clock is as old as its snapshot).

use std::sync::Arc;
use std::time::Duration;

use crate::agent::{files, AgentError, Conversation};
use crate::model::Vm;
use crate::store::EventKind;

use super::wake_hold::HOLD_LIMIT;
use super::Orchestrator;

/// How long a request waits for a guest agent that has not connected yet
/// (a guest that is still booting), unless the VM has been ready this long
/// already without one (an image without the agent).
const AGENT_WAIT: Duration = Duration::from_secs(15);

impl Orchestrator {
    /// Starts meeting the agent of the VM whose VMM `pid` now runs.
    pub(super) async fn attach_agent(self: &Arc<Self>, vm: &Vm, pid: u32) {
        let spec = match self.launch_spec_of(vm).await {
            Ok(spec) => spec,
            Err(error) => {
                tracing::warn!(vm = %vm.id, %error, "no guest agent link: the VM's launch spec is unreadable");
                return;
            }
        };
        let endpoint = self.hypervisor.agent_endpoint(&spec);
        let orch = Arc::downgrade(self);
        let vm_id = vm.id.clone();
        let on_hello = Arc::new(move |conversation: Arc<Conversation>| {
            let (orch, vm_id) = (orch.clone(), vm_id.clone());
            tokio::spawn(async move {
                if let Some(orch) = orch.upgrade() {
                    orch.on_agent_hello(&vm_id, pid, conversation).await;
                }
            });
        });
        let Some(hold) = self.wake_holds.take(&vm.id) else {
            self.agents.attach(&vm.id, endpoint, on_hello);
            return;
        };
        let orch = Arc::clone(self);
        let vm_id = vm.id.clone();
        self.operations.spawn_follow_up(async move {
            orch.wake_holds.wait(&vm_id, hold, HOLD_LIMIT).await;
            // Only for the VMM it was meant for: not one stopped or
            // snapshotted meanwhile.
            let _guard = orch.locks.lock(&vm_id).await;
            if orch.is_current(&vm_id, pid) {
                orch.agents.attach(&vm_id, endpoint, on_hello);
            }
        });
    }

    async fn on_agent_hello(&self, vm_id: &str, pid: u32, conversation: Arc<Conversation>) {
        let clock = match files::set_clock(&conversation).await {
            Ok(offset_ms) => format!(
                "guest clock set from the host (it was {} off)",
                describe_offset(offset_ms)
            ),
            Err(error) => format!("setting the guest clock failed: {error}"),
        };
        let mut detail = format!("guest agent {} connected; {clock}", conversation.hello().version);
        // A clone takes its own identity before anything calls it ready.
        match self.apply_pending_identity(vm_id, &conversation).await {
            Ok(Some(identity)) => detail = format!("{detail}; {identity}"),
            Ok(None) => {}
            Err(()) => return,
        }
        // The clock first, so a guest reported ready already has the host's
        // time. mark_ready tells observers (and `wait=ready`) when it changes
        // the VM; the agent's own status is read live from its link.
        self.mark_ready(vm_id, pid, "guest agent connected").await;
        let state = self.view.vm(vm_id).map(|vm| vm.state);
        if let Some(state) = state {
            let id = vm_id.to_string();
            let recorded = self
                .store
                .run(move |store| store.record_vm_event(&id, EventKind::Agent, state, Some(&detail)));
            if let Err(error) = recorded.await {
                tracing::warn!(vm = %vm_id, %error, "recording the agent's hello failed");
            }
        }
    }

    /// `vm` with its live agent status filled in.
    pub fn with_agent(&self, mut vm: Vm) -> Vm {
        vm.agent = self.agents.status(&vm.id);
        vm
    }

    /// The running VM's agent conversation, waiting a little for one that
    /// is still coming (see [`AGENT_WAIT`]).
    pub async fn agent_conversation(&self, vm: &Vm) -> Result<Arc<Conversation>, AgentError> {
        let ready_for = vm
            .ready_at
            .map(|ready| (crate::model::now() - ready).to_std().unwrap_or_default())
            .unwrap_or_default();
        let wait = AGENT_WAIT.saturating_sub(ready_for);
        self.agents.conversation(&vm.id, wait).await.ok_or_else(|| {
            AgentError::Unavailable(format!(
                "the guest agent of VM {} is not connected: the image may not include hatch-agent, \
                 or the guest has not started it (see GET /vms/{}/logs)",
                vm.id, vm.id
            ))
        })
    }
}

fn describe_offset(offset_ms: i128) -> String {
    let direction = if offset_ms >= 0 { "behind" } else { "ahead" };
    let ms = offset_ms.unsigned_abs();
    if ms >= 1000 {
        format!("{:.1} s {direction}", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms {direction}")
    }
}
