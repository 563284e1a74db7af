//! Telling the rest of the daemon about VM state changes as they are
//! recorded, so that nothing has to poll the store: e.g. the proxy drops its
//! keep-alive connections to a VM the moment it stops serving.
//!
//! Observers are called synchronously, under the VM's lock, right after the
//! change is stored: they must be quick and must not call back into the
//! orchestrator.

use std::sync::{Arc, RwLock};

use crate::model::VmState;

use super::Orchestrator;

/// Something that happened to a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmChange<'a> {
    /// The VM moved from one state to another (already stored).
    StateChanged { vm_id: &'a str, from: VmState, to: VmState },
    /// The VM and everything it had are gone.
    Deleted { vm_id: &'a str },
    /// A route to the VM was added or removed.
    RoutesChanged { vm_id: &'a str },
    /// The VM was recorded, or something other than its state changed
    /// (readiness, idle status, owner).
    Updated { vm_id: &'a str },
}

impl VmChange<'_> {
    pub fn vm_id(&self) -> &str {
        match self {
            VmChange::StateChanged { vm_id, .. }
            | VmChange::Deleted { vm_id }
            | VmChange::RoutesChanged { vm_id }
            | VmChange::Updated { vm_id } => vm_id,
        }
    }

    /// Whether the VM's guest can answer network connections after this
    /// event (only a running VM can), or `None` when the event says nothing
    /// about it.
    pub fn serving_after(&self) -> Option<bool> {
        match self {
            VmChange::StateChanged { to, .. } => Some(*to == VmState::Running),
            VmChange::Deleted { .. } => Some(false),
            VmChange::RoutesChanged { .. } | VmChange::Updated { .. } => None,
        }
    }
}

/// Implemented by whoever wants to hear about [`VmChange`]s.
pub trait VmObserver: Send + Sync {
    fn on_vm_change(&self, event: &VmChange<'_>);
}

/// The observers an orchestrator tells about its VMs.
#[derive(Default)]
pub(super) struct Observers(RwLock<Vec<Arc<dyn VmObserver>>>);

impl Observers {
    pub(super) fn add(&self, observer: Arc<dyn VmObserver>) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).push(observer);
    }

    pub(super) fn notify(&self, event: &VmChange<'_>) {
        for observer in self.0.read().unwrap_or_else(|e| e.into_inner()).iter() {
            observer.on_vm_change(event);
        }
    }
}

impl Orchestrator {
    /// Registers `observer` for every later state change and deletion.
    pub fn add_observer(&self, observer: Arc<dyn VmObserver>) {
        self.observers.add(observer);
    }

    /// For a VM (or its routes) written to the store by something other
    /// than the orchestrator (a tool, a test): tells every observer, the
    /// in-memory view among them, to read it again. The view reads SQLite
    /// here, on the caller's thread: the orchestrator's own writes tell the
    /// observers on the blocking thread they write on.
    pub fn vm_written_elsewhere(&self, vm_id: &str) {
        self.observers.notify(&VmChange::Updated { vm_id });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct FakeRecorder(Mutex<Vec<(String, bool)>>);

    impl VmObserver for FakeRecorder {
        fn on_vm_change(&self, event: &VmChange<'_>) {
            self.0
                .lock()
                .unwrap()
                .push((event.vm_id().to_string(), event.serving_after().unwrap_or(true)));
        }
    }

    #[test]
    fn every_observer_hears_every_event_in_order() {
        let observers = Observers::default();
        let (first, second) = (Arc::new(FakeRecorder::default()), Arc::new(FakeRecorder::default()));
        observers.add(first.clone());
        observers.add(second.clone());
        observers.notify(&VmChange::StateChanged {
            vm_id: "vm-a",
            from: VmState::Restoring,
            to: VmState::Running,
        });
        observers.notify(&VmChange::StateChanged {
            vm_id: "vm-a",
            from: VmState::Running,
            to: VmState::Snapshotting,
        });
        observers.notify(&VmChange::Deleted { vm_id: "vm-b" });
        let expected = vec![
            ("vm-a".to_string(), true),
            ("vm-a".to_string(), false),
            ("vm-b".to_string(), false),
        ];
        assert_eq!(*first.0.lock().unwrap(), expected);
        assert_eq!(*second.0.lock().unwrap(), expected);
    }

    #[test]
    fn only_running_serves() {
        for to in VmState::ALL {
            let event = VmChange::StateChanged {
                vm_id: "vm",
                from: VmState::Running,
                to,
            };
            assert_eq!(event.serving_after(), Some(to == VmState::Running), "{to:?}");
        }
        assert_eq!(VmChange::Deleted { vm_id: "vm" }.serving_after(), Some(false));
        assert_eq!(VmChange::RoutesChanged { vm_id: "vm" }.serving_after(), None);
    }
}
