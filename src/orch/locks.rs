//! One lock per VM: every operation on a VM (API request, supervisor,
//! readiness probe, reconciler) holds it while it reads and writes the VM.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub struct VmLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl VmLocks {
    pub async fn lock(&self, vm_id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(vm_id.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// The VM's lock if nobody holds it now.
    pub fn try_lock(&self, vm_id: &str) -> Option<OwnedMutexGuard<()>> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(vm_id.to_string()).or_default().clone()
        };
        lock.try_lock_owned().ok()
    }

    /// Drops the lock entry of a deleted VM (waiters keep their Arc).
    pub fn forget(&self, vm_id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.remove(vm_id);
    }
}
