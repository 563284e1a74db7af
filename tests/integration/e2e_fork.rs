//! Fork and create-from-snapshot with real guests (QEMU TCG, the minimal
//! image with hatch-agent): each clone has its parent's files and processes
//! but its own id, IP, MAC, TAP, SSH port and hostname, answers on its own
//! address, and diverges from its parent and siblings; the parent runs on
//! unchanged. Bad requests name the field or the state and make nothing;
//! concurrent forks never share an identity; a crash or a failed clone
//! leaves no clone behind.

use crate::common;

use std::collections::HashSet;

use common::agent::{sh, wait_agent};
use common::e2e::{create_ready_vm, Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::{json, Value};

/// The guest's own view of its identity: hostname, eth0's MAC, its IPv4
/// addresses and its default gateway.
fn identity_seen_inside(daemon: &TestDaemon, id: &str) -> (String, String, String) {
    let hostname = sh(daemon, id, "hostname").trim().to_string();
    let mac = sh(daemon, id, "cat /sys/class/net/eth0/address").trim().to_string();
    let addresses = sh(daemon, id, "ip -4 -o addr show dev eth0 | awk '{print $4}'")
        .trim()
        .to_string();
    (hostname, mac, addresses)
}

/// No two of `vms` share an id, IP, MAC, TAP or SSH port.
fn assert_all_distinct(vms: &[&VmView]) {
    for field in [
        |v: &VmView| v.id.clone(),
        |v: &VmView| v.guest_ip.clone(),
        |v: &VmView| v.guest_mac.clone(),
        |v: &VmView| v.tap_name.clone(),
        |v: &VmView| v.ssh_port.to_string(),
    ] {
        let distinct: HashSet<String> = vms.iter().map(|v| field(v)).collect();
        assert_eq!(distinct.len(), vms.len(), "{vms:#?}");
    }
}

fn fork(daemon: &TestDaemon, id: &str, body: Value) -> (u16, Value) {
    daemon.api("POST", &format!("/vms/{id}/fork"), Some(&body))
}

fn vm_count(daemon: &TestDaemon) -> usize {
    let (_, vms) = daemon.api("GET", "/vms", None);
    vms.as_array().map(Vec::len).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn forks_of_a_running_vm_keep_its_memory_and_take_their_own_identity() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let parent = create_ready_vm(&daemon, &image_id, &key, json!({}));
    wait_agent(&daemon, &parent.id);
    // A file in the guest's RAM-backed root and a process only in memory.
    let sleeper = sh(
        &daemon,
        &parent.id,
        "echo from-parent > /root/marker; sleep 100000 </dev/null >/dev/null 2>&1 & echo $!",
    )
    .trim()
    .to_string();

    let (status, answer) = fork(&daemon, &parent.id, json!({"count": 2}));
    assert_eq!(status, 201, "{answer}\n{}", daemon.log());
    let clones: Vec<VmView> = answer["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .map(VmView::from)
        .collect();
    assert_eq!(clones.len(), 2, "{answer}");
    for vm in answer["vms"].as_array().unwrap() {
        assert_eq!(vm["state"], "running", "{vm}");
        assert!(vm["ready_at"].is_string(), "{vm}");
        assert_eq!(vm["agent"]["connected"], true, "{vm}");
    }

    // Nothing of a clone's identity is shared with the parent or a sibling.
    let everyone: Vec<&VmView> = std::iter::once(&parent).chain(clones.iter()).collect();
    assert_all_distinct(&everyone);

    for clone in &clones {
        // The guest took the identity the API shows.
        let (hostname, mac, addresses) = identity_seen_inside(&daemon, &clone.id);
        assert_eq!(hostname, clone.id);
        assert_eq!(mac, clone.guest_mac);
        assert_eq!(addresses, format!("{}/24", clone.guest_ip), "only its own address");
        // The parent's memory came along: the file and the process.
        assert_eq!(sh(&daemon, &clone.id, "cat /root/marker"), "from-parent\n");
        assert_eq!(
            sh(&daemon, &clone.id, &format!("tr '\\0' ' ' < /proc/{sleeper}/cmdline")).trim(),
            "sleep 100000"
        );
        // Its DHCP client started over as the new NIC and the new host.
        let dhcp = sh(&daemon, &clone.id, "ps -o args | grep '[u]dhcpc'");
        assert!(dhcp.contains(&format!("hostname:{}", clone.id)), "{dhcp}");
        // It answers SSH on its own port, as its own host.
        assert_eq!(topo.ssh(&key, "root", clone.ssh_port, "hostname").trim(), clone.id);
        let events = daemon.events_of(&clone.id);
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == "agent" && e["reason"].as_str().is_some_and(|r| r.contains("own identity"))),
            "{events:#?}"
        );
    }

    // They diverge: a write in one clone is seen nowhere else.
    sh(&daemon, &clones[0].id, "echo changed > /root/marker");
    assert_eq!(sh(&daemon, &clones[1].id, "cat /root/marker"), "from-parent\n");
    assert_eq!(sh(&daemon, &parent.id, "cat /root/marker"), "from-parent\n");

    // The parent runs on, as it was, after a brief pause its events show.
    let (_, shown) = daemon.api("GET", &format!("/vms/{}", parent.id), None);
    assert_eq!(shown["state"], "running", "{shown}");
    let events = daemon.events_of(&parent.id);
    assert!(
        events
            .iter()
            .any(|e| e["to_state"] == "snapshotting" && e["reason"] == "saving its state for a fork"),
        "{events:#?}"
    );
    let (hostname, mac, addresses) = identity_seen_inside(&daemon, &parent.id);
    assert_eq!(hostname, parent.id);
    assert_eq!(mac, parent.guest_mac);
    assert_eq!(addresses, format!("{}/24", parent.guest_ip));
    assert_eq!(topo.ssh(&key, "root", parent.ssh_port, "hostname").trim(), parent.id);

    // Deleting them all leaves nothing behind, the fork's staged state included.
    for vm in everyone.iter() {
        let (status, answer) = daemon.api("DELETE", &format!("/vms/{}", vm.id), None);
        assert!(status == 204 || status == 200, "{answer}");
    }
    topo.assert_host_clean(&daemon, everyone);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_becomes_new_vms_and_bad_requests_make_nothing() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let parent = create_ready_vm(&daemon, &image_id, &key, json!({}));
    wait_agent(&daemon, &parent.id);
    sh(&daemon, &parent.id, "echo saved > /root/marker");

    // Bad requests: named field or state, and no VM more than before.
    let before = vm_count(&daemon);
    for (body, field) in [
        (json!({"count": 0}), "count"),
        (json!({"count": 17}), "count"),
        (json!({"count": -1}), "count"),
        (json!({"count": "two"}), "count"),
        (json!({"count": 1, "colour": "red"}), "colour"),
    ] {
        let (status, answer) = fork(&daemon, &parent.id, body.clone());
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    assert_eq!(vm_count(&daemon), before);

    let (status, snapshot) = daemon.api("POST", &format!("/vms/{}/snapshot", parent.id), None);
    assert_eq!(status, 201, "{snapshot}");
    let snapshot_id = snapshot["id"].as_str().unwrap().to_string();

    for (body, field) in [
        (json!({"snapshot_id": snapshot_id, "image_id": image_id}), "image_id"),
        (json!({"snapshot_id": snapshot_id, "mem_mib": 256}), "mem_mib"),
        (
            json!({"snapshot_id": snapshot_id, "user_data": "#!/bin/sh\n"}),
            "user_data",
        ),
        (json!({"snapshot_id": "snap-nothing"}), "snapshot_id"),
    ] {
        let (status, answer) = daemon.api("POST", "/vms", Some(&body));
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    assert_eq!(vm_count(&daemon), before);

    // A VM from the snapshot (the parent's hot copy), with a TTL of its own.
    let (status, created) = daemon.api(
        "POST",
        "/vms?wait=ready&timeout=180",
        Some(&json!({"snapshot_id": snapshot_id, "ttl_seconds": 3600})),
    );
    assert_eq!(status, 201, "{created}\n{}", daemon.log());
    let from_snapshot = VmView::from(&created);
    assert!(created["expires_at"].is_string(), "{created}");
    assert_eq!(sh(&daemon, &from_snapshot.id, "cat /root/marker"), "saved\n");
    let (hostname, mac, addresses) = identity_seen_inside(&daemon, &from_snapshot.id);
    assert_eq!(
        (hostname, mac, addresses),
        (
            from_snapshot.id.clone(),
            from_snapshot.guest_mac.clone(),
            format!("{}/24", from_snapshot.guest_ip)
        )
    );

    // A fork of the snapshotted parent comes from the snapshot it sleeps in;
    // the parent stays snapshotted.
    let (status, answer) = fork(&daemon, &parent.id, json!({}));
    assert_eq!(status, 201, "{answer}");
    let forked = VmView::from(&answer["vms"][0]);
    assert_eq!(sh(&daemon, &forked.id, "cat /root/marker"), "saved\n");
    assert_eq!(topo.ssh(&key, "root", forked.ssh_port, "hostname").trim(), forked.id);
    let (_, shown) = daemon.api("GET", &format!("/vms/{}", parent.id), None);
    assert_eq!(shown["state"], "snapshotted", "{shown}");

    // The parent wakes to its own identity, beside its clones.
    let (status, restored) = daemon.api("POST", &format!("/vms/{}/restore", parent.id), None);
    assert_eq!(status, 200, "{restored}");
    wait_agent(&daemon, &parent.id);
    assert_eq!(topo.ssh(&key, "root", parent.ssh_port, "hostname").trim(), parent.id);

    // A stopped VM cannot be forked.
    let (status, answer) = daemon.api("POST", &format!("/vms/{}/stop", forked.id), None);
    assert_eq!(status, 200, "{answer}");
    let before = vm_count(&daemon);
    let (status, answer) = fork(&daemon, &forked.id, json!({"count": 1}));
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (409, json!("invalid_state")),
        "{answer}"
    );
    assert_eq!(vm_count(&daemon), before);

    // A fork a member's quota cannot hold is refused before its VM is even
    // paused: nothing of the fork is left, the member's own VM runs on.
    let (status, member) = daemon.api(
        "POST",
        "/keys",
        Some(&json!({"name": "forker", "role": "member", "quotas": {"max_vms": 2}})),
    );
    assert_eq!(status, 201, "{member}");
    let member_key = member["key"].as_str().expect("key").to_string();
    let as_member =
        |method: &str, path: &str, body: Option<&Value>| daemon.request_with_key(method, path, body, Some(&member_key));
    let (status, own) = as_member(
        "POST",
        "/vms?wait=ready&timeout=180",
        Some(&json!({"image_id": image_id})),
    );
    assert_eq!(status, 201, "{own}");
    let own = VmView::from(&own);
    wait_agent(&daemon, &own.id);
    let (status, answer) = as_member("POST", &format!("/vms/{}/fork", own.id), Some(&json!({"count": 2})));
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (403, json!("quota_exceeded")),
        "{answer}"
    );
    let (_, listed) = as_member("GET", "/vms", None);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let events = daemon.events_of(&own.id);
    assert!(!events.iter().any(|e| e["to_state"] == "snapshotting"), "{events:#?}");
    // Nor may a member fork what it cannot see.
    let (status, _) = as_member("POST", &format!("/vms/{}/fork", parent.id), Some(&json!({})));
    assert_eq!(status, 404);

    let everyone = [parent, from_snapshot, forked, own];
    for vm in &everyone {
        let (status, answer) = daemon.api("DELETE", &format!("/vms/{}", vm.id), None);
        assert!(status == 204 || status == 200, "{answer}");
    }
    topo.assert_host_clean(&daemon, everyone.iter());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_mid_fork_or_a_failed_clone_leaves_the_parent_running_and_no_clone_behind() {
    let image = common::images::minimal_image().await;
    let (topo, mut daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let parent = create_ready_vm(&daemon, &image_id, &key, json!({}));
    wait_agent(&daemon, &parent.id);
    sh(&daemon, &parent.id, "echo kept > /root/marker");
    // Cut at different moments: saving the parent, restoring clones,
    // waiting for their identity.
    for after_ms in [150, 900, 2500] {
        let (status, _) = daemon.api_cut_short(
            "POST",
            &format!("/vms/{}/fork", parent.id),
            Some(&json!({"count": 2})),
            std::time::Duration::from_millis(after_ms),
        );
        daemon.kill9();
        daemon.start_again();
        let shown = daemon.wait_for_vm(&parent.id, "running again", std::time::Duration::from_secs(120), |vm| {
            vm["state"] == "running"
        });
        let (_, vms) = daemon.api("GET", "/vms", None);
        let ids: Vec<&str> = vms
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["id"].as_str())
            .collect();
        if status == 201 || ids.len() > 1 {
            // The fork committed before the kill (its clones became
            // `running` together): all of its clones are whole VMs.
            assert_eq!(ids.len(), 3, "killed after {after_ms} ms, a fork half-made: {vms}");
            for vm in vms.as_array().unwrap() {
                assert_eq!(vm["state"], "running", "killed after {after_ms} ms: {vm}");
            }
            for id in ids.iter().filter(|id| **id != parent.id) {
                let (status, answer) = daemon.api("DELETE", &format!("/vms/{id}"), None);
                assert!(status == 204 || status == 200, "{answer}");
            }
            continue;
        }
        assert_eq!(
            ids,
            [parent.id.as_str()],
            "killed after {after_ms} ms: {vms}\n{}",
            daemon.log()
        );
        assert_eq!(
            daemon.vmm_pids().len(),
            1,
            "killed after {after_ms} ms: a VMM of a clone is left"
        );
        let links = topo.on_host("ip", &["-o", "link", "show"]);
        assert_eq!(
            links.matches("fctap-").count(),
            1,
            "killed after {after_ms} ms:\n{links}"
        );
        let vm_dir = daemon.data_path().join("vms").join(&parent.id);
        let dirs: Vec<String> = std::fs::read_dir(daemon.data_path().join("vms"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(dirs, std::slice::from_ref(&parent.id));
        let staged: Vec<_> = std::fs::read_dir(&vm_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("work-"))
            .collect();
        assert!(staged.is_empty(), "a fork's staged state is left: {staged:?}");
        // The parent is whole and answers on its own address.
        wait_agent(&daemon, &parent.id);
        assert_eq!(sh(&daemon, &parent.id, "cat /root/marker"), "kept\n", "{shown}");
        assert_eq!(topo.ssh(&key, "root", parent.ssh_port, "hostname").trim(), parent.id);
    }

    // A hostile parent: without `ip`, its clones cannot take their identity.
    // The fork fails as a whole and leaves nothing of any clone.
    sh(&daemon, &parent.id, "rm -f /sbin/ip /bin/ip /usr/sbin/ip /usr/bin/ip");
    let (status, answer) = fork(&daemon, &parent.id, json!({"count": 2}));
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (409, json!("agent_unavailable")),
        "{answer}"
    );
    let (_, vms) = daemon.api("GET", "/vms", None);
    assert_eq!(vms.as_array().map(Vec::len), Some(1), "{vms}");
    assert_eq!(daemon.vmm_pids().len(), 1, "a clone's VMM is left");
    let links = topo.on_host("ip", &["-o", "link", "show"]);
    assert_eq!(links.matches("fctap-").count(), 1, "{links}");

    let (status, answer) = daemon.api("DELETE", &format!("/vms/{}", parent.id), None);
    assert!(status == 204 || status == 200, "{answer}");
    topo.assert_host_clean(&daemon, [&parent]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_forks_get_unique_identities() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let parents: Vec<VmView> = (0..2)
        .map(|_| create_ready_vm(&daemon, &image_id, &key, json!({"mem_mib": 128})))
        .collect();
    for parent in &parents {
        wait_agent(&daemon, &parent.id);
    }
    // Four forks of two clones at once, two from each parent.
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let forks: Vec<_> = (0..4)
            .map(|i| {
                let (daemon, parent) = (&daemon, &parents[i % 2]);
                scope.spawn(move || fork(daemon, &parent.id, json!({"count": 2})))
            })
            .collect();
        forks
            .into_iter()
            .map(|fork| fork.join().expect("fork thread"))
            .collect()
    });
    let mut clones = Vec::new();
    for (status, answer) in &answers {
        assert_eq!(*status, 201, "{answer}\n{}", daemon.log());
        clones.extend(answer["vms"].as_array().unwrap().iter().map(VmView::from));
    }
    assert_eq!(clones.len(), 8);
    let everyone: Vec<&VmView> = parents.iter().chain(clones.iter()).collect();
    assert_all_distinct(&everyone);
    for clone in &clones {
        let (hostname, mac, addresses) = identity_seen_inside(&daemon, &clone.id);
        assert_eq!(
            (hostname, mac, addresses),
            (
                clone.id.clone(),
                clone.guest_mac.clone(),
                format!("{}/24", clone.guest_ip)
            )
        );
        // Reachable on its own address: the guest answers SSH through its port.
        assert_eq!(topo.ssh(&key, "root", clone.ssh_port, "hostname").trim(), clone.id);
    }
    for vm in &everyone {
        let (status, answer) = daemon.api("DELETE", &format!("/vms/{}", vm.id), None);
        assert!(status == 204 || status == 200, "{answer}");
    }
    topo.assert_host_clean(&daemon, everyone);
}
