//! `GET /vms` is answered from memory, each VM's JSON kept ready: the
//! answer must stay exactly what serialising the stored VMs gives (same
//! bytes: fields, order oldest first, warm-pool VMs left out, a member
//! seeing only its own), and every change of a VM shows in the very next
//! answer.
//!
//! VMs are written to the store directly (a fake image cannot boot), then
//! announced as orchestration announces its own writes.

use crate::common;

use common::daemon::{record_states, sample_image, sample_template, sample_vm, TestApi};
use hatch::model::{Vm, VmState};
use serde_json::json;

/// `GET /vms` as `key` sees it: status, content type and the body's bytes.
async fn list_bytes(api: &TestApi, key: &str) -> (u16, String, Vec<u8>) {
    let reply = api
        .client(Some(key))
        .request(hyper::Method::GET, "/vms", None)
        .await
        .expect("GET /vms");
    let content_type = reply
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (reply.status.as_u16(), content_type, reply.body.to_vec())
}

/// What `GET /vms` answered before it was kept in memory: the stored VMs
/// `keep` selects, oldest first, serialised (no agent connected: nothing boots here).
fn serialised(api: &TestApi, keep: impl Fn(&Vm) -> bool) -> Vec<u8> {
    let vms: Vec<Vm> = api.store.list_vms().unwrap().into_iter().filter(keep).collect();
    serde_json::to_vec(&vms).unwrap()
}

async fn assert_lists_match(api: &TestApi, member: &(String, String)) {
    let (status, content_type, body) = list_bytes(api, &api.admin_key).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let expected = serialised(api, |vm| vm.pool_template_id.is_none());
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&expected),
        "admin list"
    );
    let (status, _, body) = list_bytes(api, &member.1).await;
    assert_eq!(status, 200);
    let expected = serialised(api, |vm| vm.owner_key_id.as_deref() == Some(member.0.as_str()));
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&expected),
        "member list"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vm_list_is_the_stored_vms_serialised_and_shows_each_change_at_once() {
    let api = TestApi::start().await;
    let (status, key) = api
        .call(
            "POST",
            "/keys",
            Some(json!({ "name": "bob", "role": "member", "quotas": {} })),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let member = (
        key["id"].as_str().unwrap().to_string(),
        key["key"].as_str().unwrap().to_string(),
    );

    // Nothing yet: an empty array, for both.
    assert_lists_match(&api, &member).await;
    assert_eq!(list_bytes(&api, &api.admin_key).await.2, b"[]");

    let image = sample_image("base");
    api.store.insert_image(&image).unwrap();
    let template = sample_template(&image.id);
    api.store.insert_template(&template).unwrap();
    let write = |vm: &Vm| {
        api.store.insert_vm(vm, Some("created")).unwrap();
        api.written(&vm.id);
    };
    // Two created in the same instant (listed in the order they were
    // recorded), one the member's, one waiting in a warm pool (never listed).
    let first = sample_vm(&image.id, 1);
    let mut twin = sample_vm(&image.id, 2);
    twin.created_at = first.created_at;
    // Binary user data: shown as `user_data_base64`.
    twin.user_data = Some(vec![0x1f, 0x8b, 0xff, 0x00].into());
    let mut members = sample_vm(&image.id, 3);
    members.owner_key_id = Some(member.0.clone());
    let mut pooled = sample_vm(&image.id, 4);
    pooled.pool_template_id = Some(template.id.clone());
    for vm in [&first, &twin, &members, &pooled] {
        write(vm);
    }
    assert_lists_match(&api, &member).await;

    // A state change shows in the very next answer.
    let mut changed = twin.clone();
    record_states(
        &api.store,
        &mut changed,
        &[(VmState::Stopped, Some("stopped by request"))],
    );
    api.written(&changed.id);
    assert_lists_match(&api, &member).await;
    let (_, listed) = api.call("GET", "/vms", None).await;
    assert_eq!(listed[1]["id"], twin.id.as_str());
    assert_eq!(listed[1]["state"], "stopped");

    // So does a change of owner, a pool VM taken, and a deletion.
    api.store.set_vm_owner(&first.id, Some(&member.0)).unwrap();
    api.written(&first.id);
    assert!(api.store.take_pool_vm(&pooled, &template.id, &member.0).unwrap());
    api.written(&pooled.id);
    assert_lists_match(&api, &member).await;
    api.store.delete_vm(&members.id).unwrap();
    api.written(&members.id);
    assert_lists_match(&api, &member).await;
    let (_, listed) = api.call("GET", "/vms", None).await;
    let listed: Vec<Vm> = serde_json::from_value(listed).unwrap();
    let ids: Vec<String> = listed.into_iter().map(|vm| vm.id).collect();
    assert_eq!(ids, [first.id, twin.id, pooled.id]);
}
