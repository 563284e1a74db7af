//! Quotas are checked in the same step as the create they limit: however
//! many creates race, a key never ends up past its quota (fake hypervisor,
//! network and snapshot storage; see `common::fakes`).

use std::sync::Arc;

use crate::common;

use common::daemon::sample_image;
use common::fakes::{FakeHypervisor, FakeNetwork, FakeSnapshotStore, Faults};
use common::netns::TestNetns;
use hatch::model::{QuotaKind, Quotas, Role, VmState};
use hatch::orch::{CreateRoute, CreateVm, OrchError, Orchestrator};
use hatch::snapshot::LocalStore;
use hatch::store::Store;

fn quota_refusal(result: &Result<impl std::fmt::Debug, OrchError>) -> Option<(QuotaKind, u64, u64)> {
    match result {
        Err(OrchError::QuotaExceeded(e)) => Some((e.kind, e.limit, e.used)),
        _ => None,
    }
}

#[test]
fn racing_creates_never_take_a_key_past_its_quotas() {
    TestNetns::new().block_on(|| async {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let config = Arc::new(common::daemon::test_config(&data_dir));
        let store = Store::open(&Store::path_in(&data_dir)).unwrap();
        store.insert_image(&sample_image("fake")).unwrap();
        let faults = Faults::new();
        let orch = Orchestrator::start_with(
            config.clone(),
            store.clone(),
            FakeHypervisor::new(faults.clone()),
            FakeNetwork::new(faults.clone(), config.net.clone()),
            FakeSnapshotStore::new(faults, LocalStore::under_data_dir(&data_dir)),
        )
        .await
        .unwrap();
        let quotas = Quotas {
            max_vms: Some(2),
            max_snapshots: Some(1),
            max_routes: Some(1),
            ..Quotas::default()
        };
        let (key, _) = store.create_api_key("capped", Role::Member, quotas).unwrap();

        // Six creates at once: two pass, four are refused naming max_vms.
        let creates = (0..6).map(|_| {
            let orch = orch.clone();
            let owner = Some(key.id.clone());
            tokio::spawn(async move {
                orch.create_vm(CreateVm {
                    enable_network: Some(true),
                    owner,
                    ..Default::default()
                })
                .await
            })
        });
        let results: Vec<_> = futures_util::future::join_all(creates)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let created: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(created.len(), 2, "{results:?}");
        for refused in results.iter().filter(|r| r.is_err()) {
            assert_eq!(quota_refusal(refused), Some((QuotaKind::Vms, 2, 2)), "{refused:?}");
        }
        let owned = store.list_vms_of(&key.id).unwrap();
        assert_eq!(owned.len(), 2);
        assert!(owned.iter().all(|vm| vm.state == VmState::Running));
        assert_eq!(store.list_vms().unwrap().len(), 2, "refused creates left no row");
        let dirs = std::fs::read_dir(data_dir.join("vms")).unwrap().count();
        assert_eq!(dirs, 2, "refused creates left no directory");

        // Both VMs snapshotted at once with max_snapshots 1: one passes; the
        // other VM is refused before it is paused and keeps running.
        let (a, b) = (owned[0].id.clone(), owned[1].id.clone());
        let (first, second) = tokio::join!(orch.snapshot_vm(&a), orch.snapshot_vm(&b));
        let refusals = [quota_refusal(&first), quota_refusal(&second)];
        assert_eq!(
            refusals.iter().filter(|r| r.is_some()).count(),
            1,
            "{first:?} {second:?}"
        );
        assert!(refusals.contains(&Some((QuotaKind::Snapshots, 1, 1))));
        let still_running = if first.is_err() { &a } else { &b };
        assert_eq!(store.get_vm(still_running).unwrap().unwrap().state, VmState::Running);
        assert!(store.list_incomplete_snapshots().unwrap().is_empty());
        assert_eq!(store.usage_of(&key.id).unwrap().snapshots, 1);

        // Routes at once on the running VM with max_routes 1: one passes.
        let route = |subdomain: &str| CreateRoute {
            subdomain: Some(subdomain.to_string()),
            target_port: 80,
            auto_wake: false,
        };
        let (r1, r2) = tokio::join!(
            orch.create_route(still_running, route("one"), |s| Some(s.to_string())),
            orch.create_route(still_running, route("two"), |s| Some(s.to_string())),
        );
        assert_eq!(
            [r1.is_ok(), r2.is_ok()].iter().filter(|ok| **ok).count(),
            1,
            "{r1:?} {r2:?}"
        );
        let refused = if r1.is_err() { &r1 } else { &r2 };
        assert_eq!(quota_refusal(refused), Some((QuotaKind::Routes, 1, 1)));
        assert_eq!(store.list_routes(still_running).unwrap().len(), 1);
        orch.shutdown(std::time::Duration::from_secs(30)).await;
    });
}
