//! Every running VM's agent link, by VM id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::conversation::Conversation;
use super::link::{AgentLink, OnChange, OnHello};
use crate::model::AgentStatus;
use crate::vmm::AgentEndpoint;

/// Told the id of a VM whose agent status may have changed.
pub type OnStatusChange = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
pub struct Agents {
    links: Mutex<HashMap<String, Arc<AgentLink>>>,
    /// Told after every connect and disconnect (and attach and detach),
    /// never while `links` is locked.
    on_status_change: OnceLock<OnStatusChange>,
}

impl Agents {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AgentLink>>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Has `hook` told about every later change of a VM's agent status (the
    /// first hook set stays).
    pub fn on_status_change(&self, hook: OnStatusChange) {
        let _ = self.on_status_change.set(hook);
    }

    fn status_changed(&self, vm_id: &str) {
        if let Some(hook) = self.on_status_change.get() {
            hook(vm_id);
        }
    }

    /// Starts meeting the VM's agent at `endpoint` (replacing an earlier link:
    /// a new VMM process has a new endpoint).
    pub fn attach(&self, vm_id: &str, endpoint: AgentEndpoint, on_hello: OnHello) {
        let on_change = match self.on_status_change.get() {
            Some(hook) => {
                let (hook, vm_id) = (hook.clone(), vm_id.to_string());
                Arc::new(move || hook(&vm_id)) as OnChange
            }
            None => Arc::new(|| {}),
        };
        let link = Arc::new(AgentLink::start_reporting(
            vm_id.to_string(),
            endpoint,
            on_hello,
            on_change,
        ));
        let replaced = self.lock().insert(vm_id.to_string(), link);
        // Dropped unlocked: dropping a link closes its conversation.
        drop(replaced);
        self.status_changed(vm_id);
    }

    /// Stops meeting the VM's agent (its VMM is gone).
    pub fn detach(&self, vm_id: &str) {
        let removed = self.lock().remove(vm_id);
        if removed.is_some() {
            drop(removed);
            self.status_changed(vm_id);
        }
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
