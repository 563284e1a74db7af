//! The store against a real SQLite file: round trips, ordering, conflicts.

use crate::common;

use common::daemon::{record_states, sample_image, sample_template, sample_vm, temp_store};
use hatch::model::{NetworkIdentity, VmState};
use hatch::store::{Store, StoreError};

#[test]
fn images_round_trip_newest_first_and_find_by_name() {
    let (_dir, store) = temp_store();
    assert!(store.list_images().unwrap().is_empty());
    assert!(store.newest_image().unwrap().is_none());
    let older = sample_image("debian");
    let mut newer = sample_image("debian");
    newer.created_at = older.created_at + chrono::Duration::seconds(5);
    store.insert_image(&older).unwrap();
    store.insert_image(&newer).unwrap();

    assert_eq!(store.get_image(&older.id).unwrap(), Some(older.clone()));
    let listed: Vec<String> = store.list_images().unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(listed, vec![newer.id.clone(), older.id.clone()]);
    assert_eq!(store.newest_image().unwrap().unwrap().id, newer.id);
    assert_eq!(store.find_image("debian").unwrap().unwrap().id, newer.id);
    assert_eq!(store.find_image(&older.id).unwrap().unwrap().id, older.id);
    assert!(store.find_image("nope").unwrap().is_none());

    assert!(matches!(
        store.insert_image(&older),
        Err(StoreError::Conflict { field: "id" })
    ));
    assert!(store.delete_image(&older.id).unwrap());
    assert!(!store.delete_image(&older.id).unwrap());
    assert!(store.get_image(&older.id).unwrap().is_none());
}

#[test]
fn images_in_use_by_templates_and_vms() {
    let (_dir, store) = temp_store();
    let image = sample_image("base");
    store.insert_image(&image).unwrap();
    assert!(!store.images_in_use(&image.id).unwrap());

    let mut template = sample_template(&image.id);
    template.lifetime = lifetime();
    store.insert_template(&template).unwrap();
    assert!(store.images_in_use(&image.id).unwrap());
    assert_eq!(store.get_template(&template.id).unwrap(), Some(template.clone()));
    assert_eq!(store.list_templates().unwrap(), vec![template.clone()]);
    assert!(store.delete_template(&template.id).unwrap());
    assert!(!store.delete_template(&template.id).unwrap());
    assert!(!store.images_in_use(&image.id).unwrap());

    let vm = sample_vm(&image.id, 1);
    store.insert_vm(&vm, None).unwrap();
    assert!(store.images_in_use(&image.id).unwrap());
}

/// Every lifetime setting given.
fn lifetime() -> hatch::model::Lifetime {
    hatch::model::Lifetime {
        ttl_seconds: Some(hatch::model::LifetimeSeconds::new(3600).unwrap()),
        idle_timeout_seconds: Some(hatch::model::LifetimeSeconds::new(600).unwrap()),
        on_idle: Some(hatch::model::OnIdle::Stop),
    }
}

#[test]
fn vms_round_trip_update_and_delete() {
    let (_dir, store) = temp_store();
    let first = sample_vm("img-x", 1);
    let mut second = sample_vm("img-x", 2);
    second.network = None;
    second.enable_network = false;
    second.user_data = Some("#!/bin/sh\necho hi\n".into());
    second.ssh_authorized_keys = vec!["ssh-ed25519 AAAA k".into()];
    second.created_at = first.created_at + chrono::Duration::seconds(1);
    second.lifetime = lifetime();
    second.expires_at = second.lifetime.expires_at(second.created_at);
    store.insert_vm(&first, None).unwrap();
    store.insert_vm(&second, None).unwrap();

    assert_eq!(store.get_vm(&second.id).unwrap(), Some(second.clone()));
    let ids: Vec<String> = store.list_vms().unwrap().into_iter().map(|v| v.id).collect();
    assert_eq!(ids, vec![first.id.clone(), second.id.clone()], "oldest first");

    let mut changed = first.clone();
    changed.state = VmState::Stopped;
    changed.pid = None;
    changed.state_reason = Some("guest shut down".into());
    changed.ready_at = Some(hatch::model::now());
    assert!(store.update_vm(&changed).unwrap());
    assert_eq!(store.get_vm(&first.id).unwrap(), Some(changed));

    let mut ghost = sample_vm("img-x", 3);
    ghost.id = "vm-ghost".into();
    assert!(!store.update_vm(&ghost).unwrap());

    assert!(store.delete_vm(&first.id).unwrap());
    assert!(!store.delete_vm(&first.id).unwrap());
    assert!(store.get_vm(&first.id).unwrap().is_none());
}

