//! Whether a VM should be idled (snapshotted or stopped) or has outlived
//! its TTL: pure functions of what is known about it, so every rule is
//! tested without VMs or clocks.

use std::time::Duration;

use crate::model::{OnIdle, Timestamp, VmState};

/// Everything the decision looks at, gathered by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleInputs {
    pub state: VmState,
    /// The VM has at least one proxy route.
    pub has_routes: bool,
    /// The VM's `on_idle`, if set.
    pub on_idle: Option<OnIdle>,
    /// The VM's `idle_timeout_seconds`, if set.
    pub vm_idle_timeout: Option<Duration>,
    /// Last proxied traffic or SSH session seen, if any since the daemon
    /// knows the VM.
    pub last_activity: Option<Timestamp>,
    /// Open proxied requests, streams and tunnels (WebSockets).
    pub active_streams: usize,
    /// ESTABLISHED SSH connections through the VM's forwarded port (conntrack).
    pub established_ssh: usize,
    pub now: Timestamp,
    /// HATCH_IDLE_TIMEOUT: the timeout of VMs that set none.
    pub idle_timeout: Duration,
    /// When the VM was created, or last started or restored, or later
    /// when its guest first accepted connections (or got its first route).
    pub created_or_started_at: Timestamp,
}

/// What is done to an idle VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleAction {
    Snapshot,
    Stop,
}

/// Whether and how a VM is idled, from its own settings and the daemon's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Never idled; why not.
    Never(&'static str),
    Idle {
        action: IdleAction,
        timeout: Duration,
    },
}

/// The rule, written down once:
/// - `on_idle: "none"`: never idled.
/// - `on_idle: "snapshot"` or `"stop"`, or `idle_timeout_seconds` set
///   (action `snapshot`): idled whether or not it has routes.
/// - neither set: idled (snapshot) only while it has a route, as before
///   these settings existed.
///
/// The timeout is the VM's `idle_timeout_seconds`, else HATCH_IDLE_TIMEOUT.
pub fn idle_policy(
    on_idle: Option<OnIdle>,
    vm_timeout: Option<Duration>,
    has_routes: bool,
    default_timeout: Duration,
) -> IdlePolicy {
    let action = match on_idle {
        Some(OnIdle::None) => return IdlePolicy::Never("on_idle is none"),
        Some(OnIdle::Stop) => IdleAction::Stop,
        Some(OnIdle::Snapshot) => IdleAction::Snapshot,
        None if vm_timeout.is_none() && !has_routes => return IdlePolicy::Never("the VM has no routes"),
        None => IdleAction::Snapshot,
    };
    IdlePolicy::Idle {
        action,
        timeout: vm_timeout.unwrap_or(default_timeout),
    }
}

impl IdleInputs {
    pub fn policy(&self) -> IdlePolicy {
        idle_policy(self.on_idle, self.vm_idle_timeout, self.has_routes, self.idle_timeout)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdleDecision {
    Suspend { action: IdleAction, reason: String },
    Keep { reason: String },
}

impl IdleDecision {
    pub fn is_suspend(&self) -> bool {
        matches!(self, IdleDecision::Suspend { .. })
    }

    pub fn reason(&self) -> &str {
        match self {
            IdleDecision::Suspend { reason, .. } | IdleDecision::Keep { reason } => reason,
        }
    }
}

fn keep(reason: String) -> IdleDecision {
    IdleDecision::Keep { reason }
}

/// Suspend (snapshot or stop, as its policy says) only a running VM that
/// is idled at all, with no SSH session, no open proxied stream, and no
/// activity for its timeout. Idle time counts from the later of the last
/// activity and the (re)start, so a VM restored or started by hand is not
/// idled again at once for activity that predates it.
pub fn decide(inputs: &IdleInputs) -> IdleDecision {
    if inputs.state != VmState::Running {
        return keep(format!(
            "the VM is {}; only running VMs are idled",
            inputs.state.as_str()
        ));
    }
    let (action, timeout) = match inputs.policy() {
        IdlePolicy::Never(why) => return keep(why.into()),
        IdlePolicy::Idle { action, timeout } => (action, timeout),
    };
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
        "no proxied traffic or SSH session"
    } else {
        "no proxied traffic or SSH session since start"
    };
    if idle_for >= timeout {
        IdleDecision::Suspend {
            action,
            reason: format!(
                "{what} for {}s (idle timeout {}s)",
                idle_for.as_secs(),
                timeout.as_secs()
            ),
        }
    } else {
        keep(format!("{what} for {}s of {}s", idle_for.as_secs(), timeout.as_secs()))
    }
}

/// What the TTL decision looks at for one VM with a `ttl_seconds`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiryInputs {
    pub state: VmState,
    pub ttl_seconds: u32,
    /// `created_at` + `ttl_seconds`.
    pub expires_at: Timestamp,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryDecision {
    /// Delete it; the reason goes on its `deleting` state event.
    Delete { reason: String },
    /// Not yet, or not now; why.
    Wait { reason: String },
}

/// A VM past its expiry is deleted in every settled state (and a delete
/// cut short is finished); one in the middle of an operation is deleted
/// once that operation has settled it.
pub fn decide_expiry(inputs: &ExpiryInputs) -> ExpiryDecision {
    if inputs.now < inputs.expires_at {
        return ExpiryDecision::Wait {
            reason: format!("expires at {}", inputs.expires_at.to_rfc3339()),
        };
    }
    if inputs.state.is_transitional() && inputs.state != VmState::Deleting {
        return ExpiryDecision::Wait {
            reason: format!("expired, but {}; deleted once that is done", inputs.state.as_str()),
        };
    }
    ExpiryDecision::Delete {
        reason: format!(
            "ttl expired: ttl_seconds {} passed at {}",
            inputs.ttl_seconds,
            inputs.expires_at.to_rfc3339()
        ),
    }
}
