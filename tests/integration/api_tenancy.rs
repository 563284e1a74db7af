//! Tenancy through the API: member keys see and change only what they own
//! (another owner's object is 404), cannot call admin endpoints (403),
//! quotas refuse the create that would exceed them leaving nothing behind,
//! a burst beyond the rate limit gets 429 with Retry-After, every mutating
//! request is audited, and a revoked key's VMs can be reassigned.
//!
//! Objects another key owns are written to the store directly (a fake
//! image cannot boot); every check goes through the real API server.

use crate::common;

use common::daemon::{error_parts, sample_image, sample_vm, test_public_key, TestApi};
use hatch::config::RateLimit;
use hatch::model::{now, random_id, Route, Snapshot, Vm, VmState};
use serde_json::{json, Value};

struct Key {
    id: String,
    key: String,
}

async fn new_key(api: &TestApi, name: &str, role: &str, quotas: Value) -> Key {
    let (status, body) = api
        .call(
            "POST",
            "/keys",
            Some(json!({ "name": name, "role": role, "quotas": quotas })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["role"], role);
    Key {
        id: body["id"].as_str().unwrap().to_string(),
        key: body["key"].as_str().unwrap().to_string(),
    }
}

async fn member(api: &TestApi, name: &str) -> Key {
    new_key(api, name, "member", json!({})).await
}

fn image(api: &TestApi) -> String {
    let image = sample_image("base");
    api.store.insert_image(&image).unwrap();
    image.id
}

/// A VM owned by `owner`, recorded as orchestration would (network off so
/// the host is not involved).
fn owned_vm(api: &TestApi, image_id: &str, owner: &str, n: u8, state: VmState) -> Vm {
    let mut vm = sample_vm(image_id, n);
    vm.state = state;
    vm.pid = None;
    vm.owner_key_id = Some(owner.to_string());
    api.store.insert_vm(&vm, None).unwrap();
    api.written(&vm.id);
    vm
}

fn owned_snapshot(api: &TestApi, vm: &Vm) -> Snapshot {
    let snapshot = Snapshot {
        id: random_id("snap", 10),
        vm_id: vm.id.clone(),
        created_at: now(),
        hypervisor: "qemu".into(),
        artefacts: vec![],
        total_bytes: 0,
        complete: true,
        durable: true,
        hot_checksums: Default::default(),
        owner_key_id: vm.owner_key_id.clone(),
    };
    api.store.upsert_snapshot(&snapshot).unwrap();
    snapshot
}

fn owned_route(api: &TestApi, vm: &Vm) -> Route {
    let route = Route {
        id: random_id("rt", 10),
        vm_id: vm.id.clone(),
        subdomain: random_id("app", 6),
        target_port: 8080,
        auto_wake: true,
        created_at: now(),
        owner_key_id: vm.owner_key_id.clone(),
    };
    api.store.insert_route(&route).unwrap();
    api.written(&vm.id);
    route
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_member_sees_and_changes_only_what_it_owns() {
    let api = TestApi::start().await;
    let image_id = image(&api);
    let (alice, bob) = (member(&api, "alice").await, member(&api, "bob").await);

    // Alice's VM, snapshot, route and template; Bob's own VM.
    let vm = owned_vm(&api, &image_id, &alice.id, 1, VmState::Stopped);
    let snapshot = owned_snapshot(&api, &vm);
    let route = owned_route(&api, &vm);
    let (status, template) = api
        .call_as(
            &alice.key,
            "POST",
            "/templates",
            Some(json!({ "name": "t", "image_id": image_id, "ssh_authorized_keys": [test_public_key()] })),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    assert_eq!(template["owner_key_id"], alice.id.as_str());
    let template_id = template["id"].as_str().unwrap().to_string();
    let bobs_vm = owned_vm(&api, &image_id, &bob.id, 2, VmState::Stopped);
    // And one of the admin's.
    let (status, admins_template) = api
        .call("POST", "/templates", Some(json!({ "name": "a", "image_id": image_id })))
        .await;
    assert_eq!(status, 201);
    let admins_template = admins_template["id"].as_str().unwrap().to_string();

    // Bob: Alice's and the admin's objects do not exist.
    let v = &vm.id;
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/vms/{v}"), None),
        ("DELETE", format!("/vms/{v}"), None),
        ("POST", format!("/vms/{v}/stop"), None),
        ("POST", format!("/vms/{v}/start"), None),
        ("GET", format!("/vms/{v}/logs"), None),
        ("GET", format!("/vms/{v}/events"), None),
        ("POST", format!("/vms/{v}/snapshot"), None),
        ("POST", format!("/vms/{v}/restore"), None),
        ("GET", format!("/vms/{v}/snapshots"), None),
        ("POST", format!("/vms/{v}/routes"), Some(json!({ "target_port": 80 }))),
        ("GET", format!("/vms/{v}/routes"), None),
        ("DELETE", format!("/snapshots/{}", snapshot.id), None),
        ("DELETE", format!("/routes/{}", route.id), None),
        ("GET", format!("/templates/{template_id}"), None),
        ("DELETE", format!("/templates/{template_id}"), None),
        ("GET", format!("/templates/{admins_template}"), None),
    ];
    for (method, path, body) in cases {
        let (status, reply) = api.call_as(&bob.key, method, &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {reply}");
        assert_eq!(error_parts(&reply).0, "not_found", "{method} {path}");
    }
    // Restoring his own VM from Alice's snapshot: as if it did not exist.
    let (status, reply) = api
        .call_as(
            &bob.key,
            "POST",
            &format!("/vms/{}/restore", bobs_vm.id),
            Some(json!({ "snapshot_id": snapshot.id })),
        )
        .await;
    assert_eq!(
        (status, error_parts(&reply)),
        (400, ("invalid_field".into(), Some("snapshot_id".into())))
    );
    // Nor can he create a VM from Alice's template.
    let (status, reply) = api
        .call_as(&bob.key, "POST", "/vms", Some(json!({ "template_id": template_id })))
        .await;
    assert_eq!(
        (status, error_parts(&reply)),
        (400, ("invalid_field".into(), Some("template_id".into())))
    );

    // His lists hold only his own.
    let (_, vms) = api.call_as(&bob.key, "GET", "/vms", None).await;
    assert_eq!(ids(&vms), vec![bobs_vm.id.clone()]);
    let (_, templates) = api.call_as(&bob.key, "GET", "/templates", None).await;
    assert_eq!(ids(&templates), Vec::<String>::new());
    // Any image may be used.
    let (status, images) = api.call_as(&bob.key, "GET", "/images", None).await;
    assert_eq!((status, ids(&images)), (200, vec![image_id.clone()]));

    // Nothing of Alice's changed, and she sees all of it.
    let (_, vms) = api.call_as(&alice.key, "GET", "/vms", None).await;
    assert_eq!(ids(&vms), vec![vm.id.clone()]);
    let (status, shown) = api.call_as(&alice.key, "GET", &format!("/vms/{v}"), None).await;
    assert_eq!((status, shown["state"].as_str()), (200, Some("stopped")));
    let (_, snapshots) = api
        .call_as(&alice.key, "GET", &format!("/vms/{v}/snapshots"), None)
        .await;
    assert_eq!(ids(&snapshots), vec![snapshot.id.clone()]);
    let (_, routes) = api.call_as(&alice.key, "GET", &format!("/vms/{v}/routes"), None).await;
    assert_eq!(ids(&routes), vec![route.id.clone()]);
    let (_, templates) = api.call_as(&alice.key, "GET", "/templates", None).await;
    assert_eq!(ids(&templates), vec![template_id.clone()]);

    // The admin sees everything, with the owning key.
    let (_, vms) = api.call("GET", "/vms", None).await;
    let owners: Vec<(String, String)> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| {
            (
                vm["id"].as_str().unwrap().to_string(),
                vm["owner_key_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        owners,
        vec![(vm.id.clone(), alice.id.clone()), (bobs_vm.id.clone(), bob.id.clone())]
    );
    let (_, templates) = api.call("GET", "/templates", None).await;
    assert_eq!(ids(&templates), vec![template_id.clone(), admins_template.clone()]);
    let (_, snapshots) = api.call("GET", &format!("/vms/{v}/snapshots"), None).await;
    assert_eq!(snapshots[0]["owner_key_id"], alice.id.as_str());

    // Alice deletes her own template; Bob's attempt above left it alone.
    let (status, _) = api
        .call_as(&alice.key, "DELETE", &format!("/templates/{template_id}"), None)
        .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn a_member_cannot_call_admin_endpoints() {
    let api = TestApi::start().await;
    let image_id = image(&api);
    let bob = member(&api, "bob").await;
    let vm = owned_vm(&api, &image_id, &bob.id, 1, VmState::Stopped);
    let (_, keys_before) = api.call("GET", "/keys", None).await;
    let admin_id = keys_before[0]["id"].as_str().unwrap().to_string();

    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "/keys".into(), Some(json!({ "name": "mine", "role": "admin" }))),
        ("GET", "/keys".into(), None),
        ("DELETE", format!("/keys/{admin_id}"), None),
        ("DELETE", format!("/keys/{}", bob.id), None),
        ("PATCH", format!("/keys/{}", bob.id), Some(json!({ "quotas": {} }))),
        (
            "POST",
            "/images".into(),
            Some(json!({ "name": "db", "rootfs_path": "/etc/hostname", "kernel_path": "/etc/hostname" })),
        ),
        ("DELETE", format!("/images/{image_id}"), None),
        ("GET", "/host/events".into(), None),
        ("GET", "/audit".into(), None),
        (
            "POST",
            format!("/vms/{}/owner", vm.id),
            Some(json!({ "key_id": bob.id })),
        ),
    ];
    for (method, path, body) in cases {
        let (status, reply) = api.call_as(&bob.key, method, &path, body).await;
        assert_eq!(status, 403, "{method} {path}: {reply}");
        assert_eq!(error_parts(&reply), ("forbidden".into(), None), "{method} {path}");
    }
    // Nothing was created, revoked or deleted.
    let (_, keys_after) = api.call("GET", "/keys", None).await;
    assert_eq!(keys_after, keys_before);
    assert_eq!(api.store.list_images().unwrap().len(), 1);

    // What every key may do.
    let (status, me) = api.call_as(&bob.key, "GET", "/keys/me", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["id"].as_str(), me["role"].as_str()),
        (Some(bob.id.as_str()), Some("member"))
    );
    assert_eq!(me["usage"]["vms"], 1);
    assert!(me.get("key").is_none());
    let (status, _) = api.call_as(&bob.key, "GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    let (status, me) = api.call("GET", "/keys/me", None).await;
    assert_eq!(
        (status, me["role"].as_str()),
        (200, Some("admin")),
        "the first key is admin"
    );
}

#[tokio::test]
async fn key_roles_and_quotas_are_validated() {
    let api = TestApi::start().await;
    let cases = [
        (json!({ "name": "k", "role": "root" }), "role"),
        (json!({ "name": "k", "role": 1 }), "role"),
        (json!({ "name": "k", "quotas": { "max_vms": -1 } }), "quotas.max_vms"),
        (json!({ "name": "k", "quotas": { "max_vms": 1.5 } }), "quotas.max_vms"),
        (
            json!({ "name": "k", "quotas": { "max_vcpus": 1_000_000_000_000u64 } }),
            "quotas.max_vcpus",
        ),
        (
            json!({ "name": "k", "quotas": { "max_mem_mib": "lots" } }),
            "quotas.max_mem_mib",
        ),
        (json!({ "name": "k", "quotas": { "max_disks": 1 } }), "quotas.max_disks"),
        (json!({ "name": "k", "quotas": 5 }), "quotas"),
    ];
    for (body, field) in cases {
        let (status, reply) = api.call("POST", "/keys", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(
            error_parts(&reply),
            ("invalid_field".into(), Some(field.into())),
            "{body}"
        );
    }
    let (_, keys) = api.call("GET", "/keys", None).await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "nothing created: {keys}");

    // A good one: role and quotas as given, the rest unlimited; default role member.
    let key = new_key(&api, "ci", "member", json!({ "max_vms": 2, "max_routes": 0 })).await;
    let (status, plain) = api.call("POST", "/keys", Some(json!({ "name": "plain" }))).await;
    assert_eq!((status, plain["role"].as_str()), (201, Some("member")));
    let (_, keys) = api.call("GET", "/keys", None).await;
    let listed = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key.id.as_str())
        .unwrap();
    assert_eq!(
        listed["quotas"],
        json!({ "max_vms": 2, "max_vcpus": null, "max_mem_mib": null, "max_snapshots": null, "max_routes": 0 })
    );

    // Quotas can be replaced; bad ones are refused the same way.
    let path = format!("/keys/{}", key.id);
    let (status, reply) = api
        .call("PATCH", &path, Some(json!({ "quotas": { "max_snapshots": -3 } })))
        .await;
    assert_eq!(
        (status, error_parts(&reply).1),
        (400, Some("quotas.max_snapshots".into()))
    );
    let (status, updated) = api
        .call("PATCH", &path, Some(json!({ "quotas": { "max_vcpus": 8 } })))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (
            updated["quotas"]["max_vcpus"].as_u64(),
            updated["quotas"]["max_vms"].as_u64()
        ),
        (Some(8), None)
    );
    let (status, _) = api.call("PATCH", "/keys/key-nope", Some(json!({ "quotas": {} }))).await;
    assert_eq!(status, 404);
}

/// `ip link` in the daemon's namespace, the VM directories and the VM rows.
fn host_view(api: &TestApi) -> (String, Vec<String>, Vec<String>) {
    let links = std::process::Command::new("ip")
        .args(["-n", api.netns().name(), "-o", "link", "show"])
        .output()
        .expect("ip link");
    let dirs = std::fs::read_dir(api.dir.path().join("vms"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let vms = api.store.list_vms().unwrap().into_iter().map(|vm| vm.id).collect();
    (String::from_utf8_lossy(&links.stdout).into_owned(), dirs, vms)
}

fn assert_quota(status: u16, reply: &Value, quota: &str, numbers: &str) {
    assert_eq!(status, 403, "{reply}");
    assert_eq!(
        error_parts(reply),
        ("quota_exceeded".into(), Some(quota.into())),
        "{reply}"
    );
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains(numbers), "{quota}: {message:?} should say {numbers:?}");
}

#[tokio::test]
async fn each_quota_refuses_the_create_that_would_exceed_it() {
    let api = TestApi::start().await;
    let image_id = image(&api);
    let key = new_key(
        &api,
        "capped",
        "member",
        json!({ "max_vms": 2, "max_vcpus": 2, "max_mem_mib": 1024, "max_snapshots": 1, "max_routes": 1 }),
    )
    .await;
    // One running VM (1 vCPU, 256 MiB) with one snapshot and one route.
    let vm = owned_vm(&api, &image_id, &key.id, 1, VmState::Running);
    owned_snapshot(&api, &vm);
    owned_route(&api, &vm);
    let before = host_view(&api);
    let create = |body: Value| {
        let mut body = body;
        body["image_id"] = json!(image_id);
        body["enable_network"] = json!(true);
        api.call_as(&key.key, "POST", "/vms", Some(body))
    };

    let (status, reply) = create(json!({ "vcpu_count": 2 })).await;
    assert_quota(status, &reply, "max_vcpus", "limit 2, in use 1, this request needs 2");
    let (status, reply) = create(json!({ "mem_mib": 1024 })).await;
    assert_quota(
        status,
        &reply,
        "max_mem_mib",
        "limit 1024, in use 256, this request needs 1024",
    );
    let (status, reply) = api
        .call_as(&key.key, "POST", &format!("/vms/{}/snapshot", vm.id), None)
        .await;
    assert_quota(status, &reply, "max_snapshots", "limit 1, in use 1");
    let (status, reply) = api
        .call_as(
            &key.key,
            "POST",
            &format!("/vms/{}/routes", vm.id),
            Some(json!({ "target_port": 9000 })),
        )
        .await;
    assert_quota(status, &reply, "max_routes", "limit 1, in use 1");
    // A second VM row of its own brings it to max_vms.
    owned_vm(&api, &image_id, &key.id, 2, VmState::Stopped);
    let before_vms = host_view(&api);
    let (status, reply) = create(json!({ "vcpu_count": 1 })).await;
    assert_quota(status, &reply, "max_vms", "limit 2, in use 2, this request needs 1");
    assert_eq!(host_view(&api), before_vms, "no VM row, TAP or directory");

    // Nothing was created by the refused requests.
    assert_eq!(before.0, host_view(&api).0, "no TAP");
    assert_eq!(api.store.list_snapshots(&vm.id).unwrap().len(), 1);
    assert!(api.store.list_incomplete_snapshots().unwrap().is_empty());
    assert_eq!(api.store.list_routes(&vm.id).unwrap().len(), 1);
    let (_, shown) = api.call_as(&key.key, "GET", &format!("/vms/{}", vm.id), None).await;
    assert_eq!(shown["state"], "running", "a refused snapshot leaves the VM running");

    // GET /keys/me shows the numbers.
    let (_, me) = api.call_as(&key.key, "GET", "/keys/me", None).await;
    assert_eq!(
        me["usage"],
        json!({ "vms": 2, "vcpus": 2, "mem_mib": 512, "snapshots": 1, "routes": 1 })
    );
    assert_eq!(me["quotas"]["max_vms"], 2);

    // The admin's own creates are not limited by the member's quotas.
    let other = owned_vm(&api, &image_id, &key.id, 3, VmState::Stopped);
    let (_, keys) = api.call("GET", "/keys", None).await;
    let admin_id = keys[0]["id"].as_str().unwrap().to_string();
    let (status, moved) = api
        .call(
            "POST",
            &format!("/vms/{}/owner", other.id),
            Some(json!({ "key_id": admin_id })),
        )
        .await;
    assert_eq!((status, moved["owner_key_id"].as_str()), (200, Some(admin_id.as_str())));
}

#[tokio::test]
async fn revoking_a_key_keeps_its_vms_and_an_admin_can_reassign_them() {
    let api = TestApi::start().await;
    let image_id = image(&api);
    let (alice, bob) = (member(&api, "alice").await, member(&api, "bob").await);
    let vm = owned_vm(&api, &image_id, &alice.id, 1, VmState::Stopped);
    let snapshot = owned_snapshot(&api, &vm);
    let route = owned_route(&api, &vm);

    let (status, _) = api.call("DELETE", &format!("/keys/{}", alice.id), None).await;
    assert_eq!(status, 204);
    let (status, _) = api.call_as(&alice.key, "GET", "/vms", None).await;
    assert_eq!(status, 401);
    let (status, shown) = api.call("GET", &format!("/vms/{}", vm.id), None).await;
    assert_eq!((status, shown["owner_key_id"].as_str()), (200, Some(alice.id.as_str())));

    // Not to a revoked or unknown key; not an unknown VM.
    let owner_path = format!("/vms/{}/owner", vm.id);
    for key_id in [alice.id.as_str(), "key-nope"] {
        let (status, reply) = api.call("POST", &owner_path, Some(json!({ "key_id": key_id }))).await;
        assert_eq!(
            (status, error_parts(&reply).1),
            (400, Some("key_id".into())),
            "{key_id}"
        );
    }
    let (status, _) = api
        .call("POST", "/vms/vm-nope/owner", Some(json!({ "key_id": bob.id })))
        .await;
    assert_eq!(status, 404);

    let (status, moved) = api.call("POST", &owner_path, Some(json!({ "key_id": bob.id }))).await;
    assert_eq!((status, moved["owner_key_id"].as_str()), (200, Some(bob.id.as_str())));
    // Bob now has the VM with its snapshot and route.
    let (_, vms) = api.call_as(&bob.key, "GET", "/vms", None).await;
    assert_eq!(ids(&vms), vec![vm.id.clone()]);
    let (_, snapshots) = api
        .call_as(&bob.key, "GET", &format!("/vms/{}/snapshots", vm.id), None)
        .await;
    assert_eq!(ids(&snapshots), vec![snapshot.id.clone()]);
    let (status, _) = api
        .call_as(&bob.key, "DELETE", &format!("/routes/{}", route.id), None)
        .await;
    assert_eq!(status, 204);

    // The last active admin key cannot be revoked; with a second one it can.
    let (_, keys) = api.call("GET", "/keys", None).await;
    let first_admin = keys[0]["id"].as_str().unwrap().to_string();
    let (status, reply) = api.call("DELETE", &format!("/keys/{first_admin}"), None).await;
    assert_eq!((status, error_parts(&reply).0), (409, "conflict".into()));
    let second = new_key(&api, "ops", "admin", json!({})).await;
    let (status, _) = api
        .call_as(&second.key, "DELETE", &format!("/keys/{first_admin}"), None)
        .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn mutating_requests_are_audited_newest_first() {
    let api = TestApi::start().await;
    let image_id = image(&api);
    let bob = member(&api, "bob").await;
    let (status, _) = api
        .call_as(
            &bob.key,
            "POST",
            "/templates",
            Some(json!({ "name": "t", "image_id": image_id })),
        )
        .await;
    assert_eq!(status, 201);
    api.call_as(&bob.key, "GET", "/vms", None).await;
    api.call_as(&bob.key, "DELETE", "/templates/tpl-nope", None).await;
    api.call_as(&bob.key, "POST", "/keys", Some(json!({ "name": "x" })))
        .await;
    let (status, _) = api
        .call_as("hatch_not_a_key", "POST", "/keys", Some(json!({ "name": "y" })))
        .await;
    assert_eq!(status, 401);

    let (status, entries) = api.call("GET", "/audit", None).await;
    assert_eq!(status, 200, "{entries}");
    let seen: Vec<(String, String, String, u64)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key_id"].as_str().unwrap_or("-").to_string(),
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let b = bob.id.clone();
    // Newest first; reads are not recorded; the admin's POST /keys that made Bob is the oldest.
    assert_eq!(
        seen[..3],
        [
            (b.clone(), "POST".into(), "/keys".into(), 403),
            (b.clone(), "DELETE".into(), "/templates/tpl-nope".into(), 404),
            (b.clone(), "POST".into(), "/templates".into(), 201),
        ]
    );
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(
        (seen[3].1.as_str(), seen[3].2.as_str(), seen[3].3),
        ("POST", "/keys", 201)
    );
    assert!(entries[0]["at"].is_string());

    let (_, one) = api.call("GET", "/audit?limit=1", None).await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    let (status, reply) = api.call("GET", "/audit?limit=0", None).await;
    assert_eq!((status, error_parts(&reply).1), (400, Some("limit".into())));
}

#[tokio::test]
async fn a_burst_beyond_the_rate_limit_gets_429_with_retry_after() {
    // 5 at once, then one a minute.
    let api = TestApi::start_with(|config| {
        config.rate_limit = Some(RateLimit {
            per_second: 1.0 / 60.0,
            burst: 5,
        })
    })
    .await;
    let image_id = image(&api);
    let bob = member(&api, "bob").await;
    let template = json!({ "name": "t", "image_id": image_id });
    for i in 0..5 {
        let (status, reply) = api
            .call_as(&bob.key, "POST", "/templates", Some(template.clone()))
            .await;
        assert_eq!(status, 201, "request {i} is within the burst: {reply}");
    }
    let reply = api
        .client(Some(&bob.key))
        .request(hyper::Method::POST, "/templates", Some(&template))
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 429);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(error_parts(&body), ("rate_limited".into(), None));
    let retry_after: u64 = reply.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        api.store.list_templates().unwrap().len(),
        5,
        "the refused request created nothing"
    );

    // Reads are not limited, nor are other keys.
    for _ in 0..20 {
        let (status, _) = api.call_as(&bob.key, "GET", "/templates", None).await;
        assert_eq!(status, 200);
    }
    let (status, _) = api.call("POST", "/templates", Some(template.clone())).await;
    assert_eq!(status, 201);
    // The refusal is audited.
    let (_, entries) = api.call("GET", "/audit?limit=2", None).await;
    assert_eq!(entries[1]["status"], 429);
}
