//! The monitor loop with a `FakeIdleTarget`: what gets suspended, what is
//! recorded (once per VM), and that a suspension refused under the lock is
//! respected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    run_expiry_pass, run_idle_pass, spawn_idle_monitor, ExpiryInputs, ExpiryOutcome, IdleAction, IdleDecision,
    IdleError, IdleInputs, IdleTarget, SuspendBackoff, SuspendOutcome,
};
use crate::model::{now, VmState};

#[derive(Default)]
struct FakeIdleTarget {
    vms: Mutex<HashMap<String, IdleInputs>>,
    /// VMs whose re-check under the lock finds new traffic.
    busy_on_recheck: Vec<String>,
    failing: Vec<String>,
    recorded: Mutex<Vec<(String, IdleDecision)>>,
    /// VMs with a TTL, and those the monitor asked to delete.
    expiring: Mutex<Vec<(String, ExpiryInputs)>>,
    expired: Mutex<Vec<String>>,
}

impl FakeIdleTarget {
    fn state_of(&self, vm_id: &str) -> Option<VmState> {
        self.vms.lock().unwrap().get(vm_id).map(|inputs| inputs.state)
    }
}

#[async_trait]
impl IdleTarget for FakeIdleTarget {
    async fn candidates(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.vms.lock().unwrap().keys().cloned().collect();
        ids.push("vm-vanished".into());
        ids.sort();
        ids
    }

    async fn inputs(&self, vm_id: &str) -> Option<IdleInputs> {
        self.vms.lock().unwrap().get(vm_id).cloned()
    }

    async fn suspend_if_still_idle(&self, vm_id: &str) -> Result<SuspendOutcome, IdleError> {
        if self.busy_on_recheck.iter().any(|id| id == vm_id) {
            let reason = "a request arrived".to_string();
            self.record_decision(vm_id, &IdleDecision::Keep { reason: reason.clone() });
            return Ok(SuspendOutcome::KeptAfterRecheck { reason });
        }
        self.record_decision(
            vm_id,
            &IdleDecision::Suspend {
                action: IdleAction::Snapshot,
                reason: "idle on re-check".into(),
            },
        );
        if self.failing.iter().any(|id| id == vm_id) {
            return Err(IdleError::SuspendFailed {
                vm_id: vm_id.into(),
                message: "disk full".into(),
            });
        }
        if let Some(inputs) = self.vms.lock().unwrap().get_mut(vm_id) {
            inputs.state = VmState::Snapshotted;
        }
        Ok(SuspendOutcome::Suspended)
    }

    fn record_decision(&self, vm_id: &str, decision: &IdleDecision) {
        self.recorded.lock().unwrap().push((vm_id.into(), decision.clone()));
    }

    async fn expiry_candidates(&self) -> Vec<(String, ExpiryInputs)> {
        self.expiring.lock().unwrap().clone()
    }

    async fn expire_if_due(&self, vm_id: &str) -> Result<ExpiryOutcome, IdleError> {
        self.expired.lock().unwrap().push(vm_id.to_string());
        self.vms.lock().unwrap().remove(vm_id);
        Ok(ExpiryOutcome::Deleted)
    }
}

fn vm(idle_for: Duration, ssh: usize, streams: usize) -> IdleInputs {
    let now = now();
    IdleInputs {
        state: VmState::Running,
        has_routes: true,
        on_idle: None,
        vm_idle_timeout: None,
        last_activity: Some(now - chrono::Duration::from_std(idle_for).unwrap()),
        active_streams: streams,
        established_ssh: ssh,
        now,
        idle_timeout: Duration::from_secs(60),
        created_or_started_at: now - chrono::Duration::hours(1),
    }
}

fn target(busy_on_recheck: &[&str], failing: &[&str]) -> FakeIdleTarget {
    let hour = Duration::from_secs(3600);
    let vms = HashMap::from([
        ("vm-idle".to_string(), vm(hour, 0, 0)),
        ("vm-ssh".to_string(), vm(hour, 1, 0)),
        ("vm-ws".to_string(), vm(hour, 0, 1)),
        ("vm-recent".to_string(), vm(Duration::from_secs(5), 0, 0)),
        ("vm-raced".to_string(), vm(hour, 0, 0)),
        ("vm-broken".to_string(), vm(hour, 0, 0)),
    ]);
    FakeIdleTarget {
        vms: Mutex::new(vms),
        busy_on_recheck: busy_on_recheck.iter().map(|s| s.to_string()).collect(),
        failing: failing.iter().map(|s| s.to_string()).collect(),
        recorded: Mutex::default(),
        expiring: Mutex::default(),
        expired: Mutex::default(),
    }
}

