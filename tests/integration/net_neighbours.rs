//! The host holds a permanent neighbour entry for each VM's address with
//! the VM's MAC: the host reaches a guest without asking it by ARP (a guest
//! that has just brought its address up gets the first packet sent to it,
//! not one a second later), detach removes the entry, and reconcile puts
//! the table right.

use crate::common;

use common::net::{config, configure_guest};
use common::netns::TestNetns;
use hatch::model::NetworkIdentity;
use hatch::net::{NetRequest, Network, Taken};

/// The bridge's permanent entries, as `ip neigh` lists them.
fn permanent(host: &TestNetns) -> String {
    host.ip(&["-4", "neigh", "show", "dev", "fcbridge", "nud", "permanent"])
        .to_lowercase()
}

fn pings(from: &TestNetns, ip: &str) -> bool {
    from.exec("ping", &["-c", "1", "-W", "2", ip]).status.success()
}

#[test]
fn the_host_reaches_a_guest_that_never_answers_arp_until_detach() {
    let host = TestNetns::new();
    let guest = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let cfg = config(scratch.path(), "0.0.0.0/0");
    let network = Network::new(cfg.clone());
    let vm_id = "vm-neigh01";

    host.block_on(|| async {
        network.ensure_host().await.unwrap();
        let id = network
            .allocate(vm_id, &NetRequest::default(), &Taken::default())
            .unwrap();
        host.plug_guest(&guest, &id.tap_name, &id.guest_mac);
        let all = [(vm_id.to_string(), id.clone())];
        network.attach_vm(vm_id, &id, &all).await.unwrap();
        configure_guest(&guest, &id, &cfg);
        // The guest answers no ARP request (it still asks its own).
        guest.exec_ok("sysctl", &["-w", "net.ipv4.conf.eth0.arp_ignore=8"]);
        let ip = id.guest_ip.to_string();

        let entries = permanent(&host);
        assert!(
            entries.contains(&format!("{ip} lladdr {}", id.guest_mac.to_lowercase())),
            "{entries}"
        );
        assert!(pings(&host, &ip), "the host did not reach the guest: {entries}");

        network.detach_vm(vm_id, &id, &all).await.unwrap();
        let entries = permanent(&host);
        assert!(!entries.contains(&ip), "{entries}");
        network.shutdown().await;
    });
}

#[test]
fn reconcile_restores_missing_entries_and_removes_strays_inside_the_subnet_only() {
    let host = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let cfg = config(scratch.path(), "0.0.0.0/0");
    let network = Network::new(cfg.clone());

    host.block_on(|| async {
        network.ensure_host().await.unwrap();
        let live_id = network
            .allocate("vm-live01", &NetRequest::default(), &Taken::default())
            .unwrap();
        let live: Vec<(String, NetworkIdentity)> = vec![("vm-live01".into(), live_id.clone())];
        network.attach_vm("vm-live01", &live_id, &live).await.unwrap();
        let ip = live_id.guest_ip.to_string();

        // Someone deleted the live VM's entry, a VM deleted while the daemon
        // was down left one behind, and another program keeps its own.
        host.ip(&["neigh", "del", &ip, "dev", "fcbridge"]);
        host.ip(&[
            "neigh",
            "add",
            "192.168.241.99",
            "lladdr",
            "02:fc:de:ad:be:ef",
            "dev",
            "fcbridge",
            "nud",
            "permanent",
        ]);
        host.ip(&[
            "neigh",
            "add",
            "10.77.0.5",
            "lladdr",
            "02:00:00:00:77:05",
            "dev",
            "fcbridge",
            "nud",
            "permanent",
        ]);

        let report = network.reconcile(&live).await.unwrap();
        let entries = permanent(&host);
        assert!(
            entries.contains(&format!("{ip} lladdr {}", live_id.guest_mac.to_lowercase())),
            "{entries}"
        );
        assert!(!entries.contains("192.168.241.99"), "{entries}");
        assert!(entries.contains("10.77.0.5 lladdr 02:00:00:00:77:05"), "{entries}");
        for expected in [
            format!("neighbour entry for {ip} (vm-live01) missing"),
            "neighbour entry for 192.168.241.99 belongs to no VM".to_string(),
        ] {
            assert!(report.repairs.iter().any(|r| r.contains(&expected)), "{report:?}");
        }

        // Idempotent: nothing left to repair.
        let again = network.reconcile(&live).await.unwrap();
        assert_eq!(again, Default::default(), "{again:?}");
        network.shutdown().await;
    });
}
