//! DHCP through Hatch's supervised dnsmasq, with a real client (busybox
//! udhcpc) in a guest namespace plugged into the bridge like a TAP.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::net::{config, dhcp_lease, dnsmasq_conf, reservation_line};
use common::netns::{wait_for, TestNetns};
use hatch::model::NetworkIdentity;
use hatch::net::{NetConfig, NetRequest, Network, Taken};

#[test]
fn a_real_dhcp_client_gets_exactly_the_reserved_address_and_dns_on_the_gateway() {
    let host = TestNetns::new();
    let guest = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let cfg = config(scratch.path(), "0.0.0.0/0");
    let network = Network::new(cfg.clone());
    let vm_id = "vm-dhcp01";

    host.block_on(|| async {
        network.ensure_host().await.unwrap();
        // A decoy reservation, so the client must get its own entry.
        let decoy = network
            .allocate("vm-decoy1", &NetRequest::default(), &Taken::default())
            .unwrap();
        let id = network
            .allocate(vm_id, &NetRequest::default(), &Taken::from_identities([&decoy]))
            .unwrap();
        host.plug_guest(&guest, &id.tap_name, &id.guest_mac);
        let all = vec![
            ("vm-decoy1".to_string(), decoy.clone()),
            (vm_id.to_string(), id.clone()),
        ];
        network.attach_vm("vm-decoy1", &decoy, &all).await.unwrap();
        network.attach_vm(vm_id, &id, &all).await.unwrap();
        check_lease_and_dns(&host, &guest, &cfg, vm_id, &id, scratch.path());
        network.shutdown().await;
    });
}

/// Runs while the test's runtime is alive (dnsmasq is its child).
fn check_lease_and_dns(
    host: &TestNetns,
    guest: &TestNetns,
    cfg: &NetConfig,
    vm_id: &str,
    id: &NetworkIdentity,
    scratch: &Path,
) {
    assert_eq!(host.master_of(&id.tap_name).as_deref(), Some("fcbridge"));
    // The guide's check: grep "<mac>" dnsmasq.conf finds the reservation.
    let conf = dnsmasq_conf(cfg);
    let grep: Vec<&str> = conf.lines().filter(|l| l.contains(&id.guest_mac)).collect();
    assert_eq!(grep, [reservation_line(vm_id, id)], "{conf}");

    let lease = dhcp_lease(guest, scratch).expect("udhcpc got no lease");
    assert_eq!(lease.ip, id.guest_ip.to_string());
    assert_eq!(lease.router, "192.168.241.1");
    assert_eq!(lease.dns, "192.168.241.1");

    // dnsmasq answers DNS on the gateway: it knows the leased VM by its id.
    guest.ip(&["addr", "add", &format!("{}/24", id.guest_ip), "dev", "eth0"]);
    let answer = guest.exec_ok("busybox", &["nslookup", vm_id, "192.168.241.1"]);
    assert!(answer.contains(&id.guest_ip.to_string()), "{answer}");
}

#[test]
fn dnsmasq_is_restarted_after_being_killed() {
    let host = TestNetns::new();
    let guest = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let cfg = config(scratch.path(), "0.0.0.0/0");
    let network = Network::new(cfg);

    host.block_on(|| async {
        network.ensure_host().await.unwrap();
        let id = network
            .allocate("vm-revive1", &NetRequest::default(), &Taken::default())
            .unwrap();
        host.plug_guest(&guest, &id.tap_name, &id.guest_mac);
        network.attach_vm("vm-revive1", &id, &[]).await.unwrap();

        let first = network.dnsmasq_pid().expect("dnsmasq runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(first as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // The supervisor runs on this runtime: give it time while polling.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let second = loop {
            match network.dnsmasq_pid() {
                Some(pid) if pid != first && hatch::sys::process::is_alive(pid) => break pid,
                _ if tokio::time::Instant::now() > deadline => panic!("dnsmasq was not restarted"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        assert!(!hatch::sys::process::is_alive(first));
        // The new one serves the reservation (udhcpc blocks: run it on a
        // blocking thread while this runtime keeps the supervisor going).
        // udhcpc blocks this runtime, but dnsmasq is a process of its own.
        let lease = wait_for(Duration::from_secs(1), || dhcp_lease(&guest, scratch.path()));
        assert_eq!(lease.map(|l| l.ip), Some(id.guest_ip.to_string()));
        let ps = std::process::Command::new("ps")
            .args(["-o", "args=", "-p", &second.to_string()])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&ps.stdout).contains("dnsmasq"));
        network.shutdown().await;
        assert!(!hatch::sys::process::is_alive(second), "shutdown stops dnsmasq");
    });
}

#[test]
fn a_dnsmasq_left_by_a_crashed_daemon_is_replaced() {
    let host = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let cfg = config(scratch.path(), "0.0.0.0/0");
    let conf = cfg.dhcp_dir.join("dnsmasq.conf");
    let pid_file = cfg.dhcp_dir.join("dnsmasq.pid");

    host.block_on(|| async {
        let first = Network::new(cfg.clone());
        first.ensure_host().await.unwrap();
        first.shutdown().await;
    });
    // What a killed daemon leaves: its dnsmasq, still holding the sockets.
    let mut orphan = host.spawn(
        "dnsmasq",
        &["--keep-in-foreground", &format!("--conf-file={}", conf.display())],
    );
    let orphan_pid = orphan.id();
    let written = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .filter(|t| t.trim() == orphan_pid.to_string())
    });
    assert!(written.is_some(), "the stand-in orphan did not start");

    host.block_on(|| async {
        let second = Network::new(cfg.clone());
        second.ensure_host().await.unwrap();
        let pid = second.dnsmasq_pid().expect("dnsmasq runs");
        assert_ne!(pid, orphan_pid);
        assert!(hatch::sys::process::is_alive(pid));
        second.shutdown().await;
    });
    let _ = orphan.wait();
    assert!(!hatch::sys::process::is_alive(orphan_pid));
}
