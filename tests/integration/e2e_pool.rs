//! Warm pools with real guests (QEMU TCG, the minimal image with
//! hatch-agent): a template keeps its pool of snapshotted VMs full; a
//! create from the template takes one, ready with the template's user data
//! and an identity no other VM has, owned by the caller and within its
//! quotas; pool VMs are nobody's and never listed; deleting the template
//! removes them; a daemon killed mid-refill leaves nothing behind.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::agent::{exec, sh, wait_agent};
use common::e2e::{Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::{json, Value};

const MARKER: &str = "/root/pool-marker";

fn template_body(image_id: &str, key: &TestKey, size: Value) -> Value {
    json!({
        "name": "warm",
        "image_id": image_id,
        "warm_pool_size": size,
        "user_data": format!("#!/bin/sh\necho from-template > {MARKER}\n"),
        "ssh_authorized_keys": [key.public],
    })
}

/// Creates a member key with `quotas`; answers (id, key).
fn member(daemon: &TestDaemon, quotas: Value) -> (String, String) {
    let (status, key) = daemon.api(
        "POST",
        "/keys",
        Some(&json!({"name": "pool-user", "role": "member", "quotas": quotas})),
    );
    assert_eq!(status, 201, "{key}");
    (key["id"].as_str().unwrap().into(), key["key"].as_str().unwrap().into())
}

/// A call with `key`, or the admin key when none is given.
fn call(daemon: &TestDaemon, key: Option<&str>, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let admin = daemon.admin_key();
    daemon.request_with_key(method, path, body, Some(key.unwrap_or(&admin)))
}

/// Polls the template until its pool holds `size` ready VMs and makes none.
fn wait_pool_full(daemon: &TestDaemon, key: Option<&str>, template_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let (status, template) = call(daemon, key, "GET", &format!("/templates/{template_id}"), None);
        assert_eq!(status, 200, "{template}");
        let pool = &template["warm_pool"];
        if pool["ready"] == pool["size"] && pool["filling"] == 0 {
            return template;
        }
        assert!(
            Instant::now() < deadline,
            "the pool never filled: {template}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The VMs waiting in the template's pool, as an admin sees them by id
/// (they are never listed): every VM the event log names that still
/// exists and is the pool's.
fn pool_vms(daemon: &TestDaemon, template_id: &str) -> Vec<Value> {
    let ids: HashSet<String> = daemon
        .all_events()
        .iter()
        .filter_map(|e| e["vm_id"].as_str().map(str::to_string))
        .collect();
    ids.iter()
        .filter_map(|id| {
            let (status, vm) = daemon.api("GET", &format!("/vms/{id}"), None);
            (status == 200 && vm["pool_template_id"] == template_id).then_some(vm)
        })
        .collect()
}

fn listed(daemon: &TestDaemon, key: Option<&str>) -> Vec<String> {
    let (status, vms) = call(daemon, key, "GET", "/vms", None);
    assert_eq!(status, 200, "{vms}");
    vms.as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the guest's user data has written its file (it runs in the
/// background of the boot, so may finish after the snapshot).
fn wait_marker(daemon: &TestDaemon, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = exec(daemon, id, json!({"cmd": ["cat", MARKER]}));
        if status == 200 && answer["exit_code"] == 0 {
            return answer["stdout"].as_str().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < deadline, "{MARKER} never appeared: {answer}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// TAPs, VMM processes and VM directories on the host.
fn host_counts(topo: &Topology, daemon: &TestDaemon) -> (usize, usize, usize) {
    let links = topo.on_host("ip", &["-o", "link", "show"]);
    let dirs = std::fs::read_dir(daemon.data_path().join("vms"))
        .map(|d| d.count())
        .unwrap_or(0);
    (links.matches("fctap-").count(), daemon.vmm_pids().len(), dirs)
}

fn take(daemon: &TestDaemon, key: &str, body: Value) -> (u16, Value) {
    daemon.request_with_key("POST", "/vms?wait=ready&timeout=180", Some(&body), Some(key))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_pool_gives_ready_vms_of_their_own_and_refills_within_quotas() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let (member_id, member_key) = member(&daemon, json!({"max_vms": 3}));
    let as_member = Some(member_key.as_str());

    let started = Instant::now();
    let (status, template) = daemon.request_with_key(
        "POST",
        "/templates",
        Some(&template_body(&image_id, &key, json!(2))),
        as_member,
    );
    assert_eq!(status, 201, "{template}");
    assert_eq!(template["warm_pool_size"], 2, "{template}");
    assert_eq!(template["warm_pool"]["size"], 2, "{template}");
    let template_id = template["id"].as_str().unwrap().to_string();
    wait_pool_full(&daemon, as_member, &template_id);
    println!("pool of 2 filled in {:?}", started.elapsed());

    // The pool's VMs are nobody's: listed for no key, 404 for the member.
    assert!(listed(&daemon, as_member).is_empty());
    assert!(listed(&daemon, None).is_empty());
    let pool = pool_vms(&daemon, &template_id);
    assert_eq!(pool.len(), 2, "{pool:#?}");
    for vm in &pool {
        assert_eq!(vm["state"], "snapshotted", "{vm}");
        assert!(vm.get("owner_key_id").is_none(), "{vm}");
        let (status, _) =
            daemon.request_with_key("GET", &format!("/vms/{}", vm["id"].as_str().unwrap()), None, as_member);
        assert_eq!(status, 404);
    }
    let pool_ids: HashSet<String> = pool.iter().map(|vm| vm["id"].as_str().unwrap().to_string()).collect();

    // A take: ready, the member's, with its lifetime counted from now.
    let asked = Instant::now();
    let (status, vm) = take(
        &daemon,
        &member_key,
        json!({"template_id": template_id, "ttl_seconds": 3600}),
    );
    println!("take → ready in {:?}", asked.elapsed());
    assert_eq!(status, 201, "{vm}\n{}", daemon.log());
    assert!(pool_ids.contains(vm["id"].as_str().unwrap()), "not a pool VM: {vm}");
    assert_eq!(vm["state"], "running", "{vm}");
    assert!(vm["ready_at"].is_string(), "{vm}");
    assert_eq!(vm["owner_key_id"], member_id, "{vm}");
    assert!(vm.get("pool_template_id").is_none(), "{vm}");
    assert!(vm["expires_at"].is_string(), "{vm}");
    let taken = VmView::from(&vm);
    let waiting = VmView::from(pool.iter().find(|p| p["id"] != taken.id.as_str()).unwrap());
    assert_ne!(taken.guest_ip, waiting.guest_ip);
    assert_ne!(taken.guest_mac, waiting.guest_mac);
    assert_ne!(taken.tap_name, waiting.tap_name);
    assert_ne!(taken.ssh_port, waiting.ssh_port);
    // The template's user data ran; the guest is its own host, reachable
    // with the template's key on its own port.
    wait_agent(&daemon, &taken.id);
    assert_eq!(wait_marker(&daemon, &taken.id), "from-template\n");
    assert_eq!(sh(&daemon, &taken.id, "hostname").trim(), taken.id);
    assert_eq!(
        sh(&daemon, &taken.id, "cat /sys/class/net/eth0/address").trim(),
        taken.guest_mac
    );
    assert_eq!(topo.ssh(&key, "root", taken.ssh_port, "hostname").trim(), taken.id);
    assert_eq!(listed(&daemon, as_member), [taken.id.as_str()]);
    // The pool's snapshot was the pool's: the member holds none.
    let (_, snapshots) = daemon.request_with_key("GET", &format!("/vms/{}/snapshots", taken.id), None, as_member);
    assert_eq!(snapshots, json!([]), "{snapshots}");

    // The pool refills; two takes at once get two VMs of their own.
    wait_pool_full(&daemon, as_member, &template_id);
    let body = json!({"template_id": template_id});
    let (first, second) = std::thread::scope(|scope| {
        let a = scope.spawn(|| take(&daemon, &member_key, body.clone()));
        let b = scope.spawn(|| take(&daemon, &member_key, body.clone()));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(second.0, 201, "{}", second.1);
    let everyone: Vec<VmView> = [&vm, &first.1, &second.1].into_iter().map(VmView::from).collect();
    for field in [
        |v: &VmView| v.id.clone(),
        |v: &VmView| v.guest_ip.clone(),
        |v: &VmView| v.guest_mac.clone(),
        |v: &VmView| v.ssh_port.to_string(),
    ] {
        let distinct: HashSet<String> = everyone.iter().map(field).collect();
        assert_eq!(distinct.len(), 3, "{everyone:#?}");
    }

    // At its quota (3 VMs), the member's next take is refused and the
    // pool keeps its VMs.
    wait_pool_full(&daemon, as_member, &template_id);
    let before: HashSet<String> = pool_vms(&daemon, &template_id)
        .iter()
        .map(|vm| vm["id"].as_str().unwrap().to_string())
        .collect();
    let (status, refused) = take(&daemon, &member_key, json!({"template_id": template_id}));
    assert_eq!(
        (status, refused["error"]["code"].clone()),
        (403, json!("quota_exceeded")),
        "{refused}"
    );
    let after = pool_vms(&daemon, &template_id);
    assert_eq!(
        after
            .iter()
            .map(|vm| vm["id"].as_str().unwrap().to_string())
            .collect::<HashSet<_>>(),
        before
    );
    assert!(after
        .iter()
        .all(|vm| vm.get("owner_key_id").is_none() && vm["state"] == "snapshotted"));
    assert_eq!(listed(&daemon, as_member).len(), 3);
    let (taps, vmms, _) = host_counts(&topo, &daemon);
    assert_eq!((taps, vmms), (5, 3), "2 pool VMs (no process) and 3 running VMs");

    let (status, answer) = daemon.request_with_key("DELETE", &format!("/templates/{template_id}"), None, as_member);
    assert_eq!(status, 204, "{answer}");
    let pool: Vec<VmView> = after.iter().map(VmView::from).collect();
    for vm in &everyone {
        let (status, answer) = daemon.request_with_key("DELETE", &format!("/vms/{}", vm.id), None, as_member);
        assert!(status == 204 || status == 200, "{answer}");
    }
    topo.assert_host_clean(&daemon, everyone.iter().chain(pool.iter()));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_pool_sizes_make_nothing_and_deleting_a_template_removes_its_pool() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();

    for size in [json!(-1), json!(9), json!("x"), json!(1.5)] {
        let (status, answer) = daemon.api(
            "POST",
            "/templates",
            Some(&template_body(&image_id, &key, size.clone())),
        );
        assert_eq!(status, 400, "{size}: {answer}");
        assert_eq!(answer["error"]["field"], "warm_pool_size", "{size}: {answer}");
    }
    // A member's pools may hold no more than its quotas would let it run.
    let (_, member_key) = member(&daemon, json!({"max_vms": 3}));
    let as_member = |body: Value| daemon.request_with_key("POST", "/templates", Some(&body), Some(&member_key));
    let (status, first) = as_member(template_body(&image_id, &key, json!(2)));
    assert_eq!(status, 201, "{first}");
    let (status, answer) = as_member(template_body(&image_id, &key, json!(2)));
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (403, json!("quota_exceeded")),
        "{answer}"
    );
    assert_eq!(answer["error"]["field"], "warm_pool_size", "{answer}");
    let (status, _) = daemon.api("DELETE", &format!("/templates/{}", first["id"].as_str().unwrap()), None);
    assert_eq!(status, 204);
    let (_, templates) = daemon.api("GET", "/templates", None);
    assert_eq!(templates, json!([]), "{templates}");
    // Without a pool, nothing is made for a template.
    let (status, plain) = daemon.api("POST", "/templates", Some(&template_body(&image_id, &key, json!(0))));
    assert_eq!(status, 201, "{plain}");
    assert_eq!(plain["warm_pool"], json!({"size": 0, "ready": 0, "filling": 0}));

    let (status, template) = daemon.api("POST", "/templates", Some(&template_body(&image_id, &key, json!(2))));
    assert_eq!(status, 201, "{template}");
    let template_id = template["id"].as_str().unwrap().to_string();
    wait_pool_full(&daemon, None, &template_id);
    let pool: Vec<VmView> = pool_vms(&daemon, &template_id).iter().map(VmView::from).collect();
    assert_eq!(pool.len(), 2);
    let (taps, vmms, dirs) = host_counts(&topo, &daemon);
    assert_eq!(
        (taps, vmms, dirs),
        (2, 0, 2),
        "snapshotted pool VMs hold a TAP and a directory, no process"
    );
    let hot: Vec<_> = std::fs::read_dir(daemon.data_path().join("hot"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(hot.len(), 2, "each pool VM waits in a hot copy: {hot:?}");

    let (status, answer) = daemon.api("DELETE", &format!("/templates/{template_id}"), None);
    assert_eq!(status, 204, "{answer}");
    let (status, _) = daemon.api("GET", &format!("/templates/{template_id}"), None);
    assert_eq!(status, 404);
    for vm in &pool {
        let (status, answer) = daemon.api("GET", &format!("/vms/{}", vm.id), None);
        assert_eq!(status, 404, "{answer}");
    }
    let hot: Vec<_> = std::fs::read_dir(daemon.data_path().join("hot"))
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    assert!(hot.is_empty(), "hot copies are left: {hot:?}");
    topo.assert_host_clean(&daemon, pool.iter());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_mid_refill_converges_to_its_pool_and_leaves_no_orphan() {
    let image = common::images::minimal_image().await;
    let (topo, mut daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let (status, template) = daemon.api("POST", "/templates", Some(&template_body(&image_id, &key, json!(2))));
    assert_eq!(status, 201, "{template}");
    let template_id = template["id"].as_str().unwrap().to_string();

    // Killed while the pool is first made, then while it refills after a take.
    std::thread::sleep(Duration::from_millis(2500));
    daemon.kill9();
    daemon.start_again();
    wait_pool_full(&daemon, None, &template_id);
    let (status, vm) = daemon.api(
        "POST",
        "/vms?wait=ready&timeout=180",
        Some(&json!({"template_id": template_id})),
    );
    assert_eq!(status, 201, "{vm}");
    let user_vm = VmView::from(&vm);
    // Killed once the refill's VM runs but is not yet snapshotted.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pool_vms(&daemon, &template_id)
        .iter()
        .any(|vm| vm["state"] == "running")
    {
        assert!(
            Instant::now() < deadline,
            "the refill never booted a VM\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.kill9();
    daemon.start_again();

    wait_pool_full(&daemon, None, &template_id);
    let pool = pool_vms(&daemon, &template_id);
    assert_eq!(pool.len(), 2, "{pool:#?}\n{}", daemon.log());
    assert_eq!(listed(&daemon, None), [user_vm.id.as_str()]);
    let (taps, vmms, dirs) = host_counts(&topo, &daemon);
    assert_eq!(
        (taps, vmms, dirs),
        (3, 1, 3),
        "2 pool VMs and the taken one, only it running"
    );
    // DHCP holds reservations and leases of these three VMs only.
    let known: Vec<VmView> = pool.iter().map(VmView::from).chain([user_vm.clone()]).collect();
    let macs: HashSet<&str> = known.iter().map(|v| v.guest_mac.as_str()).collect();
    let dhcp = daemon.data_path().join("dhcp");
    let conf = std::fs::read_to_string(dhcp.join("dnsmasq.conf")).unwrap_or_default();
    let reserved: Vec<&str> = conf.lines().filter(|l| l.starts_with("# dhcp-host=")).collect();
    assert_eq!(reserved.len(), 3, "{conf}");
    for vm in &known {
        assert!(topo.reservation_exists(&daemon, &vm.guest_mac, &vm.guest_ip), "{conf}");
    }
    let leases = std::fs::read_to_string(dhcp.join("dnsmasq.leases")).unwrap_or_default();
    for lease in leases.lines() {
        let mac = lease.split_whitespace().nth(1).unwrap_or_default();
        assert!(macs.contains(mac), "a lease of no VM: {lease}\n{leases}");
    }
    // One snapshot per pool VM (the one it waits in); none left of the
    // taken VM's wait, and no snapshot files of any other VM.
    for vm in &pool {
        let id = vm["id"].as_str().unwrap();
        let (_, snapshots) = daemon.api("GET", &format!("/vms/{id}/snapshots"), None);
        assert_eq!(snapshots.as_array().map(Vec::len), Some(1), "{id}: {snapshots}");
    }
    let (_, snapshots) = daemon.api("GET", &format!("/vms/{}/snapshots", user_vm.id), None);
    assert_eq!(snapshots, json!([]));
    let pool_ids: HashSet<&str> = pool.iter().map(|vm| vm["id"].as_str().unwrap()).collect();
    for dir in ["snapshots", "hot"] {
        for entry in std::fs::read_dir(daemon.data_path().join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(pool_ids.contains(name.as_str()), "{dir}/{name} belongs to no pool VM");
        }
    }
    wait_agent(&daemon, &user_vm.id);
    assert_eq!(wait_marker(&daemon, &user_vm.id), "from-template\n");

    let (status, answer) = daemon.api("DELETE", &format!("/templates/{template_id}"), None);
    assert_eq!(status, 204, "{answer}");
    let (status, answer) = daemon.api("DELETE", &format!("/vms/{}", user_vm.id), None);
    assert!(status == 204 || status == 200, "{answer}");
    topo.assert_host_clean(&daemon, known.iter());
}
