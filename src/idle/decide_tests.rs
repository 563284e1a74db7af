//! Table-driven and exhaustive tests of [`super::decide`].

use std::time::Duration;

use chrono::TimeZone;

use super::{
    decide, decide_expiry, idle_policy, ExpiryDecision, ExpiryInputs, IdleAction, IdleDecision, IdleInputs, IdlePolicy,
};
use crate::model::{OnIdle, Timestamp, VmState};

const TIMEOUT: Duration = Duration::from_secs(600);

fn at(seconds: i64) -> Timestamp {
    chrono::Utc.timestamp_opt(1_800_000_000 + seconds, 0).single().unwrap()
}

/// A running, routed VM started at t=0 with no traffic, looked at at t=now.
fn running(now: i64) -> IdleInputs {
    IdleInputs {
        state: VmState::Running,
        has_routes: true,
        on_idle: None,
        vm_idle_timeout: None,
        last_activity: None,
        active_streams: 0,
        established_ssh: 0,
        now: at(now),
        idle_timeout: TIMEOUT,
        created_or_started_at: at(0),
    }
}

#[test]
fn table_of_cases() {
    let cases: Vec<(&str, IdleInputs, bool)> = vec![
        ("no traffic since start, timeout passed", running(600), true),
        ("no traffic since start, timeout not reached", running(599), false),
        (
            "old traffic",
            IdleInputs {
                last_activity: Some(at(100)),
                ..running(700)
            },
            true,
        ),
        (
            "recent traffic",
            IdleInputs {
                last_activity: Some(at(101)),
                ..running(700)
            },
            false,
        ),
        (
            "traffic before a restart does not count",
            IdleInputs {
                last_activity: Some(at(-5000)),
                ..running(10)
            },
            false,
        ),
        (
            "SSH session",
            IdleInputs {
                established_ssh: 1,
                ..running(10_000)
            },
            false,
        ),
        (
            "open WebSocket",
            IdleInputs {
                active_streams: 1,
                ..running(10_000)
            },
            false,
        ),
        (
            "no routes",
            IdleInputs {
                has_routes: false,
                ..running(10_000)
            },
            false,
        ),
        (
            "already snapshotted",
            IdleInputs {
                state: VmState::Snapshotted,
                ..running(10_000)
            },
            false,
        ),
        (
            "stopped",
            IdleInputs {
                state: VmState::Stopped,
                ..running(10_000)
            },
            false,
        ),
        (
            "activity in the future",
            IdleInputs {
                last_activity: Some(at(20_000)),
                ..running(10_000)
            },
            false,
        ),
        (
            "zero timeout",
            IdleInputs {
                idle_timeout: Duration::ZERO,
                ..running(0)
            },
            true,
        ),
    ];
    for (name, inputs, suspend) in cases {
        let decision = decide(&inputs);
        assert_eq!(decision.is_suspend(), suspend, "{name}: {decision:?}");
        assert!(!decision.reason().is_empty(), "{name}");
    }
}

#[test]
fn reasons_say_why() {
    let ssh = decide(&IdleInputs {
        established_ssh: 2,
        ..running(10_000)
    });
    assert_eq!(
        ssh,
        IdleDecision::Keep {
            reason: "2 established SSH session(s)".into()
        }
    );
    let idle = decide(&IdleInputs {
        last_activity: Some(at(0)),
        ..running(900)
    });
    assert_eq!(
        idle,
        IdleDecision::Suspend {
            action: IdleAction::Snapshot,
            reason: "no proxied traffic or SSH session for 900s (idle timeout 600s)".into()
        }
    );
    assert!(decide(&running(10)).reason().contains("since start"));
}

