//! Reconcile repairs drift: Hatch's chains flushed or deleted, jumps
//! removed, TAPs deleted or detached, the bridge's address gone, dnsmasq
//! killed or its configuration edited. A clean host is left alone: no
//! iptables write, no dnsmasq restart.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common;

use common::net::{config, dnsmasq_conf};
use common::netns::TestNetns;
use hatch::model::NetworkIdentity;
use hatch::net::firewall::iptables::split_saved_line;
use hatch::net::{NetConfig, NetRequest, Network, Taken};

/// A host namespace with Hatch's host state and two networked VMs.
async fn two_vms(network: &Network) -> Vec<(String, NetworkIdentity)> {
    network.ensure_host().await.unwrap();
    let mut desired: Vec<(String, NetworkIdentity)> = Vec::new();
    for vm in ["vm-drift01", "vm-drift02"] {
        let taken = Taken::from_identities(desired.iter().map(|(_, id)| id));
        let id = network.allocate(vm, &NetRequest::default(), &taken).unwrap();
        desired.push((vm.to_string(), id));
    }
    let report = network.reconcile(&desired).await.unwrap();
    assert_eq!(report.taps_created.len(), 2, "{report:?}");
    desired
}

/// The table's rules as a set: a restored jump may sit at another place
/// among Hatch's own jumps, which does not matter.
fn rule_set(host: &TestNetns, table: &str) -> BTreeSet<String> {
    host.iptables_rules(table).lines().map(String::from).collect()
}

fn iptables(host: &TestNetns, args: &[&str]) {
    let mut full = vec!["-w"];
    full.extend_from_slice(args);
    host.exec_ok("iptables", &full);
}

fn mentions(repairs: &[String], words: &[&str]) -> bool {
    repairs.iter().any(|r| words.iter().all(|w| r.contains(w)))
}

fn scratch_config(scratch: &tempfile::TempDir) -> NetConfig {
    config(scratch.path(), "0.0.0.0/0")
}

