//! Every running VM's agent link, by VM id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::conversation::Conversation;
use super::link::{AgentLink, OnHello};
use crate::model::AgentStatus;
use crate::vmm::AgentEndpoint;

#[derive(Default)]
pub struct Agents {
    links: Mutex<HashMap<String, Arc<AgentLink>>>,
}

impl Agents {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AgentLink>>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts meeting the VM's agent at `endpoint` (replacing an earlier link:
    /// a new VMM process has a new endpoint).
    pub fn attach(&self, vm_id: &str, endpoint: AgentEndpoint, on_hello: OnHello) {
        let link = Arc::new(AgentLink::start(vm_id.to_string(), endpoint, on_hello));
        self.lock().insert(vm_id.to_string(), link);
    }

    /// Stops meeting the VM's agent (its VMM is gone).
    pub fn detach(&self, vm_id: &str) {
        self.lock().remove(vm_id);
    }

    fn link(&self, vm_id: &str) -> Option<Arc<AgentLink>> {
        self.lock().get(vm_id).cloned()
    }

    pub fn status(&self, vm_id: &str) -> AgentStatus {
        match self.link(vm_id).and_then(|link| link.current()) {
            Some(conversation) => AgentStatus {
                connected: true,
                version: Some(conversation.hello().version.clone()),
            },
            None => AgentStatus::default(),
        }
    }

    /// The VM's live conversation, waiting up to `wait` for one.
    pub async fn conversation(&self, vm_id: &str, wait: Duration) -> Option<Arc<Conversation>> {
        let link = self.link(vm_id)?;
        link.wait(wait).await
    }
}
