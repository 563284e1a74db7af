//! Warm pool VMs in the store: a template's `warm_pool_size` round-trips;
//! a pool VM is found by the pool and taken exactly once, in one update
//! that gives it (and its history) to the taker; giving a pool VM away
//! takes it out of the pool.

use crate::common;

use common::daemon::{sample_image, sample_template, sample_vm, temp_store};
use hatch::model::VmState;

#[test]
fn a_pool_vm_is_taken_once_and_becomes_the_takers() {
    let (_dir, store) = temp_store();
    let image = sample_image("minimal");
    store.insert_image(&image).unwrap();
    let mut template = sample_template(&image.id);
    template.warm_pool_size = 2;
    store.insert_template(&template).unwrap();
    assert_eq!(store.get_template(&template.id).unwrap().unwrap().warm_pool_size, 2);

    let mut pooled = sample_vm(&image.id, 1);
    pooled.state = VmState::Snapshotted;
    pooled.pool_template_id = Some(template.id.clone());
    store.insert_vm(&pooled, Some("created")).unwrap();
    let other = sample_vm(&image.id, 2);
    store.insert_vm(&other, Some("created")).unwrap();
    let in_pool: Vec<String> = store.list_pool_vms().unwrap().into_iter().map(|vm| vm.id).collect();
    assert_eq!(in_pool, [pooled.id.clone()]);
    // An update from an older copy never puts it back in the pool or takes it out.
    let mut stale = store.get_vm(&pooled.id).unwrap().unwrap();
    stale.pool_template_id = None;
    store.update_vm(&stale).unwrap();
    assert_eq!(
        store.get_vm(&pooled.id).unwrap().unwrap().pool_template_id.as_deref(),
        Some(template.id.as_str())
    );

    let mut taken = store.get_vm(&pooled.id).unwrap().unwrap();
    taken.created_at += chrono::Duration::seconds(60);
    assert!(
        !store.take_pool_vm(&taken, "tpl-other", "key-a").unwrap(),
        "another template's pool"
    );
    assert!(store.take_pool_vm(&taken, &template.id, "key-a").unwrap());
    assert!(
        !store.take_pool_vm(&taken, &template.id, "key-b").unwrap(),
        "taken twice"
    );
    let now = store.get_vm(&pooled.id).unwrap().unwrap();
    assert_eq!(now.owner_key_id.as_deref(), Some("key-a"));
    assert_eq!(now.pool_template_id, None);
    assert_eq!(now.created_at, taken.created_at);
    assert_eq!(store.usage_of("key-a").unwrap().vms, 1);
    assert!(store.list_pool_vms().unwrap().is_empty());
    let history = store.list_transitions(&pooled.id).unwrap();
    assert!(history
        .last()
        .and_then(|e| e.reason.as_deref())
        .is_some_and(|r| r.contains("warm pool")));

    // An admin giving a pool VM away takes it out of the pool.
    let mut second = sample_vm(&image.id, 3);
    second.pool_template_id = Some(template.id.clone());
    store.insert_vm(&second, Some("created")).unwrap();
    assert!(store.set_vm_owner(&second.id, Some("key-b")).unwrap());
    assert!(store.list_pool_vms().unwrap().is_empty());
}