#[test]
fn reconcile_restores_flushed_and_deleted_chains_and_jumps() {
    let host = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let network = Network::new(scratch_config(&scratch));
    host.block_on(|| async {
        let desired = two_vms(&network).await;
        let (nat, filter) = (rule_set(&host, "nat"), rule_set(&host, "filter"));
        let vm_port = desired[0].1.ssh_port.to_string();
        let dnsmasq = network.dnsmasq_pid().unwrap();

        // A flushed chain, a deleted jump from a built-in chain, a whole
        // chain gone, and one VM's forward jump deleted.
        iptables(&host, &["-t", "filter", "-F", "HATCH-FORWARD"]);
        let jump = host
            .iptables_rules("filter")
            .lines()
            .find(|l| l.starts_with("-A INPUT") && l.contains("-j HATCH-INPUT"))
            .unwrap()
            .to_string();
        let jump_args = split_saved_line(&jump);
        let mut delete = vec!["-t", "filter", "-D"];
        delete.extend(jump_args.iter().skip(1).map(String::as_str));
        iptables(&host, &delete);
        iptables(&host, &["-t", "filter", "-F", "HATCH-INPUT"]);
        iptables(&host, &["-t", "filter", "-X", "HATCH-INPUT"]);
        let vm_jump = host
            .iptables_rules("nat")
            .lines()
            .find(|l| l.starts_with("-A PREROUTING") && l.contains(&format!("--dport {vm_port} ")))
            .unwrap()
            .to_string();
        let mut delete = vec!["-t", "nat", "-D"];
        let vm_jump_args = split_saved_line(&vm_jump);
        delete.extend(vm_jump_args.iter().skip(1).map(String::as_str));
        iptables(&host, &delete);
        iptables(&host, &["-t", "nat", "-F", "HATCH-POSTROUTING"]);

        let report = network.reconcile(&desired).await.unwrap();
        let repairs = &report.repairs;
        assert!(
            mentions(repairs, &["HATCH-FORWARD", "8 rules missing", "restored"]),
            "{repairs:?}"
        );
        assert!(mentions(repairs, &["HATCH-INPUT missing", "recreated"]), "{repairs:?}");
        assert!(mentions(repairs, &["chain INPUT", "jump", "restored"]), "{repairs:?}");
        assert!(
            mentions(repairs, &["chain PREROUTING", "jump", "restored"]),
            "{repairs:?}"
        );
        assert!(
            mentions(repairs, &["HATCH-POSTROUTING", "2 rules missing"]),
            "{repairs:?}"
        );
        assert!(!report.is_clean());
        assert_eq!(rule_set(&host, "nat"), nat);
        assert_eq!(rule_set(&host, "filter"), filter);
        // Hatch's jumps are back above everything else.
        let filter_now = host.iptables_rules("filter");
        let first_input = filter_now.lines().find(|l| l.starts_with("-A INPUT")).unwrap();
        assert!(first_input.contains("-j HATCH-INPUT"), "{filter_now}");

        // Nothing else drifted: the DHCP server was left alone.
        assert!(!repairs.iter().any(|r| r.contains("dnsmasq")), "{repairs:?}");
        assert_eq!(network.dnsmasq_pid(), Some(dnsmasq));

        let again = network.reconcile(&desired).await.unwrap();
        assert!(again.is_clean(), "{again:?}");
        assert_eq!(again, Default::default());
        assert_eq!(host.iptables_rules("nat").lines().count(), nat.len());

        // The bridge table: a flushed VM chain, a planted chain, then the
        // whole table deleted; each comes back exactly as it was.
        let bridge_table = || host.exec_ok("nft", &["list", "table", "bridge", "hatch"]);
        let table = bridge_table();
        let chain = format!("vm-{}", desired[0].0.trim_start_matches("vm-"));
        assert!(table.contains(&format!("jump {chain}")), "{table}");
        host.exec_ok("nft", &["flush", "chain", "bridge", "hatch", &chain]);
        host.exec_ok("nft", &["add", "chain", "bridge", "hatch", "planted"]);
        let report = network.reconcile(&desired).await.unwrap();
        assert!(
            mentions(
                &report.repairs,
                &[&format!("nftables chain {chain}"), "missing", "restored"]
            ),
            "{:?}",
            report.repairs
        );
        assert!(
            mentions(&report.repairs, &["nftables chain planted", "removed"]),
            "{:?}",
            report.repairs
        );
        assert_eq!(bridge_table(), table);
        host.exec_ok("nft", &["delete", "table", "bridge", "hatch"]);
        let report = network.reconcile(&desired).await.unwrap();
        assert!(
            mentions(&report.repairs, &["nftables table bridge hatch missing"]),
            "{:?}",
            report.repairs
        );
        assert_eq!(bridge_table(), table);
        assert!(network.reconcile(&desired).await.unwrap().is_clean());
        network.shutdown().await;
    });
}

