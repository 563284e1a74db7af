//! Idle management and lifetimes. A VM idled by its policy
//! ([`idle_policy`]: its `on_idle` and `idle_timeout_seconds`, or by
//! default only a VM with routes) with no proxied traffic and no SSH
//! session for its idle timeout is snapshotted or stopped, never while an
//! SSH session or a proxied stream is open. A VM past its `ttl_seconds` is
//! deleted, whatever its state.
//!
//! [`decide`] and [`decide_expiry`] are the pure rules;
//! [`spawn_idle_monitor`] applies them on a timer through an [`IdleTarget`]
//! (orchestration), which re-checks under the VM's lock before acting. SSH
//! sessions are counted from the kernel's connection tracking by `net`
//! (`Network::established_ssh_sessions`).

mod backoff;
mod decide;
#[cfg(test)]
mod decide_tests;
mod monitor;
#[cfg(test)]
mod monitor_tests;

pub use backoff::SuspendBackoff;
pub use decide::{
    decide, decide_expiry, idle_policy, ExpiryDecision, ExpiryInputs, IdleAction, IdleDecision, IdleInputs, IdlePolicy,
};
pub use monitor::{
    run_expiry_pass, run_idle_pass, spawn_idle_monitor, ExpiryOutcome, IdleError, IdleTarget, PassEntry, SuspendOutcome,
};
