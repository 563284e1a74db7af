//! The loop that applies [`decide_expiry`] to every VM with a TTL and
//! [`decide`] to every candidate VM periodically.
//!
//! The monitor only proposes: a suspension goes through
//! [`IdleTarget::suspend_if_still_idle`] and a deletion through
//! [`IdleTarget::expire_if_due`], which orchestration implements by taking
//! the VM's lock and deciding again with fresh inputs, so a request or SSH
//! login that arrives meanwhile wins.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::backoff::SuspendBackoff;
use super::decide::{decide, decide_expiry, ExpiryDecision, ExpiryInputs, IdleDecision, IdleInputs};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdleError {
    #[error("suspending {vm_id} failed: {message}")]
    SuspendFailed { vm_id: String, message: String },
    #[error("deleting {vm_id} at the end of its TTL failed: {message}")]
    ExpireFailed { vm_id: String, message: String },
}

/// What deleting an expired VM found once it held the VM's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryOutcome {
    Deleted,
    /// Decided again under the lock: not now (an operation is under way),
    /// or the VM is already gone.
    NotNow {
        reason: String,
    },
}

/// What suspending found once it held the VM's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuspendOutcome {
    Suspended,
    /// The fresh decision under the lock was to keep it (traffic arrived, an
    /// SSH session opened, the state changed).
    KeptAfterRecheck {
        reason: String,
    },
}

/// Where the idle monitor reads VMs and asks for suspensions (orchestration).
#[async_trait]
pub trait IdleTarget: Send + Sync + 'static {
    /// VM ids worth looking at (for example running VMs with routes).
    async fn candidates(&self) -> Vec<String>;
    /// Current inputs for one VM; `None` if it disappeared.
    async fn inputs(&self, vm_id: &str) -> Option<IdleInputs>;
    /// Decides again under the VM's lock, records that decision on the VM
    /// (`last_activity_at`, reason) and suspends (snapshots) the VM if it is
    /// still idle.
    async fn suspend_if_still_idle(&self, vm_id: &str) -> Result<SuspendOutcome, IdleError>;
    /// Makes a decision to keep the VM visible on it (`last_activity_at`,
    /// reason); a suspension's is recorded by `suspend_if_still_idle`.
    fn record_decision(&self, vm_id: &str, decision: &IdleDecision);
    /// Every VM with a TTL, whatever its state.
    async fn expiry_candidates(&self) -> Vec<(String, ExpiryInputs)>;
    /// Decides again under the VM's lock and deletes it (as `DELETE` does,
    /// the reason on its events) if its TTL has passed.
    async fn expire_if_due(&self, vm_id: &str) -> Result<ExpiryOutcome, IdleError>;
}

/// Deletes every VM past its TTL, one after another; a VM that cannot be
/// deleted now is looked at again on the next pass.
pub async fn run_expiry_pass(target: &dyn IdleTarget) -> Vec<(String, Result<ExpiryOutcome, IdleError>)> {
    let mut outcomes = Vec::new();
    for (vm_id, inputs) in target.expiry_candidates().await {
        match decide_expiry(&inputs) {
            ExpiryDecision::Wait { reason } => {
                tracing::debug!(%vm_id, %reason, "TTL not acted on");
            }
            ExpiryDecision::Delete { reason } => {
                let outcome = target.expire_if_due(&vm_id).await;
                match &outcome {
                    Ok(ExpiryOutcome::Deleted) => tracing::info!(%vm_id, %reason, "expired VM deleted"),
                    Ok(ExpiryOutcome::NotNow { reason }) => {
                        tracing::info!(%vm_id, %reason, "expired VM not deleted now")
                    }
                    Err(error) => tracing::warn!(%vm_id, %error, "expired VM could not be deleted"),
                }
                outcomes.push((vm_id, outcome));
            }
        }
    }
    outcomes
}

/// What one pass did for one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassEntry {
    pub vm_id: String,
    pub decision: IdleDecision,
    /// Present when a suspension was attempted.
    pub outcome: Option<Result<SuspendOutcome, IdleError>>,
}

/// Looks at every candidate once. Suspensions run one after another: each
/// is a snapshot that is heavy on disk and CPU. A VM whose suspension
/// failed is not tried again until `backoff` says so (and keeps the status
/// that failure left on it).
pub async fn run_idle_pass(target: &dyn IdleTarget, backoff: &mut SuspendBackoff) -> Vec<PassEntry> {
    let mut entries = Vec::new();
    let candidates = target.candidates().await;
    backoff.retain_only(&candidates);
    for vm_id in candidates {
        let Some(inputs) = target.inputs(&vm_id).await else {
            continue;
        };
        let decision = decide(&inputs);
        let outcome = if decision.is_suspend() {
            if let Some(wait) = backoff.remaining(&vm_id) {
                tracing::debug!(%vm_id, ?wait, "idle VM's last suspension failed; waiting before the next");
                continue;
            }
            // Decided again under the VM's lock, which records that decision.
            let outcome = target.suspend_if_still_idle(&vm_id).await;
            match &outcome {
                Ok(SuspendOutcome::Suspended) => {
                    backoff.succeeded(&vm_id);
                    tracing::info!(%vm_id, reason = decision.reason(), "idle VM suspended")
                }
                Ok(SuspendOutcome::KeptAfterRecheck { reason }) => {
                    tracing::info!(%vm_id, %reason, "idle VM kept after re-check")
                }
                Err(error) => {
                    backoff.failed(&vm_id);
                    tracing::warn!(%vm_id, %error, "idle VM could not be suspended")
                }
            }
            Some(outcome)
        } else {
            target.record_decision(&vm_id, &decision);
            tracing::debug!(%vm_id, reason = decision.reason(), "VM kept");
            None
        };
        entries.push(PassEntry {
            vm_id,
            decision,
            outcome,
        });
    }
    entries
}

/// Runs [`run_expiry_pass`] and then [`run_idle_pass`] every `interval`
/// (HATCH_IDLE_CHECK_INTERVAL), the first time one interval after start;
/// TTLs are also looked at right at start, so VMs that expired while the
/// daemon was down go at once. Abort the handle to stop it.
pub fn spawn_idle_monitor(interval: Duration, target: Arc<dyn IdleTarget>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let period = interval.max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // A pass that took long (snapshots) is not followed by a burst.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut backoff = SuspendBackoff::new(period);
        run_expiry_pass(target.as_ref()).await;
        loop {
            ticker.tick().await;
            run_expiry_pass(target.as_ref()).await;
            run_idle_pass(target.as_ref(), &mut backoff).await;
        }
    })
}