#[test]
fn reconcile_repairs_taps_and_the_bridge() {
    let host = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let cfg = scratch_config(&scratch);
    let network = Network::new(cfg.clone());
    host.block_on(|| async {
        let desired = two_vms(&network).await;
        let (first, second) = (desired[0].1.tap_name.clone(), desired[1].1.tap_name.clone());
        let dnsmasq = network.dnsmasq_pid().unwrap();

        host.ip(&["link", "del", "dev", &first]);
        host.ip(&["link", "set", "dev", &second, "nomaster"]);
        host.ip(&["link", "set", "dev", &second, "down"]);
        host.ip(&["tuntap", "add", "dev", "fctap-orphan", "mode", "tap"]);
        host.ip(&["addr", "flush", "dev", "fcbridge"]);

        let report = network.reconcile(&desired).await.unwrap();
        let repairs = &report.repairs;
        assert!(mentions(repairs, &[&first, "missing", "recreated"]), "{repairs:?}");
        assert!(
            mentions(repairs, &[&second, "not attached", "reattached"]),
            "{repairs:?}"
        );
        assert!(mentions(repairs, &["fctap-orphan", "removed"]), "{repairs:?}");
        assert!(
            mentions(repairs, &["fcbridge", "192.168.241.1/24", "restored"]),
            "{repairs:?}"
        );
        assert_eq!(report.taps_created, [first.as_str()]);
        assert_eq!(report.taps_removed, ["fctap-orphan"]);

        for tap in [&first, &second] {
            assert_eq!(host.master_of(tap).as_deref(), Some("fcbridge"), "{tap}");
            assert!(host.ip(&["link", "show", "dev", tap]).contains(",UP"), "{tap} is down");
        }
        assert!(!host.links().contains(&"fctap-orphan".to_string()));
        assert!(host.ip(&["addr", "show", "fcbridge"]).contains("inet 192.168.241.1/24"));
        assert_eq!(network.dnsmasq_pid(), Some(dnsmasq));

        // The bridge itself gone: recreated, TAPs back on it, dnsmasq
        // restarted to serve the new bridge.
        host.ip(&["link", "del", "dev", "fcbridge"]);
        let report = network.reconcile(&desired).await.unwrap();
        assert!(mentions(&report.repairs, &["bridge fcbridge missing"]), "{report:?}");
        assert!(mentions(&report.repairs, &["dnsmasq restarted"]), "{report:?}");
        for tap in [&first, &second] {
            assert_eq!(host.master_of(tap).as_deref(), Some("fcbridge"), "{tap}");
        }
        assert!(host.ip(&["addr", "show", "fcbridge"]).contains("inet 192.168.241.1/24"));
        assert!(network.dnsmasq_pid().is_some_and(hatch::sys::process::is_alive));

        assert!(network.reconcile(&desired).await.unwrap().is_clean());
        network.shutdown().await;
    });
}

#[test]
fn reconcile_restarts_a_killed_dnsmasq_and_rewrites_an_edited_conf() {
    let host = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let cfg = scratch_config(&scratch);
    let network = Network::new(cfg.clone());
    host.block_on(|| async {
        let desired = two_vms(&network).await;
        let conf = dnsmasq_conf(&cfg);

        let killed = network.dnsmasq_pid().unwrap();
        hatch::sys::process::signal(killed, nix::sys::signal::Signal::SIGKILL);
        // Whether reconcile or the supervisor gets there first, the report
        // says dnsmasq had to be restarted.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while network.dnsmasq_pid() == Some(killed) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the supervisor never saw dnsmasq exit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let report = network.reconcile(&desired).await.unwrap();
        assert!(mentions(&report.repairs, &["dnsmasq", "restarted"]), "{report:?}");
        let restarted = network.dnsmasq_pid().expect("dnsmasq runs again");
        assert_ne!(restarted, killed);
        assert!(hatch::sys::process::is_alive(restarted));

        let path = cfg.dhcp_dir.join("dnsmasq.conf");
        std::fs::write(&path, conf.replace("dhcp-authoritative\n", "")).unwrap();
        let report = network.reconcile(&desired).await.unwrap();
        assert!(
            mentions(&report.repairs, &["dnsmasq.conf differed", "rewritten", "restarted"]),
            "{report:?}"
        );
        assert!(report.reservations_changed);
        assert_eq!(dnsmasq_conf(&cfg), conf);
        let rewritten = network.dnsmasq_pid().expect("dnsmasq runs");
        assert_ne!(rewritten, restarted);

        // A clean host: nothing to report, the same dnsmasq.
        let clean = network.reconcile(&desired).await.unwrap();
        assert!(clean.is_clean(), "{clean:?}");
        assert_eq!(network.dnsmasq_pid(), Some(rewritten));
        network.shutdown().await;
    });
}