/// Every combination of state, routes, SSH sessions, streams and ages: the
/// decision is Suspend exactly when all the rules allow it.
#[test]
fn exhaustive_combinations_follow_the_rules() {
    let ages = [
        None,
        Some(-1000),
        Some(0),
        Some(1),
        Some(599),
        Some(600),
        Some(601),
        Some(5000),
    ];
    let mut suspended = 0;
    let on_idles = [None, Some(OnIdle::Snapshot), Some(OnIdle::Stop), Some(OnIdle::None)];
    let vm_timeouts = [None, Some(Duration::from_secs(300))];
    for state in VmState::ALL {
        for has_routes in [false, true] {
            for (on_idle, vm_idle_timeout) in on_idles.into_iter().flat_map(|o| vm_timeouts.map(|t| (o, t))) {
                for established_ssh in [0, 1, 3] {
                    for active_streams in [0, 1, 7] {
                        for now in [0, 300, 600, 601, 1200, 10_000] {
                            for age in ages {
                                let inputs = IdleInputs {
                                    state,
                                    has_routes,
                                    on_idle,
                                    vm_idle_timeout,
                                    established_ssh,
                                    active_streams,
                                    last_activity: age.map(|age| at(now - age)),
                                    ..running(now)
                                };
                                let timeout = vm_idle_timeout.unwrap_or(TIMEOUT);
                                let since = inputs.last_activity.map_or(at(0), |last| last.max(at(0)));
                                let idle_long_enough =
                                    inputs.now >= since && (inputs.now - since).to_std().unwrap() >= timeout;
                                let idled = match on_idle {
                                    Some(OnIdle::None) => false,
                                    Some(_) => true,
                                    None => has_routes || vm_idle_timeout.is_some(),
                                };
                                let expected = state == VmState::Running
                                    && idled
                                    && established_ssh == 0
                                    && active_streams == 0
                                    && idle_long_enough;
                                let decision = decide(&inputs);
                                assert_eq!(decision.is_suspend(), expected, "{inputs:?} → {decision:?}");
                                if established_ssh > 0 || active_streams > 0 {
                                    assert!(!decision.is_suspend(), "never suspend a VM in use: {inputs:?}");
                                }
                                if let IdleDecision::Suspend { action, .. } = decision {
                                    let stop = on_idle == Some(OnIdle::Stop);
                                    assert_eq!(action == IdleAction::Stop, stop, "{inputs:?}");
                                    suspended += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // The grid does contain VMs that must be suspended.
    assert!(suspended > 0);
}

/// The policy in every combination of the VM's settings and routes.
#[test]
fn policy_defaults_keep_the_old_behaviour_and_settings_apply_without_routes() {
    let own = Some(Duration::from_secs(30));
    let idle = |action, timeout| IdlePolicy::Idle { action, timeout };
    let cases = [
        // Nothing set: only routed VMs, with HATCH_IDLE_TIMEOUT, snapshotted.
        (None, None, false, IdlePolicy::Never("the VM has no routes")),
        (None, None, true, idle(IdleAction::Snapshot, TIMEOUT)),
        // A timeout alone idles (snapshot) with or without routes.
        (None, own, false, idle(IdleAction::Snapshot, Duration::from_secs(30))),
        (None, own, true, idle(IdleAction::Snapshot, Duration::from_secs(30))),
        (Some(OnIdle::Stop), None, false, idle(IdleAction::Stop, TIMEOUT)),
        (
            Some(OnIdle::Stop),
            own,
            true,
            idle(IdleAction::Stop, Duration::from_secs(30)),
        ),
        (Some(OnIdle::Snapshot), None, false, idle(IdleAction::Snapshot, TIMEOUT)),
        // "none" wins over routes and any timeout.
        (Some(OnIdle::None), None, true, IdlePolicy::Never("on_idle is none")),
        (Some(OnIdle::None), own, true, IdlePolicy::Never("on_idle is none")),
    ];
    for (on_idle, timeout, has_routes, expected) in cases {
        assert_eq!(
            idle_policy(on_idle, timeout, has_routes, TIMEOUT),
            expected,
            "{on_idle:?} {timeout:?} routes={has_routes}"
        );
    }
}

#[test]
fn a_vm_without_routes_is_stopped_by_its_own_timeout_and_kept_by_ssh() {
    let stop = IdleInputs {
        has_routes: false,
        on_idle: Some(OnIdle::Stop),
        vm_idle_timeout: Some(Duration::from_secs(20)),
        ..running(25)
    };
    assert_eq!(
        decide(&stop),
        IdleDecision::Suspend {
            action: IdleAction::Stop,
            reason: "no proxied traffic or SSH session since start for 25s (idle timeout 20s)".into()
        }
    );
    let in_use = IdleInputs {
        established_ssh: 1,
        ..stop.clone()
    };
    assert!(!decide(&in_use).is_suspend());
    // An SSH session seen 10 s ago counts as activity.
    let recently = IdleInputs {
        last_activity: Some(at(15)),
        ..stop
    };
    assert_eq!(
        decide(&recently).reason(),
        "no proxied traffic or SSH session for 10s of 20s"
    );
    let never = IdleInputs {
        on_idle: Some(OnIdle::None),
        ..running(100_000)
    };
    assert_eq!(decide(&never).reason(), "on_idle is none");
}

#[test]
fn expiry_deletes_settled_vms_once_their_ttl_has_passed() {
    let inputs = |state, now| ExpiryInputs {
        state,
        ttl_seconds: 60,
        expires_at: at(60),
        now: at(now),
    };
    for state in VmState::ALL {
        let decision = decide_expiry(&inputs(state, 59));
        assert!(
            matches!(decision, ExpiryDecision::Wait { .. }),
            "{state:?}: {decision:?}"
        );
        let decision = decide_expiry(&inputs(state, 60));
        let settled = !state.is_transitional() || state == VmState::Deleting;
        assert_eq!(
            matches!(decision, ExpiryDecision::Delete { .. }),
            settled,
            "{state:?}: {decision:?}"
        );
    }
    let ExpiryDecision::Delete { reason } = decide_expiry(&inputs(VmState::Snapshotted, 1_000_000)) else {
        panic!("not deleted");
    };
    assert!(reason.starts_with("ttl expired: ttl_seconds 60 passed at "), "{reason}");
    let ExpiryDecision::Wait { reason } = decide_expiry(&inputs(VmState::Restoring, 61)) else {
        panic!("deleted mid-restore");
    };
    assert!(reason.contains("restoring"), "{reason}");
}
