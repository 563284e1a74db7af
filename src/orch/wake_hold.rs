//! Housekeeping held back after a wake until the request that woke the VM
//! has its answer: the guest agent's link (its hello and the clock set
//! from the host's) and the removal of the hot copy the VM was restored
//! from. A freshly restored guest runs its first request and the agent's
//! exchange on the same vCPUs, and the host's two cores run the VMM and
//! the daemon; under software emulation, whose translation cache starts
//! empty in the new VMM, the agent's turn delayed the answer by the length
//! of the whole exchange. The request goes first; the rest follows a
//! moment later, and within [`HOLD_LIMIT`] whatever becomes of the request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// The longest housekeeping waits for the answer to the waking request.
pub const HOLD_LIMIT: Duration = Duration::from_secs(1);

/// One VM's hold: `true` once released.
pub(super) type Hold = Arc<watch::Sender<bool>>;

#[derive(Default)]
pub(super) struct WakeHolds {
    /// Whether any hold exists: the proxy reports every request, and most
    /// find nothing to release.
    any: AtomicBool,
    held: Mutex<HashMap<String, Hold>>,
}

impl WakeHolds {
    /// Holds `vm_id`'s housekeeping until [`Self::release`].
    pub(super) fn hold(&self, vm_id: &str) {
        let mut held = self.lock();
        held.entry(vm_id.to_string())
            .or_insert_with(|| Arc::new(watch::channel(false).0));
        self.any.store(true, Ordering::Release);
    }

    /// Lets held housekeeping go ahead (also what has not started waiting).
    pub(super) fn release(&self, vm_id: &str) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut held = self.lock();
        if let Some(hold) = held.remove(vm_id) {
            hold.send_replace(true);
        }
        self.any.store(!held.is_empty(), Ordering::Release);
    }

    /// The hold on `vm_id`, if any, to [`Self::wait`] on.
    pub(super) fn take(&self, vm_id: &str) -> Option<Hold> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.lock().get(vm_id).cloned()
    }

    /// Waits until `hold` (from [`Self::take`]) is released, at most `limit`;
    /// then the hold is over for everyone.
    pub(super) async fn wait(&self, vm_id: &str, hold: Hold, limit: Duration) {
        let mut released = hold.subscribe();
        let _ = tokio::time::timeout(limit, released.wait_for(|released| *released)).await;
        let mut held = self.lock();
        if held.get(vm_id).is_some_and(|current| Arc::ptr_eq(current, &hold)) {
            held.remove(vm_id);
        }
        self.any.store(!held.is_empty(), Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Hold>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_hold_ends_at_its_release_or_its_limit_for_every_waiter_and_only_for_its_vm() {
        let holds = WakeHolds::default();
        assert!(holds.take("vm-a").is_none(), "nothing held");

        holds.hold("vm-a");
        let (first, second) = (holds.take("vm-a").expect("held"), holds.take("vm-a").expect("held"));
        assert!(holds.take("vm-b").is_none());
        holds.release("vm-b");
        let started = Instant::now();
        let released = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            holds.release("vm-a");
        };
        tokio::join!(
            holds.wait("vm-a", first, HOLD_LIMIT),
            holds.wait("vm-a", second, HOLD_LIMIT),
            released
        );
        assert_eq!(started.elapsed(), Duration::from_millis(300), "both waiters released");
        assert!(holds.take("vm-a").is_none(), "a hold ends once released");

        // Released before anyone waits: no wait.
        holds.hold("vm-a");
        let hold = holds.take("vm-a").expect("held");
        holds.release("vm-a");
        let started = Instant::now();
        holds.wait("vm-a", hold, HOLD_LIMIT).await;
        assert_eq!(started.elapsed(), Duration::ZERO);

        // Never released: the limit.
        holds.hold("vm-a");
        let hold = holds.take("vm-a").expect("held");
        let started = Instant::now();
        holds.wait("vm-a", hold, HOLD_LIMIT).await;
        assert_eq!(started.elapsed(), HOLD_LIMIT);
        assert!(holds.take("vm-a").is_none(), "a hold ends at its limit");
        assert!(!holds.any.load(Ordering::Acquire));
    }
}
