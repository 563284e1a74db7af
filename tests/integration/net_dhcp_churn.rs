//! Creates and deletes change dnsmasq's reservations by SIGHUP, never by a
//! restart: a guest already running keeps renewing its lease and resolving
//! names through the gateway while other VMs come and go, and an address a
//! delete frees goes at once to the next VM reserved for it.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::net::{config, dhcp_lease};
use common::netns::{NsRuntime, TestNetns};
use hatch::model::NetworkIdentity;
use hatch::net::{NetRequest, Network, Taken};

fn request_ip(ip: std::net::Ipv4Addr) -> NetRequest {
    NetRequest {
        guest_ip: Some(ip.to_string()),
        ..NetRequest::default()
    }
}

/// What `nslookup <name> <gateway>` prints in `guest` (empty on failure).
fn resolve(guest: &TestNetns, name: &str) -> String {
    let out = guest.exec("busybox", &["nslookup", name, "192.168.241.1"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn attach(runtime: &NsRuntime, network: &Arc<Network>, vm_id: &str, id: &NetworkIdentity) {
    let (network, vm_id, id) = (network.clone(), vm_id.to_string(), id.clone());
    runtime.run(async move { network.attach_vm(&vm_id, &id, &[]).await.unwrap() });
}

fn detach(runtime: &NsRuntime, network: &Arc<Network>, vm_id: &str, id: &NetworkIdentity) {
    let (network, vm_id, id) = (network.clone(), vm_id.to_string(), id.clone());
    runtime.run(async move { network.detach_vm(&vm_id, &id, &[]).await.unwrap() });
}

#[test]
fn a_running_guest_keeps_dhcp_and_dns_while_other_vms_are_created_and_deleted() {
    let host = TestNetns::new();
    let guest = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let cfg = config(scratch.path(), "0.0.0.0/0");
    let network = Arc::new(Network::new(cfg.clone()));
    let runtime = host.runtime();

    let steady: NetworkIdentity = runtime.run({
        let network = network.clone();
        async move {
            network.ensure_host().await.unwrap();
            network
                .allocate("vm-steady1", &NetRequest::default(), &Taken::default())
                .unwrap()
        }
    });
    host.plug_guest(&guest, &steady.tap_name, &steady.guest_mac);
    attach(&runtime, &network, "vm-steady1", &steady);
    let lease = dhcp_lease(&guest, scratch.path()).expect("the steady guest got no lease");
    assert_eq!(lease.ip, steady.guest_ip.to_string());
    guest.ip(&["addr", "add", &format!("{}/24", steady.guest_ip), "dev", "eth0"]);
    let dnsmasq = network.dnsmasq_pid().expect("dnsmasq runs");

    // Other VMs are created and deleted without pause meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let churn = runtime.spawn({
        let (network, steady, stop) = (network.clone(), steady.clone(), stop.clone());
        async move {
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) {
                let vm_id = format!("vm-churn{}", rounds % 10);
                let other = network
                    .allocate(&vm_id, &NetRequest::default(), &Taken::from_identities([&steady]))
                    .unwrap();
                network.attach_vm(&vm_id, &other, &[]).await.unwrap();
                network.detach_vm(&vm_id, &other, &[]).await.unwrap();
                rounds += 1;
            }
            rounds
        }
    });
    for _ in 0..4 {
        let renewed = dhcp_lease(&guest, scratch.path()).expect("a renewal got no lease");
        assert_eq!(renewed.ip, steady.guest_ip.to_string());
        let answer = resolve(&guest, "vm-steady1");
        assert!(answer.contains(&steady.guest_ip.to_string()), "{answer}");
    }
    stop.store(true, Ordering::SeqCst);
    let rounds = runtime.run(async move { churn.await.unwrap() });
    assert!(rounds > 0, "no VM was created meanwhile");
    assert_eq!(network.dnsmasq_pid(), Some(dnsmasq), "dnsmasq was restarted");
    assert!(hatch::sys::process::is_alive(dnsmasq));

    // A new VM's name resolves from its creation (addn-hosts), before any
    // lease, and stops resolving once it is deleted.
    let named = network
        .allocate("vm-named1", &NetRequest::default(), &Taken::from_identities([&steady]))
        .unwrap();
    attach(&runtime, &network, "vm-named1", &named);
    let answer = resolve(&guest, "vm-named1");
    assert!(answer.contains(&named.guest_ip.to_string()), "{answer}");
    detach(&runtime, &network, "vm-named1", &named);
    let answer = resolve(&guest, "vm-named1");
    assert!(!answer.contains(&named.guest_ip.to_string()), "{answer}");

    // A deleted VM's lease does not hold its address: the next VM reserved
    // for it (another MAC) gets it, from the same dnsmasq.
    let first_guest = TestNetns::new();
    let first = network
        .allocate("vm-first1", &NetRequest::default(), &Taken::from_identities([&steady]))
        .unwrap();
    host.plug_guest(&first_guest, &first.tap_name, &first.guest_mac);
    attach(&runtime, &network, "vm-first1", &first);
    let leased = dhcp_lease(&first_guest, scratch.path()).expect("the first guest got no lease");
    assert_eq!(leased.ip, first.guest_ip.to_string());
    detach(&runtime, &network, "vm-first1", &first);
    let next_guest = TestNetns::new();
    let next = network
        .allocate(
            "vm-next01",
            &request_ip(first.guest_ip),
            &Taken::from_identities([&steady]),
        )
        .unwrap();
    assert_ne!(next.guest_mac, first.guest_mac);
    host.plug_guest(&next_guest, &next.tap_name, &next.guest_mac);
    attach(&runtime, &network, "vm-next01", &next);
    let leased = dhcp_lease(&next_guest, scratch.path()).expect("the next guest got no lease");
    assert_eq!(leased.ip, first.guest_ip.to_string());
    assert_eq!(network.dnsmasq_pid(), Some(dnsmasq), "dnsmasq was restarted");

    runtime.run({
        let network = network.clone();
        async move { network.shutdown().await }
    });
}
