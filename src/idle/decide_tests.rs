//! Table-driven and exhaustive tests of [`super::decide`].

use std::time::Duration;

use chrono::TimeZone;

use super::{decide, IdleDecision, IdleInputs};
use crate::model::{Timestamp, VmState};

const TIMEOUT: Duration = Duration::from_secs(600);

fn at(seconds: i64) -> Timestamp {
    chrono::Utc.timestamp_opt(1_800_000_000 + seconds, 0).single().unwrap()
}

/// A running, routed VM started at t=0 with no traffic, looked at at t=now.
fn running(now: i64) -> IdleInputs {
    IdleInputs {
        state: VmState::Running,
        has_routes: true,
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
            reason: "no proxied traffic for 900s (idle timeout 600s)".into()
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
    for state in VmState::ALL {
        for has_routes in [false, true] {
            for established_ssh in [0, 1, 3] {
                for active_streams in [0, 1, 7] {
                    for now in [0, 300, 600, 601, 1200, 10_000] {
                        for age in ages {
                            let inputs = IdleInputs {
                                state,
                                has_routes,
                                established_ssh,
                                active_streams,
                                last_activity: age.map(|age| at(now - age)),
                                ..running(now)
                            };
                            let since = inputs.last_activity.map_or(at(0), |last| last.max(at(0)));
                            let idle_long_enough =
                                inputs.now >= since && (inputs.now - since).to_std().unwrap() >= TIMEOUT;
                            let expected = state == VmState::Running
                                && has_routes
                                && established_ssh == 0
                                && active_streams == 0
                                && idle_long_enough;
                            let decision = decide(&inputs);
                            assert_eq!(decision.is_suspend(), expected, "{inputs:?} → {decision:?}");
                            if established_ssh > 0 || active_streams > 0 {
                                assert!(!decision.is_suspend(), "never suspend a VM in use: {inputs:?}");
                            }
                            suspended += usize::from(decision.is_suspend());
                        }
                    }
                }
            }
        }
    }
    // The grid does contain VMs that must be suspended.
    assert!(suspended > 0);
}
