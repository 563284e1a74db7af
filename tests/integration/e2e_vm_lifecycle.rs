//! The whole path a user takes, with real parts: `hatch serve` in a network
//! namespace, the `minimal` image under QEMU, dnsmasq, iptables, and SSH from
//! another "host" (namespace) through the forwarded port.

use crate::common;

use std::time::Duration;

use common::e2e::{create_ready_vm, Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn create_ssh_stop_start_delete_leaves_nothing_behind() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();

    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));
    assert_eq!(vm.state, "running");
    assert!(vm.tap_name.starts_with("fctap-"), "{vm:?}");
    assert!(vm.guest_mac.starts_with("02:fc:"), "{vm:?}");
    assert_eq!(vm.ssh_port, 2200);

    // The guest got the reserved address by DHCP and is reachable from another host.
    let guest_ip = topo.ssh(&key, "root", vm.ssh_port, "ip -4 -o addr show eth0");
    assert!(
        guest_ip.contains(&format!("{}/", vm.guest_ip)),
        "guest reports {guest_ip}, reserved {}",
        vm.guest_ip
    );
    assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "hostname").trim(), vm.id);
    assert!(topo.reservation_exists(&daemon, &vm.guest_mac, &vm.guest_ip));
    assert!(
        topo.forward_listed(vm.ssh_port),
        "the guide's `iptables -t nat -L PREROUTING -n -v | grep {}` shows nothing",
        vm.ssh_port
    );

    // Stop keeps the identity; start brings the same guest back on the same port.
    let (status, stopped) = daemon.api("POST", &format!("/vms/{}/stop", vm.id), None);
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "stopped");
    assert!(daemon.vmm_pids().is_empty(), "a VMM process survived stop");
    // Repeats are idempotent: stopping a stopped VM answers it as it is.
    let (status, again) = daemon.api("POST", &format!("/vms/{}/stop", vm.id), None);
    assert_eq!((status, again["state"].as_str()), (200, Some("stopped")), "{again}");
    // A refused transition has its own code, naming the state.
    let (status, refused) = daemon.api("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "{refused}"
    );
    assert!(
        refused["error"]["message"].as_str().unwrap().contains("stopped"),
        "{refused}"
    );
    let (status, started) = daemon.api("POST", &format!("/vms/{}/start", vm.id), None);
    assert_eq!(status, 200, "{started}");
    let started = daemon.wait_for_vm(&vm.id, "ready", Duration::from_secs(180), |v| !v["ready_at"].is_null());
    assert_eq!(VmView::from(&started).guest_ip, vm.guest_ip);
    assert_eq!(VmView::from(&started).ssh_port, vm.ssh_port);
    assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "hostname").trim(), vm.id);
    let (status, again) = daemon.api("POST", &format!("/vms/{}/start", vm.id), None);
    assert_eq!((status, again["state"].as_str()), (200, Some("running")), "{again}");
    assert_eq!(
        again["pid"], started["pid"],
        "starting a running VM must not launch another VMM"
    );

    // Delete releases everything.
    let (status, _) = daemon.api("DELETE", &format!("/vms/{}", vm.id), None);
    assert_eq!(status, 204);
    assert_eq!(daemon.api("GET", &format!("/vms/{}", vm.id), None).0, 404);
    topo.assert_nothing_left(&daemon, &vm);
}

#[tokio::test(flavor = "multi_thread")]
async fn vmm_exits_are_noticed_and_a_restarted_daemon_adopts_live_vms() {
    let image = common::images::minimal_image().await;
    let (topo, mut daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let create = |daemon: &TestDaemon| create_ready_vm(daemon, &image_id, &key, json!({}));
    let crashed = create(&daemon);
    let survivor = create(&daemon);
    assert_ne!(crashed.guest_ip, survivor.guest_ip);
    assert_ne!(crashed.ssh_port, survivor.ssh_port);

    // A guest that shuts itself down is `stopped`; a killed VMM is `error`.
    let _ = topo.ssh_status(&key, "root", crashed.ssh_port, "reboot -f");
    let vm = daemon.wait_for_vm(&crashed.id, "stopped", Duration::from_secs(30), |v| {
        v["state"] == "stopped"
    });
    assert!(
        vm["state_reason"].as_str().unwrap_or_default().contains("shut down"),
        "{vm}"
    );
    daemon.api("POST", &format!("/vms/{}/start", crashed.id), None);
    let vm = daemon.wait_for_vm(&crashed.id, "running", Duration::from_secs(60), |v| {
        v["state"] == "running"
    });
    let pid = vm["pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill VMM");
    let vm = daemon.wait_for_vm(&crashed.id, "error", Duration::from_secs(30), |v| v["state"] == "error");
    assert!(
        vm["state_reason"].as_str().unwrap_or_default().contains("signal 9"),
        "{vm}"
    );

    // kill -9 the daemon: the running VM keeps running and is adopted again.
    let pid_before = daemon.api("GET", &format!("/vms/{}", survivor.id), None).1["pid"].clone();
    daemon.restart();
    let (_, vm) = daemon.api("GET", &format!("/vms/{}", survivor.id), None);
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(vm["pid"], pid_before);
    assert_eq!(
        topo.ssh(&key, "root", survivor.ssh_port, "hostname").trim(),
        survivor.id
    );
    let (status, vm) = daemon.api("POST", &format!("/vms/{}/stop", survivor.id), None);
    assert_eq!((status, vm["state"].as_str()), (200, Some("stopped")), "{vm}");

    for vm in [&crashed, &survivor] {
        assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
        topo.assert_nothing_left(&daemon, vm);
    }
}
