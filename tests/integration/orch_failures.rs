//! Orchestration with a failure injected at every step in turn (fake
//! hypervisor, network and snapshot storage; see `common::fakes`): after
//! each create, start, stop, snapshot, restore and delete, failed or not,
//! nothing is held that no VM owns, every VM rests in a settled state, and
//! the orchestrator's in-memory view of the VMs matches the database.
//!
//! The orchestrator runs inside a namespace of its own: its readiness
//! probe connects to the fake guest addresses, which must reach nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::common;

use common::daemon::sample_image;
use common::fakes::{FakeHypervisor, FakeNetwork, FakeSnapshotStore, Faults, Step};
use common::netns::TestNetns;
use hatch::model::{Vm, VmState};
use hatch::orch::{CreateVm, Orchestrator};
use hatch::snapshot::LocalStore;
use hatch::store::Store;

struct Rig {
    _dir: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    faults: Arc<Faults>,
    hypervisor: Arc<FakeHypervisor>,
    network: Arc<FakeNetwork>,
    snapshots: Arc<FakeSnapshotStore>,
    store: Store,
    orch: Arc<Orchestrator>,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let config = Arc::new(common::daemon::test_config(&data_dir));
    let store = Store::open(&Store::path_in(&data_dir)).unwrap();
    store.insert_image(&sample_image("fake")).unwrap();
    let faults = Faults::new();
    let hypervisor = FakeHypervisor::new(faults.clone());
    let network = FakeNetwork::new(faults.clone(), config.net.clone());
    let snapshots = FakeSnapshotStore::new(faults.clone(), LocalStore::under_data_dir(&data_dir));
    let orch = Orchestrator::start_with(
        config,
        store.clone(),
        hypervisor.clone(),
        network.clone(),
        snapshots.clone(),
    )
    .await
    .unwrap();
    Rig {
        _dir: dir,
        data_dir,
        faults,
        hypervisor,
        network,
        snapshots,
        store,
        orch,
    }
}

/// Runs `body` on a runtime inside a fresh network namespace.
fn in_netns<F: std::future::Future<Output = ()>>(body: impl FnOnce() -> F + Send) {
    let ns = TestNetns::new();
    ns.block_on(body);
}

fn networked() -> CreateVm {
    CreateVm {
        enable_network: Some(true),
        ..Default::default()
    }
}

fn offline() -> CreateVm {
    CreateVm {
        enable_network: Some(false),
        ..Default::default()
    }
}

