//! Whether a VM should be suspended for being idle: a pure function of what
//! is known about it, so every rule is tested without VMs or clocks.

use std::time::Duration;

use crate::model::{Timestamp, VmState};

/// Everything the decision looks at, gathered by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleInputs {
    pub state: VmState,
    /// The VM has at least one proxy route (only routed VMs are idled).
    pub has_routes: bool,
    /// Last proxied traffic, if any since the daemon knows the VM.
    pub last_activity: Option<Timestamp>,
    /// Open proxied requests, streams and tunnels (WebSockets).
    pub active_streams: usize,
    /// ESTABLISHED SSH connections through the VM's forwarded port (conntrack).
    pub established_ssh: usize,
    pub now: Timestamp,
    /// HATCH_IDLE_TIMEOUT.
    pub idle_timeout: Duration,
    /// When the VM was created, or last started or restored.
    pub created_or_started_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdleDecision {
    Suspend { reason: String },
    Keep { reason: String },
}

impl IdleDecision {
    pub fn is_suspend(&self) -> bool {
        matches!(self, IdleDecision::Suspend { .. })
    }

    pub fn reason(&self) -> &str {
        match self {
            IdleDecision::Suspend { reason } | IdleDecision::Keep { reason } => reason,
        }
    }
}

fn keep(reason: String) -> IdleDecision {
    IdleDecision::Keep { reason }
}

/// Suspend only a running VM with a route, no SSH session, no open proxied
/// stream, and no traffic for `idle_timeout`. Idle time counts from the later
/// of the last activity and the (re)start, so a VM restored by hand is not
/// suspended again at once for traffic that predates its restore.
pub fn decide(inputs: &IdleInputs) -> IdleDecision {
    if inputs.state != VmState::Running {
        return keep(format!(
            "the VM is {}; only running VMs are idled",
            inputs.state.as_str()
        ));
    }
    if !inputs.has_routes {
        return keep("the VM has no routes".into());
    }
    if inputs.established_ssh > 0 {
        return keep(format!("{} established SSH session(s)", inputs.established_ssh));
    }
    if inputs.active_streams > 0 {
        return keep(format!("{} open proxied connection(s)", inputs.active_streams));
    }
    let since = inputs.last_activity.map_or(inputs.created_or_started_at, |last| {
        last.max(inputs.created_or_started_at)
    });
    let Ok(idle_for) = (inputs.now - since).to_std() else {
        // `since` is in the future: clocks moved; not idle.
        return keep("last activity is in the future".into());
    };
    let what = if inputs
        .last_activity
        .is_some_and(|last| last >= inputs.created_or_started_at)
    {
        "no proxied traffic"
    } else {
        "no proxied traffic since start"
    };
    if idle_for >= inputs.idle_timeout {
        IdleDecision::Suspend {
            reason: format!(
                "{what} for {}s (idle timeout {}s)",
                idle_for.as_secs(),
                inputs.idle_timeout.as_secs()
            ),
        }
    } else {
        keep(format!(
            "{what} for {}s of {}s",
            idle_for.as_secs(),
            inputs.idle_timeout.as_secs()
        ))
    }
}
