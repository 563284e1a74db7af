//! Idle management: VMs with routes and no proxied traffic for the idle
//! timeout are suspended (snapshotted), never while an SSH session or a
//! proxied stream is open.
//!
//! [`decide`] is the pure rule; [`spawn_idle_monitor`] applies it on a
//! timer through an [`IdleTarget`] (orchestration), which re-checks under
//! the VM's lock before suspending. SSH sessions are counted from the
//! kernel's connection tracking by `net` (`Network::established_ssh_sessions`).

mod backoff;
mod decide;
#[cfg(test)]
mod decide_tests;
mod monitor;
#[cfg(test)]
mod monitor_tests;

pub use backoff::SuspendBackoff;
pub use decide::{decide, IdleDecision, IdleInputs};
pub use monitor::{run_idle_pass, spawn_idle_monitor, IdleError, IdleTarget, PassEntry, SuspendOutcome};