#[tokio::test]
async fn one_pass_suspends_only_idle_vms_and_records_every_decision() {
    let target = target(&["vm-raced"], &["vm-broken"]);
    let entries = run_idle_pass(&target, &mut SuspendBackoff::new(Duration::from_secs(1))).await;

    assert_eq!(target.state_of("vm-idle"), Some(VmState::Snapshotted));
    for kept in ["vm-ssh", "vm-ws", "vm-recent", "vm-raced", "vm-broken"] {
        assert_eq!(target.state_of(kept), Some(VmState::Running), "{kept}");
    }
    let outcome = |id: &str| entries.iter().find(|e| e.vm_id == id).map(|e| e.outcome.clone());
    assert_eq!(outcome("vm-idle"), Some(Some(Ok(SuspendOutcome::Suspended))));
    assert_eq!(outcome("vm-ssh"), Some(None));
    assert!(matches!(
        outcome("vm-raced"),
        Some(Some(Ok(SuspendOutcome::KeptAfterRecheck { .. })))
    ));
    assert!(matches!(
        outcome("vm-broken"),
        Some(Some(Err(IdleError::SuspendFailed { .. })))
    ));
    // A VM that disappeared between listing and reading is skipped.
    assert_eq!(outcome("vm-vanished"), None);

    // One decision per VM: a suspension's is the one made under the lock.
    let recorded = target.recorded.lock().unwrap();
    let mut recorded_ids: Vec<&str> = recorded.iter().map(|(vm, _)| vm.as_str()).collect();
    recorded_ids.sort_unstable();
    assert_eq!(
        recorded_ids,
        ["vm-broken", "vm-idle", "vm-raced", "vm-recent", "vm-ssh", "vm-ws"]
    );
    let decision = |id: &str| {
        recorded
            .iter()
            .find(|(vm, _)| vm == id)
            .map(|(_, d)| d.clone())
            .unwrap()
    };
    assert!(decision("vm-ssh").reason().contains("SSH"), "{:?}", decision("vm-ssh"));
    assert!(
        decision("vm-ws").reason().contains("open proxied"),
        "{:?}",
        decision("vm-ws")
    );
    assert_eq!(
        decision("vm-raced"),
        IdleDecision::Keep {
            reason: "a request arrived".into()
        }
    );
    assert!(decision("vm-idle").is_suspend());
}

#[tokio::test(start_paused = true)]
async fn a_failed_suspension_is_not_retried_until_its_wait_is_over() {
    let target = target(&[], &["vm-broken"]);
    let mut backoff = SuspendBackoff::new(Duration::from_secs(30));
    let attempts = |target: &FakeIdleTarget| {
        let recorded = target.recorded.lock().unwrap();
        recorded
            .iter()
            .filter(|(vm, d)| vm == "vm-broken" && d.is_suspend())
            .count()
    };
    run_idle_pass(&target, &mut backoff).await;
    assert_eq!(attempts(&target), 1);
    let entries = run_idle_pass(&target, &mut backoff).await;
    assert_eq!(attempts(&target), 1, "retried at once");
    assert!(entries.iter().all(|e| e.vm_id != "vm-broken"), "{entries:?}");
    tokio::time::advance(Duration::from_secs(30)).await;
    run_idle_pass(&target, &mut backoff).await;
    assert_eq!(attempts(&target), 2, "tried again after the wait");
}

#[tokio::test(start_paused = true)]
async fn the_monitor_runs_passes_on_its_interval() {
    let target = Arc::new(target(&[], &[]));
    let handle = spawn_idle_monitor(Duration::from_secs(300), target.clone());
    tokio::time::sleep(Duration::from_secs(299)).await;
    assert!(
        target.recorded.lock().unwrap().is_empty(),
        "no pass before the first interval"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(target.state_of("vm-idle"), Some(VmState::Snapshotted));
    let after_one = target.recorded.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(target.recorded.lock().unwrap().len() > after_one, "a second pass ran");
    handle.abort();
}

fn expiring(state: VmState, expires_in_seconds: i64) -> ExpiryInputs {
    let now = now();
    ExpiryInputs {
        state,
        ttl_seconds: 60,
        expires_at: now + chrono::Duration::seconds(expires_in_seconds),
        now,
    }
}

#[tokio::test]
async fn an_expiry_pass_deletes_only_vms_past_their_ttl_that_are_settled() {
    let target = target(&[], &[]);
    *target.expiring.lock().unwrap() = vec![
        ("vm-idle".into(), expiring(VmState::Running, -1)),
        ("vm-recent".into(), expiring(VmState::Running, 30)),
        ("vm-ws".into(), expiring(VmState::Snapshotting, -1)),
        ("vm-gone-stopped".into(), expiring(VmState::Stopped, -100)),
    ];
    let outcomes = run_expiry_pass(&target).await;
    assert_eq!(*target.expired.lock().unwrap(), ["vm-idle", "vm-gone-stopped"]);
    assert!(
        outcomes.iter().all(|(_, o)| *o == Ok(ExpiryOutcome::Deleted)),
        "{outcomes:?}"
    );
    // The idle pass that follows no longer sees the deleted VM.
    let entries = run_idle_pass(&target, &mut SuspendBackoff::new(Duration::from_secs(1))).await;
    assert!(entries.iter().all(|e| e.vm_id != "vm-idle"), "{entries:?}");
}

#[tokio::test(start_paused = true)]
async fn ttls_are_looked_at_right_at_start_idleness_only_after_an_interval() {
    let target = Arc::new(target(&[], &[]));
    *target.expiring.lock().unwrap() = vec![("vm-ssh".into(), expiring(VmState::Running, -1))];
    let handle = spawn_idle_monitor(Duration::from_secs(300), target.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        *target.expired.lock().unwrap(),
        ["vm-ssh"],
        "expired while the daemon was down"
    );
    assert!(target.recorded.lock().unwrap().is_empty(), "no idle pass yet");
    handle.abort();
}
