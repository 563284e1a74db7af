//! Waiting before suspending a VM again after a suspension failed.
//!
//! Every attempt pauses the guest while its memory is saved, so a failure
//! that persists (a full disk, an unreachable bucket) must not pause it on
//! every check: the wait doubles after each failure, up to a cap, and a
//! success or the VM leaving the candidates forgets it.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Longest wait between two attempts on one VM.
const MAX_WAIT: Duration = Duration::from_secs(600);

pub struct SuspendBackoff {
    first_wait: Duration,
    /// Per VM: when the next attempt may run, and the wait after that one.
    waits: HashMap<String, (Instant, Duration)>,
}

impl SuspendBackoff {
    /// `first_wait`: the wait after a first failure (the check interval).
    pub fn new(first_wait: Duration) -> Self {
        Self {
            first_wait: first_wait.min(MAX_WAIT),
            waits: HashMap::new(),
        }
    }

    /// How long `vm_id` must still wait, if it must.
    pub fn remaining(&self, vm_id: &str) -> Option<Duration> {
        let (not_before, _) = self.waits.get(vm_id)?;
        let now = Instant::now();
        (now < *not_before).then(|| *not_before - now)
    }

    pub fn failed(&mut self, vm_id: &str) {
        let wait = self.waits.get(vm_id).map_or(self.first_wait, |(_, next)| *next);
        let next = (wait * 2).min(MAX_WAIT);
        self.waits.insert(vm_id.to_string(), (Instant::now() + wait, next));
    }

    pub fn succeeded(&mut self, vm_id: &str) {
        self.waits.remove(vm_id);
    }

    /// Forgets VMs that are no longer candidates (deleted, stopped).
    pub fn retain_only(&mut self, candidates: &[String]) {
        self.waits.retain(|vm_id, _| candidates.contains(vm_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_double_after_each_failure_and_a_success_forgets() {
        let mut backoff = SuspendBackoff::new(Duration::from_secs(10));
        assert_eq!(backoff.remaining("vm-a"), None);
        backoff.failed("vm-a");
        assert_eq!(backoff.remaining("vm-a"), Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(backoff.remaining("vm-a"), None, "due again after the wait");
        backoff.failed("vm-a");
        assert_eq!(backoff.remaining("vm-a"), Some(Duration::from_secs(20)));
        assert_eq!(backoff.remaining("vm-b"), None, "other VMs are not held back");
        backoff.succeeded("vm-a");
        assert_eq!(backoff.remaining("vm-a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_capped_and_gone_vms_are_forgotten() {
        let mut backoff = SuspendBackoff::new(Duration::from_secs(100));
        for _ in 0..10 {
            backoff.failed("vm-a");
        }
        assert_eq!(backoff.remaining("vm-a"), Some(MAX_WAIT));
        backoff.retain_only(&["vm-b".to_string()]);
        assert_eq!(backoff.remaining("vm-a"), None);
    }
}
