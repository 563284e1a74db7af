//! Real guests while VMs are created and deleted around them: concurrent
//! creates each get a distinct address and the guest gets exactly the one
//! reserved for it, and a guest already running keeps renewing its DHCP
//! lease and resolving names through the gateway the whole time, served by
//! the same dnsmasq (reservations change by SIGHUP, not by a restart).

use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use common::e2e::{create_ready_vm, Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::json;

const CREATED: usize = 3;
/// The default HATCH_BRIDGE_CIDR's gateway, the guests' DNS server.
const GATEWAY: &str = "192.168.241.1";

/// A DHCP exchange from inside the guest, on top of the udhcpc its init
/// keeps running: a one-shot client whose hook only prints the lease.
const RENEW: &str = "printf '#!/bin/sh\\n[ \"$1\" = bound ] && echo LEASE $ip\\nexit 0\\n' > /tmp/lease.sh; \
                     chmod +x /tmp/lease.sh; udhcpc -i eth0 -f -q -n -t 5 -T 1 -s /tmp/lease.sh 2>/dev/null";

fn dnsmasq_pid(daemon: &TestDaemon) -> String {
    std::fs::read_to_string(daemon.data_path().join("dhcp/dnsmasq.pid"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Renews the steady guest's lease and resolves its name and `others`
/// through the gateway, from inside the guest.
fn check_steady(topo: &Topology, key: &TestKey, steady: &VmView) {
    let lease = topo.ssh(key, "root", steady.ssh_port, RENEW);
    assert!(
        lease.lines().any(|l| l.trim() == format!("LEASE {}", steady.guest_ip)),
        "renewal: {lease}"
    );
    let answer = topo.ssh(
        key,
        "root",
        steady.ssh_port,
        &format!("nslookup {} {GATEWAY}", steady.id),
    );
    assert!(answer.contains(&steady.guest_ip), "DNS: {answer}");
}

/// Runs `work` while [`check_steady`] runs again and again (at least once)
/// beside it; returns what `work` returned.
fn while_checking<T: Send>(topo: &Topology, key: &TestKey, steady: &VmView, work: impl FnOnce() -> T + Send) -> T {
    let busy = AtomicBool::new(true);
    std::thread::scope(|scope| {
        let checker = scope.spawn(|| {
            let mut checks = 0;
            while busy.load(Ordering::SeqCst) || checks == 0 {
                check_steady(topo, key, steady);
                checks += 1;
            }
        });
        let result = work();
        busy.store(false, Ordering::SeqCst);
        checker.join().unwrap();
        result
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_get_their_own_addresses_while_a_running_guest_keeps_dhcp_and_dns() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let steady = create_ready_vm(&daemon, &image_id, &key, json!({}));
    check_steady(&topo, &key, &steady);
    let dnsmasq = dnsmasq_pid(&daemon);
    assert!(!dnsmasq.is_empty(), "dnsmasq runs");

    // Creates at once while the steady guest renews and resolves.
    let created: Vec<VmView> = while_checking(&topo, &key, &steady, || {
        std::thread::scope(|scope| {
            let creates: Vec<_> = (0..CREATED)
                .map(|_| scope.spawn(|| create_ready_vm(&daemon, &image_id, &key, json!({}))))
                .collect();
            creates.into_iter().map(|c| c.join().unwrap()).collect()
        })
    });
    let mut addresses: HashSet<String> = created.iter().map(|vm| vm.guest_ip.clone()).collect();
    assert_eq!(addresses.len(), CREATED, "{created:?}");
    assert!(addresses.insert(steady.guest_ip.clone()), "{created:?}");
    for vm in &created {
        let shown = topo.ssh(&key, "root", vm.ssh_port, "ip -4 -o addr show eth0");
        assert!(
            shown.contains(&format!("{}/", vm.guest_ip)),
            "{} reports {shown}, reserved {}",
            vm.id,
            vm.guest_ip
        );
        // Each new VM's name resolves for the others through the gateway.
        let answer = topo.ssh(&key, "root", steady.ssh_port, &format!("nslookup {} {GATEWAY}", vm.id));
        assert!(answer.contains(&vm.guest_ip), "{answer}");
    }

    // Deletes at once, while the steady guest renews and resolves.
    let statuses: Vec<u16> = while_checking(&topo, &key, &steady, || {
        std::thread::scope(|scope| {
            let deletes: Vec<_> = created
                .iter()
                .map(|vm| scope.spawn(|| daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0))
                .collect();
            deletes.into_iter().map(|d| d.join().unwrap()).collect()
        })
    });
    assert_eq!(statuses, vec![204; CREATED]);
    for vm in &created {
        topo.assert_nothing_left(&daemon, vm);
    }
    check_steady(&topo, &key, &steady);
    assert_eq!(dnsmasq_pid(&daemon), dnsmasq, "dnsmasq was restarted");

    // A freed address goes to the next VM that asks for it.
    let reused = create_ready_vm(&daemon, &image_id, &key, json!({"guest_ip": created[0].guest_ip}));
    let shown = topo.ssh(&key, "root", reused.ssh_port, "ip -4 -o addr show eth0");
    assert!(shown.contains(&format!("{}/", created[0].guest_ip)), "{shown}");
    assert_eq!(dnsmasq_pid(&daemon), dnsmasq, "dnsmasq was restarted");
}