#[test]
fn vm_network_identity_is_unique_per_field() {
    let (_dir, store) = temp_store();
    let owner = sample_vm("img-x", 1);
    store.insert_vm(&owner, None).unwrap();
    let owner_net = owner.network.clone().unwrap();

    type Take = fn(&mut NetworkIdentity, &NetworkIdentity);
    let cases: [(&str, Take); 4] = [
        ("guest_ip", |n, o| n.guest_ip = o.guest_ip),
        ("guest_mac", |n, o| n.guest_mac = o.guest_mac.clone()),
        ("tap_name", |n, o| n.tap_name = o.tap_name.clone()),
        ("ssh_port", |n, o| n.ssh_port = o.ssh_port),
    ];
    for (expected, take) in cases {
        let mut other = sample_vm("img-x", 2);
        take(other.network.as_mut().unwrap(), &owner_net);
        match store.insert_vm(&other, None) {
            Err(StoreError::Conflict { field }) => assert_eq!(field, expected),
            other => panic!("{expected}: expected a conflict, got {other:?}"),
        }
        assert!(
            store.get_vm(&other.id).unwrap().is_none(),
            "{expected}: nothing inserted"
        );
    }
    let mut same_id = sample_vm("img-x", 3);
    same_id.id = owner.id.clone();
    assert!(matches!(
        store.insert_vm(&same_id, None),
        Err(StoreError::Conflict { field: "id" })
    ));

    // Updating into a taken identity is refused too.
    let mut other = sample_vm("img-x", 4);
    store.insert_vm(&other, None).unwrap();
    other.network.as_mut().unwrap().ssh_port = owner_net.ssh_port;
    assert!(matches!(
        store.update_vm(&other),
        Err(StoreError::Conflict { field: "ssh_port" })
    ));
}

#[test]
fn transitions_are_recorded_in_order_and_outlive_the_vm() {
    let (_dir, store) = temp_store();
    let mut vm = sample_vm("img-x", 1);
    vm.state = VmState::Starting;
    store.insert_vm(&vm, None).unwrap();
    record_states(
        &store,
        &mut vm,
        &[(VmState::Running, None), (VmState::Error, Some("exit code 1"))],
    );
    // A repair is recorded beside the state changes without changing the state.
    store.record_vm_repair(&vm.id, VmState::Error, "TAP recreated").unwrap();
    let events = store.list_transitions(&vm.id).unwrap();
    let steps: Vec<(Option<VmState>, VmState)> = events.iter().map(|e| (e.from_state, e.to_state)).collect();
    assert_eq!(
        steps,
        vec![
            (None, VmState::Starting),
            (Some(VmState::Starting), VmState::Running),
            (Some(VmState::Running), VmState::Error),
            (Some(VmState::Error), VmState::Error)
        ]
    );
    assert_eq!(events[2].reason.as_deref(), Some("exit code 1"));
    assert_eq!(events[3].kind, hatch::store::EventKind::Repair);
    assert_eq!(store.get_vm(&vm.id).unwrap().unwrap().state, VmState::Error);
    store.delete_vm(&vm.id).unwrap();
    // The events outlive the VM; its deletion is the last one.
    assert_eq!(store.list_transitions(&vm.id).unwrap().len(), 4);
    let filter = hatch::store::EventFilter {
        vm_id: Some(vm.id.clone()),
        owner_key_id: None,
    };
    let log = store.events_after(0, &filter, 100).unwrap();
    assert_eq!(log.len(), 5);
    assert!(log.windows(2).all(|w| w[0].id < w[1].id));
    let last = log.last().unwrap();
    assert_eq!(
        (last.kind, last.from_state, last.to_state),
        (hatch::store::EventKind::State, Some(VmState::Error), None)
    );
}

#[test]
fn api_keys_verify_revoke_and_count() {
    let (_dir, store) = temp_store();
    assert_eq!(store.count_active_api_keys().unwrap(), 0);
    let (info, plaintext) = store
        .create_api_key("ci", hatch::model::Role::Member, Default::default())
        .unwrap();
    let (_other, other_plain) = store
        .create_api_key("laptop", hatch::model::Role::Member, Default::default())
        .unwrap();
    assert_ne!(plaintext, other_plain);
    assert!(plaintext.starts_with(&info.prefix));
    assert!(plaintext.len() > 40, "keys carry enough randomness");
    assert_eq!(store.count_active_api_keys().unwrap(), 2);

    assert_eq!(
        store.verify_api_key(&plaintext).unwrap().map(|k| k.id),
        Some(info.id.clone())
    );
    assert!(store.verify_api_key("hatch_wrong").unwrap().is_none());
    assert!(store.verify_api_key("").unwrap().is_none());

    // The database never holds the plaintext.
    let listed = store.list_api_keys().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(serde_json::to_string(&listed).unwrap().find(&plaintext).is_none());

    assert!(store.revoke_api_key(&info.id).unwrap());
    assert!(!store.revoke_api_key(&info.id).unwrap(), "already revoked");
    assert!(store.verify_api_key(&plaintext).unwrap().is_none());
    assert!(store.verify_api_key(&other_plain).unwrap().is_some());
    assert_eq!(store.count_active_api_keys().unwrap(), 1);
    assert!(store.list_api_keys().unwrap()[0].revoked_at.is_some());
}

#[test]
fn state_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = Store::path_in(dir.path());
    let vm = sample_vm("img-x", 7);
    {
        let store = Store::open(&path).unwrap();
        store.insert_vm(&vm, None).unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.get_vm(&vm.id).unwrap(), Some(vm));
}

#[test]
fn clones_share_one_database() {
    let store = Store::open_in_memory().unwrap();
    let clone = store.clone();
    let image = sample_image("shared");
    store.insert_image(&image).unwrap();
    assert_eq!(clone.get_image(&image.id).unwrap(), Some(image));
}

#[test]
fn an_unusable_location_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let path = not_a_dir.join("hatch.db");
    let error = Store::open(&path)
        .expect_err("a file cannot hold a database")
        .to_string();
    assert!(error.contains(&not_a_dir.display().to_string()), "{error}");
}