fn names_in(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// The invariants that hold after any operation, failed or not.
async fn assert_settled(rig: &Rig, context: &str) -> Vec<Vm> {
    rig.orch.wait_for_snapshot_storage().await;
    let vms = rig.orch.list_vms().await.unwrap();
    // What `GET /vms` answers (the orchestrator's in-memory view) is what
    // the database holds, whatever failed on the way.
    assert_eq!(
        vms,
        rig.store.list_vms().unwrap(),
        "{context}: the view differs from the database"
    );
    let ids: BTreeSet<String> = vms.iter().map(|vm| vm.id.clone()).collect();
    for vm in &vms {
        assert!(
            matches!(
                vm.state,
                VmState::Running | VmState::Stopped | VmState::Snapshotted | VmState::Error
            ),
            "{context}: VM {} left {:?} ({:?})",
            vm.id,
            vm.state,
            vm.state_reason
        );
    }

    // Host network: only VMs that exist (and have networking) are attached.
    for (vm_id, identity) in rig.network.attached() {
        let owner = vms.iter().find(|vm| vm.id == vm_id);
        assert!(
            owner.is_some_and(|vm| vm.network.as_ref() == Some(&identity)),
            "{context}: attachment of {vm_id} belongs to no VM"
        );
    }

    // VMM processes: only running VMs have one, and it is the one recorded.
    let live = rig.hypervisor.live();
    for process in &live {
        let owner = vms.iter().find(|vm| vm.id == process.vm_id);
        assert!(
            owner.is_some_and(|vm| vm.state == VmState::Running && vm.pid == Some(process.pid)),
            "{context}: fake VMM {process:?} belongs to no running VM ({owner:?})"
        );
        assert!(!process.paused, "{context}: {process:?} left paused");
    }
    for vm in vms.iter().filter(|vm| vm.state == VmState::Running) {
        assert!(
            live.iter().any(|p| p.vm_id == vm.id),
            "{context}: VM {} shows running without a VMM ({:?})",
            vm.id,
            vm.state_reason
        );
    }
    let mut owners: Vec<&str> = live.iter().map(|p| p.vm_id.as_str()).collect();
    owners.sort();
    owners.dedup();
    assert_eq!(owners.len(), live.len(), "{context}: two VMMs for one VM: {live:?}");

    // Snapshots: only complete records, and only their artefacts.
    assert!(
        rig.store.list_incomplete_snapshots().unwrap().is_empty(),
        "{context}: incomplete snapshot records"
    );
    let mut wanted_keys = BTreeSet::new();
    for vm in &vms {
        for snapshot in rig.store.list_snapshots(&vm.id).unwrap() {
            assert!(snapshot.complete);
            for artefact in &snapshot.artefacts {
                wanted_keys.insert(format!("{}/{}/{}", vm.id, snapshot.id, artefact.name));
            }
        }
    }
    let stored: BTreeSet<String> = files_under(rig.snapshots.root()).into_iter().collect();
    assert_eq!(stored, wanted_keys, "{context}: snapshot artefacts");

    // Data dir: the database, and directories of existing VMs only.
    let top = names_in(&rig.data_dir);
    let allowed = ["hatch.db", "hatch.db-wal", "hatch.db-shm", "vms", "snapshots", "hot"];
    assert!(
        top.iter().all(|name| allowed.contains(&name.as_str())),
        "{context}: unexpected files in the data dir: {top:?}"
    );
    let vm_dirs = names_in(&rig.data_dir.join("vms"));
    assert!(
        vm_dirs.is_subset(&ids),
        "{context}: VM directories {vm_dirs:?}, VMs {ids:?}"
    );
    for dir in &vm_dirs {
        let inside = names_in(&rig.data_dir.join("vms").join(dir));
        assert!(
            !inside.iter().any(|name| name.starts_with("work-")),
            "{context}: scratch left in {dir}: {inside:?}"
        );
    }
    // Local snapshot copies: only the one a snapshotted VM was suspended with.
    for vm_dir in names_in(&rig.data_dir.join("hot")) {
        let owner = vms.iter().find(|vm| vm.id == vm_dir);
        for copy in names_in(&rig.data_dir.join("hot").join(&vm_dir)) {
            assert!(
                owner.is_some_and(
                    |vm| vm.state == VmState::Snapshotted && vm.snapshot_id.as_deref() == Some(copy.as_str())
                ),
                "{context}: local copy {vm_dir}/{copy} belongs to no snapshotted VM ({owner:?})"
            );
        }
    }
    vms
}

/// Runs `op` with `step` failing on its next call; then, as the daemon does
/// right after a failed operation, one reconcile pass (with the fault
/// gone), and checks the invariants. Returns whether `op` succeeded.
async fn with_fault<T, F>(rig: &Rig, step: Step, what: &str, op: F) -> bool
where
    F: std::future::Future<Output = Result<T, hatch::orch::OrchError>>,
{
    rig.faults.fail_next(step);
    let result = op.await;
    rig.faults.clear();
    // Let watchers of exited processes record what they saw.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let context = format!("{what} with {step:?} failing");
    rig.orch
        .reconcile_now()
        .await
        .unwrap_or_else(|e| panic!("{context}: reconcile: {e}"));
    assert_settled(rig, &context).await;
    result.is_ok()
}

async fn state_of(rig: &Rig, id: &str) -> VmState {
    rig.orch.get_vm(id).await.unwrap().state
}

/// A VM in `state`, made without faults.
async fn vm_in(rig: &Rig, req: CreateVm, state: VmState) -> String {
    let vm = rig.orch.create_vm(req).await.unwrap();
    match state {
        VmState::Running => {}
        VmState::Stopped => {
            rig.orch.stop_vm(&vm.id).await.unwrap();
        }
        VmState::Snapshotted => {
            rig.orch.snapshot_vm(&vm.id).await.unwrap();
        }
        other => panic!("no recipe for {other:?}"),
    }
    assert_eq!(state_of(rig, &vm.id).await, state);
    vm.id
}

#[test]
fn a_failed_create_holds_nothing() {
    in_netns(|| async {
        let rig = rig().await;
        for req in [networked(), offline()] {
            for step in Step::ALL {
                let before = rig.orch.list_vms().await.unwrap().len();
                let created = with_fault(&rig, step, "create", rig.orch.create_vm(req.clone())).await;
                let after = rig.orch.list_vms().await.unwrap().len();
                assert_eq!(after, before + usize::from(created), "create with {step:?} failing");
                if created {
                    let vms = rig.orch.list_vms().await.unwrap();
                    let newest = vms.iter().max_by_key(|vm| vm.created_at).unwrap();
                    assert_eq!(newest.state, VmState::Running);
                    rig.orch.delete_vm(&newest.id).await.unwrap();
                }
            }
        }
        // The steps create goes through did fail, and left nothing.
        let failed = rig.faults.failed();
        for step in [Step::Allocate, Step::Attach, Step::Launch] {
            assert!(failed.contains(&step), "{step:?} never failed: {failed:?}");
        }
        assert!(rig.orch.list_vms().await.unwrap().is_empty());
        assert!(rig.network.attached().is_empty());
        assert!(rig.hypervisor.live().is_empty());
    });
}

#[test]
fn start_and_stop_with_failures_settle() {
    in_netns(|| async {
        let rig = rig().await;
        let id = vm_in(&rig, networked(), VmState::Stopped).await;
        for step in Step::ALL {
            with_fault(&rig, step, "start", rig.orch.start_vm(&id)).await;
            match state_of(&rig, &id).await {
                VmState::Running => {}
                VmState::Stopped | VmState::Error => {
                    rig.orch.start_vm(&id).await.unwrap();
                }
                other => panic!("start with {step:?} failing left {other:?}"),
            }
            with_fault(&rig, step, "stop", rig.orch.stop_vm(&id)).await;
            if state_of(&rig, &id).await == VmState::Running {
                rig.orch.stop_vm(&id).await.unwrap();
            }
            assert_eq!(state_of(&rig, &id).await, VmState::Stopped);
        }
        assert!(rig.faults.failed().contains(&Step::Launch));
        assert!(rig.faults.failed().contains(&Step::Attach));
    });
}

#[test]
fn snapshot_and_restore_with_failures_settle() {
    in_netns(|| async {
        let rig = rig().await;
        let id = vm_in(&rig, networked(), VmState::Running).await;
        for step in Step::ALL {
            let saved = with_fault(&rig, step, "snapshot", rig.orch.snapshot_vm(&id)).await;
            let state = state_of(&rig, &id).await;
            if saved {
                assert_eq!(state, VmState::Snapshotted);
            } else {
                // A failed snapshot leaves the guest running, unpaused.
                assert_eq!(state, VmState::Running, "snapshot with {step:?} failing");
                assert_eq!(rig.hypervisor.live().len(), 1);
                rig.orch.snapshot_vm(&id).await.unwrap();
            }
            let restored = with_fault(&rig, step, "restore", rig.orch.restore_vm(&id, None)).await;
            let state = state_of(&rig, &id).await;
            if restored {
                assert_eq!(state, VmState::Running);
            } else {
                // A failed restore keeps the snapshot, to try again.
                assert_eq!(state, VmState::Snapshotted, "restore with {step:?} failing");
                assert!(!rig.store.list_snapshots(&id).unwrap().is_empty());
                rig.orch.restore_vm(&id, None).await.unwrap();
            }
            assert_eq!(state_of(&rig, &id).await, VmState::Running);
            assert_eq!(rig.hypervisor.live().len(), 1);
        }
        let failed = rig.faults.failed();
        for step in [Step::Pause, Step::SaveSnapshot, Step::Restore, Step::Attach] {
            assert!(failed.contains(&step), "{step:?} never failed: {failed:?}");
        }

        // Storing runs after the snapshot, in the background: when it fails
        // the snapshot stays local (still restorable), and the reconciler
        // stores it later.
        rig.faults.fail_next(Step::Put);
        let first = rig.orch.snapshot_vm(&id).await.unwrap();
        rig.orch.wait_for_snapshot_storage().await;
        rig.faults.clear();
        assert!(rig.faults.failed().contains(&Step::Put));
        let listed = rig.store.list_snapshots(&id).unwrap();
        assert!(!listed[0].durable, "stored despite the failure: {listed:?}");
        rig.orch.reconcile_now().await.unwrap();
        assert_settled(&rig, "after a failed store").await;
        assert!(rig.store.list_snapshots(&id).unwrap()[0].durable);

        // An older snapshot is loaded from the store: a failing Get leaves
        // the VM snapshotted, to try again.
        rig.orch.restore_vm(&id, None).await.unwrap();
        rig.orch.snapshot_vm(&id).await.unwrap();
        let restored = with_fault(&rig, Step::Get, "restore", rig.orch.restore_vm(&id, Some(&first.id))).await;
        assert!(!restored);
        assert_eq!(state_of(&rig, &id).await, VmState::Snapshotted);
        rig.orch.restore_vm(&id, Some(&first.id)).await.unwrap();
        assert_eq!(state_of(&rig, &id).await, VmState::Running);
    });
}

#[test]
fn delete_with_failures_settles_and_a_retry_removes_everything() {
    in_netns(|| async {
        let rig = rig().await;
        for start in [VmState::Running, VmState::Stopped, VmState::Snapshotted] {
            for step in Step::ALL {
                let id = vm_in(&rig, networked(), start).await;
                // A delete that fails part-way stays `deleting` (recorded
                // before any host effect) and the reconciler finishes it.
                with_fault(&rig, step, "delete", rig.orch.delete_vm(&id)).await;
                assert!(
                    rig.orch.get_vm(&id).await.is_err(),
                    "{id} still there after {step:?} failed"
                );
            }
        }
        assert!(rig.orch.list_vms().await.unwrap().is_empty());
        assert!(rig.network.attached().is_empty());
        assert!(rig.hypervisor.live().is_empty());
        assert!(files_under(rig.snapshots.root()).is_empty());
    });
}

/// A delete whose network detach fails is recorded `deleting`, never left
/// `running` without a VMM, and the reconciler finishes it.
#[test]
fn a_failed_delete_leaves_no_running_vm_without_a_vmm() {
    in_netns(|| async {
        let rig = rig().await;
        let id = vm_in(&rig, networked(), VmState::Running).await;
        rig.faults.fail_next(Step::Detach);
        assert!(rig.orch.delete_vm(&id).await.is_err());
        rig.faults.clear();
        assert_eq!(state_of(&rig, &id).await, VmState::Deleting);
        assert!(rig.hypervisor.live().is_empty(), "the VMM must be gone");
        rig.orch.reconcile_now().await.unwrap();
        assert!(
            rig.orch.get_vm(&id).await.is_err(),
            "the reconciler must finish the delete"
        );
        assert_settled(&rig, "after the reconciler").await;
    });
}

/// Create records the undo of the network attachment before attaching, so
/// an attach that fails halfway (TAP made, DHCP failing) is undone too.
#[test]
fn a_create_whose_attach_fails_partway_holds_nothing() {
    in_netns(|| async {
        let rig = rig().await;
        let created = with_fault(&rig, Step::AttachPartly, "create", rig.orch.create_vm(networked())).await;
        assert!(!created);
    });
}

#[test]
fn a_vmm_that_exits_on_its_own_is_recorded_and_released() {
    in_netns(|| async {
        let rig = rig().await;
        let crashing = vm_in(&rig, networked(), VmState::Running).await;
        let halting = vm_in(&rig, offline(), VmState::Running).await;
        assert!(rig.hypervisor.exit(&crashing, 1));
        assert!(rig.hypervisor.exit(&halting, 0));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while state_of(&rig, &crashing).await == VmState::Running || state_of(&rig, &halting).await == VmState::Running
        {
            assert!(tokio::time::Instant::now() < deadline, "exits not recorded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(state_of(&rig, &crashing).await, VmState::Error);
        assert_eq!(state_of(&rig, &halting).await, VmState::Stopped);
        assert!(rig.hypervisor.live().is_empty());
        assert_settled(&rig, "after VMM exits").await;
        // Both start again.
        for id in [&crashing, &halting] {
            rig.orch.start_vm(id).await.unwrap();
        }
        assert_eq!(rig.hypervisor.live().len(), 2);
        assert_settled(&rig, "restarted").await;
    });
}

#[test]
fn start_up_with_failing_host_steps_is_an_error_and_holds_nothing() {
    in_netns(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(common::daemon::test_config(dir.path()));
        let store = Store::open(&Store::path_in(dir.path())).unwrap();
        for step in [Step::EnsureHost, Step::Reconcile] {
            let faults = Faults::new();
            faults.fail_next(step);
            let hypervisor = FakeHypervisor::new(faults.clone());
            let network = FakeNetwork::new(faults.clone(), config.net.clone());
            let snapshots = FakeSnapshotStore::new(faults.clone(), LocalStore::under_data_dir(dir.path()));
            let started = Orchestrator::start_with(
                config.clone(),
                store.clone(),
                hypervisor.clone(),
                network.clone(),
                snapshots,
            )
            .await;
            assert!(started.is_err(), "start with {step:?} failing");
            assert!(hypervisor.live().is_empty() && network.attached().is_empty());
        }
    });
}
