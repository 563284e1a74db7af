//! A member key end to end with a real guest (QEMU TCG, `minimal` image):
//! its own VM boots, answers SSH, is snapshotted, restored, routed and
//! deleted; another member cannot see it; its quotas refuse the VM and the
//! route that would exceed them, leaving nothing on the host.

use crate::common;

use common::e2e::{Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::{json, Value};

const HTTPD: &str =
    "mkdir -p /www && echo \"hello from $(hostname)\" > /www/index.html && busybox httpd -p 8080 -h /www";

/// Creates a member key; returns (id, key).
fn member(daemon: &TestDaemon, name: &str, quotas: Value) -> (String, String) {
    let body = json!({ "name": name, "role": "member", "quotas": quotas });
    let (status, key) = daemon.api("POST", "/keys", Some(&body));
    assert_eq!(status, 201, "{key}");
    (
        key["id"].as_str().unwrap().to_string(),
        key["key"].as_str().unwrap().to_string(),
    )
}

/// What a refused create must not leave: TAPs, VM directories, VMM processes, rows.
fn host_state(topo: &Topology, daemon: &TestDaemon) -> (Vec<String>, Vec<String>, usize, usize) {
    let mut links: Vec<String> = topo
        .on_host("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    links.sort();
    let mut dirs: Vec<String> = std::fs::read_dir(daemon.data_path().join("vms"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    let (_, vms) = daemon.api("GET", "/vms", None);
    (links, dirs, daemon.vmm_pids().len(), vms.as_array().unwrap().len())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_runs_its_own_vm_end_to_end_within_its_quotas() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let (alice_id, alice) = member(&daemon, "alice", json!({ "max_vms": 1, "max_routes": 1 }));
    let (_, bob) = member(&daemon, "bob", json!({}));
    let as_alice =
        |method: &str, path: &str, body: Option<&Value>| daemon.request_with_key(method, path, body, Some(&alice));
    let ssh_key = TestKey::generate();

    // Alice creates a VM; it is hers and answers SSH.
    let body = json!({ "image_id": image_id, "ssh_authorized_keys": [ssh_key.public] });
    let (status, created) = as_alice("POST", "/vms?wait=ready&timeout=180", Some(&body));
    assert_eq!(status, 201, "{created}\n{}", daemon.log());
    assert_eq!(created["owner_key_id"], alice_id.as_str());
    let vm = VmView::from(&created);
    topo.ssh(&ssh_key, "root", vm.ssh_port, "echo mine > /root/marker");

    // Her max_vms is 1: the second create is refused and leaves nothing.
    let before = host_state(&topo, &daemon);
    let (status, refused) = as_alice("POST", "/vms", Some(&body));
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "quota_exceeded");
    assert_eq!(refused["error"]["field"], "max_vms");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("limit 1, in use 1"), "{message}");
    assert_eq!(host_state(&topo, &daemon), before, "no TAP, directory, process or row");

    // Bob cannot see or touch it.
    for (method, path) in [
        ("GET", format!("/vms/{}", vm.id)),
        ("POST", format!("/vms/{}/snapshot", vm.id)),
        ("DELETE", format!("/vms/{}", vm.id)),
    ] {
        let (status, reply) = daemon.request_with_key(method, &path, None, Some(&bob));
        assert_eq!(status, 404, "{method} {path}: {reply}");
    }
    let (_, bobs) = daemon.request_with_key("GET", "/vms", None, Some(&bob));
    assert_eq!(bobs, json!([]));

    // A route to her VM works through the proxy; a second one is over quota.
    topo.ssh(&ssh_key, "root", vm.ssh_port, HTTPD);
    let (status, route) = as_alice(
        "POST",
        &format!("/vms/{}/routes", vm.id),
        Some(&json!({ "subdomain": "alices", "target_port": 8080, "auto_wake": false })),
    );
    assert_eq!(status, 201, "{route}");
    assert_eq!(route["owner_key_id"], alice_id.as_str());
    let page = topo.on_host(
        "curl",
        &[
            "-sS",
            "--max-time",
            "60",
            "-H",
            "Host: alices.localhost",
            "http://127.0.0.1:9090/",
        ],
    );
    assert_eq!(page.trim(), format!("hello from {}", vm.id));
    let (status, refused) = as_alice(
        "POST",
        &format!("/vms/{}/routes", vm.id),
        Some(&json!({ "subdomain": "more", "target_port": 8080 })),
    );
    assert_eq!(
        (status, refused["error"]["field"].as_str()),
        (403, Some("max_routes")),
        "{refused}"
    );

    // Snapshot and restore: her file survives.
    let (status, snapshot) = as_alice("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert_eq!(status, 201, "{snapshot}\n{}", daemon.log());
    assert_eq!(snapshot["owner_key_id"], alice_id.as_str());
    let (status, restored) = as_alice("POST", &format!("/vms/{}/restore", vm.id), None);
    assert_eq!(
        (status, restored["state"].as_str()),
        (200, Some("running")),
        "{restored}"
    );
    let marker = topo.ssh(&ssh_key, "root", vm.ssh_port, "cat /root/marker");
    assert_eq!(marker.trim(), "mine");

    // Her usage, then delete: nothing left on the host.
    let (_, me) = as_alice("GET", "/keys/me", None);
    assert_eq!(
        (me["usage"]["vms"].as_u64(), me["usage"]["routes"].as_u64()),
        (Some(1), Some(1)),
        "{me}"
    );
    let (status, _) = as_alice("DELETE", &format!("/vms/{}", vm.id), None);
    assert_eq!(status, 204);
    topo.assert_nothing_left(&daemon, &vm);

    // The admin's audit log has her requests.
    let (_, audit) = daemon.api("GET", "/audit?limit=50", None);
    let hers: Vec<(String, u64)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["key_id"] == alice_id.as_str())
        .map(|e| {
            (
                format!("{} {}", e["method"].as_str().unwrap(), e["path"].as_str().unwrap()),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(hers.first(), Some(&(format!("DELETE /vms/{}", vm.id), 204)), "{hers:?}");
    assert!(hers.contains(&("POST /vms".to_string(), 403)), "{hers:?}");
    assert!(hers.contains(&("POST /vms".to_string(), 201)), "{hers:?}");
}
