//! 30 VMs created at once, as the orchestrator would: allocation under one
//! mutex over what is taken, then host attachment concurrently.

use crate::common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::net::{config, dhcp_hosts, dnsmasq_conf, hosts_line, reservation_line};
use common::netns::TestNetns;
use hatch::model::NetworkIdentity;
use hatch::net::{NetRequest, Network, Taken};

const VMS: usize = 30;

#[test]
fn thirty_concurrent_creates_get_unique_identities_and_host_state() {
    let host = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let cfg = config(scratch.path(), "0.0.0.0/0");
    let network = Arc::new(Network::new(cfg.clone()));
    // Ids sharing a long prefix, so TAP names need disambiguation.
    let ids: Vec<String> = (0..VMS).map(|i| format!("vm-batch{i:03}")).collect();

    host.block_on(|| async {
        network.ensure_host().await.unwrap();
        let taken = Arc::new(Mutex::new(Taken::default()));
        let registry = Arc::new(Mutex::new(Vec::<(String, NetworkIdentity)>::new()));
        let tasks: Vec<_> = ids
            .iter()
            .cloned()
            .map(|vm_id| {
                let (network, taken, registry) = (network.clone(), taken.clone(), registry.clone());
                tokio::spawn(async move {
                    let id = {
                        let mut taken = taken.lock().unwrap();
                        let id = network.allocate(&vm_id, &NetRequest::default(), &taken).unwrap();
                        taken.ips.insert(id.guest_ip);
                        taken.macs.insert(id.guest_mac.clone());
                        taken.taps.insert(id.tap_name.clone());
                        taken.ports.insert(id.ssh_port);
                        registry.lock().unwrap().push((vm_id.clone(), id.clone()));
                        id
                    };
                    tokio::task::yield_now().await;
                    let all = registry.lock().unwrap().clone();
                    network.attach_vm(&vm_id, &id, &all).await.unwrap();
                    (vm_id, id)
                })
            })
            .collect();
        let mut created = Vec::new();
        for task in tasks {
            created.push(task.await.unwrap());
        }

        let unique = |values: Vec<String>| values.iter().collect::<HashSet<_>>().len();
        assert_eq!(
            unique(created.iter().map(|(_, id)| id.guest_ip.to_string()).collect()),
            VMS
        );
        assert_eq!(
            unique(created.iter().map(|(_, id)| id.guest_mac.clone()).collect()),
            VMS
        );
        assert_eq!(unique(created.iter().map(|(_, id)| id.tap_name.clone()).collect()), VMS);
        assert_eq!(
            unique(created.iter().map(|(_, id)| id.ssh_port.to_string()).collect()),
            VMS
        );
        let ports: HashSet<u16> = created.iter().map(|(_, id)| id.ssh_port).collect();
        assert_eq!(ports, (2200..2200 + VMS as u16).collect());

        // Whatever order the attaches finished in, every VM has its TAP on
        // the bridge, its reservation and its forward.
        let conf = dnsmasq_conf(&cfg);
        let nat = host.iptables_rules("nat");
        for (vm_id, id) in &created {
            assert_eq!(
                host.master_of(&id.tap_name).as_deref(),
                Some("fcbridge"),
                "{}",
                id.tap_name
            );
            assert!(
                conf.contains(&format!("{}\n", reservation_line(vm_id, id))),
                "{vm_id} missing:\n{conf}"
            );
            assert!(dhcp_hosts(&cfg).contains(&hosts_line(vm_id, id)), "{vm_id} not served");
            assert!(
                nat.contains(&format!("--to-destination {}:22", id.guest_ip)),
                "{vm_id} missing:\n{nat}"
            );
        }
        assert_eq!(dhcp_hosts(&cfg).len(), VMS);
        // The fast paths left exactly what a full reconcile wants.
        let report = network.reconcile(&created).await.unwrap();
        assert_eq!(report, Default::default(), "{report:?}");

        // And deleting them all leaves nothing behind.
        let mut remaining = created.clone();
        while let Some((vm_id, id)) = remaining.pop() {
            network.detach_vm(&vm_id, &id, &remaining).await.unwrap();
        }
        assert!(host.links().iter().all(|l| !l.starts_with("fctap-")));
        assert!(dhcp_hosts(&cfg).is_empty());
        assert!(!dnsmasq_conf(&cfg).contains("dhcp-host="));
        assert!(!host.iptables_rules("nat").contains("vm=vm-batch"));
        network.shutdown().await;
    });
}

#[test]
fn racing_create_and_delete_with_stale_snapshots_keep_each_others_state() {
    let host = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let cfg = config(scratch.path(), "0.0.0.0/0");
    let network = Network::new(cfg.clone());

    host.block_on(|| async {
        network.ensure_host().await.unwrap();
        let a = network
            .allocate("vm-racea1", &NetRequest::default(), &Taken::default())
            .unwrap();
        let b = network
            .allocate("vm-raceb1", &NetRequest::default(), &Taken::from_identities([&a]))
            .unwrap();
        let c = network
            .allocate("vm-racec1", &NetRequest::default(), &Taken::from_identities([&a, &b]))
            .unwrap();
        // Each create read the database before the other one was stored.
        network
            .attach_vm("vm-racea1", &a, &[("vm-racea1".into(), a.clone())])
            .await
            .unwrap();
        network
            .attach_vm("vm-raceb1", &b, &[("vm-raceb1".into(), b.clone())])
            .await
            .unwrap();
        let reservations = |cfg| dhcp_hosts(cfg).len();
        assert_eq!(reservations(&cfg), 2, "{}", dnsmasq_conf(&cfg));
        // A delete of A, then a create of C whose snapshot still lists A.
        network
            .detach_vm("vm-racea1", &a, &[("vm-raceb1".into(), b.clone())])
            .await
            .unwrap();
        let stale = vec![
            ("vm-racea1".to_string(), a.clone()),
            ("vm-raceb1".into(), b.clone()),
            ("vm-racec1".into(), c.clone()),
        ];
        network.attach_vm("vm-racec1", &c, &stale).await.unwrap();
        let served = dhcp_hosts(&cfg);
        assert!(!served.contains(&hosts_line("vm-racea1", &a)), "{served:?}");
        assert!(
            served.contains(&hosts_line("vm-raceb1", &b)) && served.contains(&hosts_line("vm-racec1", &c)),
            "{served:?}"
        );
        network.shutdown().await;
    });
}
