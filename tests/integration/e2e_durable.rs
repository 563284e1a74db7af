//! Operations that always finish (QEMU TCG, `minimal` image, real dnsmasq,
//! iptables and SSH): a client that gives up, a daemon killed with -9 or
//! stopped with SIGTERM at random moments never leaves a VM between states
//! or anything of Hatch's on the host that no VM owns; and drift of host
//! state (flushed chains, a deleted TAP, a dead dnsmasq or VMM) is repaired
//! or reported by the reconciler within its interval.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::e2e::{create_ready_vm, Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use common::s3::TestS3;
use rand::Rng;
use serde_json::{json, Value};

/// States a VM may rest in; anything else means an operation is under way.
const SETTLED: &[&str] = &["running", "stopped", "snapshotted"];

const RECONCILE_FAST: (&str, &str) = ("HATCH_RECONCILE_INTERVAL", "1s");

fn vms(daemon: &TestDaemon) -> Vec<Value> {
    let (status, list) = daemon.api("GET", "/vms", None);
    assert_eq!(status, 200, "{list}");
    list.as_array().cloned().unwrap_or_default()
}

/// Waits until every VM rests in a settled state and returns them by id.
fn wait_settled(daemon: &TestDaemon, timeout: Duration) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let all = vms(daemon);
        if all
            .iter()
            .all(|vm| SETTLED.contains(&vm["state"].as_str().unwrap_or("")))
        {
            return all
                .into_iter()
                .map(|vm| (vm["id"].as_str().unwrap().to_string(), vm))
                .collect();
        }
        if Instant::now() > deadline {
            panic!("VMs never settled: {all:#?}\n{}", daemon.log());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every running VM answers SSH on its port with its own hostname.
fn assert_running_answer_ssh(topo: &Topology, key: &TestKey, vms: &BTreeMap<String, Value>) {
    for (id, vm) in vms.iter().filter(|(_, vm)| vm["state"] == "running") {
        let port = vm["ssh_port"].as_u64().unwrap() as u16;
        assert_eq!(topo.ssh(key, "root", port, "hostname").trim(), id, "{vm}");
    }
}

fn create_body(image_id: &str, key: &TestKey) -> Value {
    json!({"image_id": image_id, "ssh_authorized_keys": [key.public]})
}

fn remember(seen: &mut BTreeMap<String, VmView>, vms: &BTreeMap<String, Value>) {
    for (id, vm) in vms {
        seen.entry(id.clone()).or_insert_with(|| VmView::from(vm));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_give_up_never_leave_a_vm_between_states() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[RECONCILE_FAST]);
    let key = TestKey::generate();
    let mut rng = rand::thread_rng();
    let mut seen = BTreeMap::new();
    let first = create_ready_vm(&daemon, &image_id, &key, json!({}));

    for round in 0..2 {
        let mut give_up = || Duration::from_millis(rng.gen_range(20..1500));
        // A create the client gave up on still finishes: the VM is listed and answers.
        let before = vms(&daemon).len();
        daemon.api_cut_short("POST", "/vms", Some(&create_body(&image_id, &key)), give_up());
        let settled = wait_settled(&daemon, Duration::from_secs(120));
        assert_eq!(settled.len(), before + 1, "round {round}: {settled:#?}");
        assert_running_answer_ssh(&topo, &key, &settled);
        remember(&mut seen, &settled);

        let target = settled
            .iter()
            .find(|(id, vm)| vm["state"] == "running" && **id != first.id)
            .map(|(id, _)| id.clone())
            .expect("a running VM");
        daemon.api_cut_short("POST", &format!("/vms/{target}/snapshot"), None, give_up());
        let settled = wait_settled(&daemon, Duration::from_secs(120));
        assert_eq!(settled[&target]["state"], "snapshotted", "round {round}");

        daemon.api_cut_short("POST", &format!("/vms/{target}/restore"), None, give_up());
        let settled = wait_settled(&daemon, Duration::from_secs(120));
        assert_eq!(settled[&target]["state"], "running", "round {round}");
        assert_running_answer_ssh(&topo, &key, &settled);

        daemon.api_cut_short("DELETE", &format!("/vms/{target}"), None, give_up());
        let deadline = Instant::now() + Duration::from_secs(60);
        while daemon.api("GET", &format!("/vms/{target}"), None).0 != 404 {
            assert!(
                Instant::now() < deadline,
                "VM {target} was never deleted\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        topo.assert_nothing_left(&daemon, &seen[&target]);
    }
    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", first.id), None).0, 204);
    seen.insert(first.id.clone(), first);
    topo.assert_host_clean(&daemon, seen.values());
}

/// What the kill-9 test asks of the daemon in one round.
fn random_operation(
    rng: &mut impl Rng,
    vms: &BTreeMap<String, Value>,
    body: &Value,
) -> (String, String, Option<Value>) {
    let create = || ("POST".to_string(), "/vms".to_string(), Some(body.clone()));
    if vms.is_empty() || (vms.len() < 2 && rng.gen_bool(0.5)) {
        return create();
    }
    // A snapshotted VM is always restored next, so restores are cut short
    // as often as snapshots complete.
    if let Some((id, _)) = vms.iter().find(|(_, vm)| vm["state"] == "snapshotted") {
        return ("POST".to_string(), format!("/vms/{id}/restore"), None);
    }
    let (id, vm) = vms.iter().nth(rng.gen_range(0..vms.len())).unwrap();
    let choice = rng.gen_range(0..3);
    let (method, path) = match (vm["state"].as_str().unwrap(), choice) {
        (_, 0) => ("DELETE", format!("/vms/{id}")),
        ("running", 1) => ("POST", format!("/vms/{id}/snapshot")),
        ("running", _) => ("POST", format!("/vms/{id}/stop")),
        ("snapshotted", _) => ("POST", format!("/vms/{id}/restore")),
        (_, _) => ("POST", format!("/vms/{id}/start")),
    };
    (method.to_string(), path, None)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_recovers_every_vm_and_leaks_nothing() {
    let image = common::images::minimal_image().await;
    // Snapshots go to a real S3-compatible server (moto), so "nothing left"
    // covers objects in the bucket too.
    let topo = Topology::new();
    let s3 = TestS3::start_in(topo.host_ns());
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut daemon = TestDaemon::start(topo.host_ns(), &env);
    let image_id = topo.register_image(&daemon, &image);
    let key = TestKey::generate();
    let body = create_body(&image_id, &key);
    let mut rng = rand::thread_rng();
    let mut seen = BTreeMap::new();
    let mut settled = BTreeMap::new();
    for round in 0..20 {
        let (method, path, request) = random_operation(&mut rng, &settled, &body);
        let give_up = Duration::from_millis(rng.gen_range(20..2500));
        daemon.api_cut_short(&method, &path, request.as_ref(), give_up);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        daemon.kill9();
        daemon.start_again();
        // Start-up reconciliation finishes or undoes what was under way
        // before the API answers.
        settled = wait_settled(&daemon, Duration::from_secs(30));
        eprintln!(
            "round {round}: {method} {path} cut at {give_up:?}; now {:?}",
            settled
                .values()
                .map(|v| (v["id"].clone(), v["state"].clone()))
                .collect::<Vec<_>>()
        );
        remember(&mut seen, &settled);
        assert_running_answer_ssh(&topo, &key, &settled);
    }
    for id in settled.keys() {
        let (status, body) = daemon.api("DELETE", &format!("/vms/{id}"), None);
        assert_eq!(status, 204, "{body}");
    }
    assert!(vms(&daemon).is_empty());
    topo.assert_host_clean(&daemon, seen.values());
    assert_eq!(s3.keys(""), Vec::<String>::new(), "objects left in the bucket");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_waits_for_an_operation_in_flight_and_async_requests_answer_202() {
    let image = common::images::minimal_image().await;
    let (topo, mut daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();

    // Asynchronous create: 202 with the VM as recorded, then it runs.
    let (status, created) = daemon.api("POST", "/vms?async=true", Some(&create_body(&image_id, &key)));
    assert_eq!(
        (status, created["state"].as_str()),
        (202, Some("creating")),
        "{created}"
    );
    let id = created["id"].as_str().unwrap().to_string();
    let vm = daemon.wait_for_vm(&id, "ready", Duration::from_secs(180), |v| !v["ready_at"].is_null());
    let vm = VmView::from(&vm);
    assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "hostname").trim(), id);

    // A snapshot in flight when SIGTERM arrives finishes before the daemon exits.
    let (status, snapshotting) = daemon.api("POST", &format!("/vms/{id}/snapshot?async=true"), None);
    assert_eq!(
        (status, snapshotting["state"].as_str()),
        (202, Some("snapshotting")),
        "{snapshotting}"
    );
    assert!(
        daemon.terminate(Duration::from_secs(90)),
        "the daemon did not exit after SIGTERM"
    );
    daemon.start_again();
    let (_, vm_after) = daemon.api("GET", &format!("/vms/{id}"), None);
    assert_eq!(vm_after["state"], "snapshotted", "{vm_after}\n{}", daemon.log());
    let events = daemon.api("GET", &format!("/vms/{id}/events"), None).1;
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert!(
        last["reason"].as_str().unwrap_or("").starts_with("snapshot snap-"),
        "the snapshot must have finished before shutdown, not been recovered after: {events:#}"
    );

    // The snapshot a snapshotted VM would restore from cannot be deleted.
    let snapshot_id = vm_after["snapshot_id"].as_str().expect("snapshot_id").to_string();
    let (status, refused) = daemon.api("DELETE", &format!("/snapshots/{snapshot_id}"), None);
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "{refused}"
    );

    // Prefer: respond-async works on restore too; then the VM runs and answers.
    let (status, restoring) =
        daemon.api_with_headers("POST", &format!("/vms/{id}/restore"), None, &["Prefer: respond-async"]);
    assert_eq!(
        (status, restoring["state"].as_str()),
        (202, Some("restoring")),
        "{restoring}"
    );
    daemon.wait_for_vm(&id, "running", Duration::from_secs(120), |v| v["state"] == "running");
    assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "hostname").trim(), id);
    // Once running, the snapshot is an ordinary one and may go.
    assert_eq!(daemon.api("DELETE", &format!("/snapshots/{snapshot_id}"), None).0, 204);

    let (status, deleting) = daemon.api("DELETE", &format!("/vms/{id}?async=true"), None);
    assert_eq!(
        (status, deleting["state"].as_str()),
        (202, Some("deleting")),
        "{deleting}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.api("GET", &format!("/vms/{id}"), None).0 != 404 {
        assert!(Instant::now() < deadline, "never deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut seen = BTreeMap::new();
    seen.insert(id, vm);
    topo.assert_host_clean(&daemon, seen.values());
}

fn host_events(daemon: &TestDaemon) -> String {
    daemon.api("GET", "/host/events", None).1.to_string()
}

fn vm_events(daemon: &TestDaemon, id: &str) -> String {
    daemon.api("GET", &format!("/vms/{id}/events"), None).1.to_string()
}

fn wait_until(what: &str, daemon: &TestDaemon, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_repaired_or_reported_within_the_reconcile_interval() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[RECONCILE_FAST]);
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));
    let resilient = create_ready_vm(&daemon, &image_id, &key, json!({"restart_policy": "on-failure"}));

    // Flushed chains and a deleted jump: restored, SSH through the forward works again.
    topo.on_host("iptables", &["-t", "nat", "-F", "HATCH-PREROUTING"]);
    topo.on_host("iptables", &["-t", "nat", "-F", "HATCH-POSTROUTING"]);
    wait_until("the firewall repair", &daemon, || {
        topo.on_host("iptables-save", &["-t", "nat"])
            .lines()
            .any(|l| l.starts_with("-A HATCH-PREROUTING") && l.contains(&format!("--dport {} ", vm.ssh_port)))
    });
    assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "hostname").trim(), vm.id);
    wait_until("a host event for the firewall", &daemon, || {
        host_events(&daemon).contains("chain HATCH-PREROUTING")
    });

    // A dead dnsmasq is started again.
    let dnsmasq_pid = || -> Option<u32> {
        let text = topo.on_host("pgrep", &["-f", &format!("{}/dhcp", daemon.data_path().display())]);
        text.lines().next().and_then(|l| l.trim().parse().ok())
    };
    let before = dnsmasq_pid().expect("dnsmasq runs");
    let _ = std::process::Command::new("kill")
        .args(["-9", &before.to_string()])
        .status();
    wait_until("dnsmasq restarted", &daemon, || {
        dnsmasq_pid().is_some_and(|pid| pid != before)
    });

    // A deleted TAP is recreated on the bridge and recorded on its VM.
    topo.on_host("ip", &["link", "del", &vm.tap_name]);
    wait_until("the TAP recreated", &daemon, || {
        topo.on_host("ip", &["-o", "link", "show", &vm.tap_name])
            .contains("master")
    });
    wait_until("a repair event on the VM", &daemon, || {
        vm_events(&daemon, &vm.id).contains(&format!("TAP {}", vm.tap_name))
    });
    // The VMM held the deleted device: the guest is moved to a fresh VMM
    // on the new TAP (snapshot and restore), and its network works again.
    wait_until("the network re-attached", &daemon, || {
        vm_events(&daemon, &vm.id).contains("network re-attached")
    });
    assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "hostname").trim(), vm.id);

    // A killed VMM: `error` with the reason; under on-failure it runs again.
    for victim in [&vm, &resilient] {
        let (_, shown) = daemon.api("GET", &format!("/vms/{}", victim.id), None);
        let pid = shown["pid"].as_u64().expect("pid") as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    }
    let crashed = daemon.wait_for_vm(&vm.id, "error", Duration::from_secs(30), |v| v["state"] == "error");
    assert!(
        crashed["state_reason"].as_str().unwrap_or("").contains("signal 9"),
        "{crashed}"
    );
    let restarted = daemon.wait_for_vm(&resilient.id, "running again", Duration::from_secs(60), |v| {
        v["state"] == "running" && !v["ready_at"].is_null()
    });
    assert!(restarted["pid"].as_u64().is_some(), "{restarted}");
    assert_eq!(
        topo.ssh(&key, "root", resilient.ssh_port, "hostname").trim(),
        resilient.id
    );
    assert!(vm_events(&daemon, &resilient.id).contains("\"to_state\":\"error\""));

    for victim in [&vm, &resilient] {
        assert_eq!(daemon.api("DELETE", &format!("/vms/{}", victim.id), None).0, 204);
        topo.assert_nothing_left(&daemon, victim);
    }
}
