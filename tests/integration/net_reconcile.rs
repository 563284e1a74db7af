//! Reconcile rebuilds host state from the list of networked VMs: planted
//! stale objects go, live VMs keep theirs, other programs' rules stay.

use crate::common;

use common::net::{config, dhcp_hosts, dnsmasq_conf, hosts_line, reservation_line};
use common::netns::{run_ok, TestNetns};
use hatch::model::NetworkIdentity;
use hatch::net::{NetRequest, Network, Taken};

const FOREIGN_NAT: &str = "-A PREROUTING -p tcp -m tcp --dport 8080 -m comment --comment \"someone else\" -j DNAT --to-destination 10.9.9.9:80";
const FOREIGN_FILTER: &str = "-A FORWARD -s 10.66.0.0/16 -m comment --comment \"someone else\" -j DROP";

fn plant(host: &TestNetns, table: &str, rule: &[&str]) {
    let mut args = vec!["-w", "-t", table];
    args.extend_from_slice(rule);
    host.exec_ok("iptables", &args);
}

#[test]
fn reconcile_removes_planted_stale_objects_and_leaves_foreign_rules() {
    let host = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let cfg = config(scratch.path(), "0.0.0.0/0");
    let network = Network::new(cfg.clone());

    host.block_on(|| async {
        // Another program's rules, there before Hatch started.
        plant(
            &host,
            "nat",
            &[
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "--dport",
                "8080",
                "-m",
                "comment",
                "--comment",
                "someone else",
                "-j",
                "DNAT",
                "--to-destination",
                "10.9.9.9:80",
            ],
        );
        plant(
            &host,
            "filter",
            &[
                "-A",
                "FORWARD",
                "-s",
                "10.66.0.0/16",
                "-m",
                "comment",
                "--comment",
                "someone else",
                "-j",
                "DROP",
            ],
        );
        network.ensure_host().await.unwrap();
        let live_id = network
            .allocate("vm-live01", &NetRequest::default(), &Taken::default())
            .unwrap();
        let gone_id = network
            .allocate("vm-gone01", &NetRequest::default(), &Taken::from_identities([&live_id]))
            .unwrap();
        let live: Vec<(String, NetworkIdentity)> = vec![("vm-live01".into(), live_id.clone())];
        let both = vec![live[0].clone(), ("vm-gone01".to_string(), gone_id.clone())];
        network.attach_vm("vm-live01", &live_id, &both).await.unwrap();
        // A VM deleted while the daemon was down leaves its TAP, rules and
        // reservation behind.
        network.attach_vm("vm-gone01", &gone_id, &both).await.unwrap();

        // Planted: a stale TAP, a stale rule in Hatch's chain, a stale
        // reservation.
        host.ip(&["tuntap", "add", "dev", "fctap-x", "mode", "tap"]);
        plant(
            &host,
            "nat",
            &[
                "-A",
                "HATCH-PREROUTING",
                "-p",
                "tcp",
                "--dport",
                "2298",
                "-j",
                "DNAT",
                "--to-destination",
                "192.168.241.77:22",
            ],
        );
        let hosts_path = common::net::hosts_file(&cfg);
        let mut hosts = std::fs::read_to_string(&hosts_path).unwrap();
        hosts.push_str("02:fc:de:ad:be:ef,192.168.241.99,vm-stale9\n");
        std::fs::write(&hosts_path, hosts).unwrap();
        let dnsmasq_before = network.dnsmasq_pid().unwrap();

        let report = network.reconcile(&live).await.unwrap();
        assert_eq!(report.taps_removed.len(), 2, "{report:?}");
        assert!(
            report.taps_removed.contains(&"fctap-x".to_string()) && report.taps_removed.contains(&gone_id.tap_name)
        );
        assert!(report.reservations_changed);
        assert!(report.skipped.is_empty());

        let links = host.links();
        assert!(
            !links.contains(&"fctap-x".to_string()) && !links.contains(&gone_id.tap_name),
            "{links:?}"
        );
        assert!(links.contains(&live_id.tap_name));
        assert_eq!(host.master_of(&live_id.tap_name).as_deref(), Some("fcbridge"));

        assert_eq!(dhcp_hosts(&cfg), [hosts_line("vm-live01", &live_id)]);
        let conf = dnsmasq_conf(&cfg);
        let listed: Vec<&str> = conf.lines().filter(|l| l.contains("dhcp-host=")).collect();
        assert_eq!(listed, [reservation_line("vm-live01", &live_id)]);
        // dnsmasq reread its hosts file to forget the stale reservations;
        // it was not restarted.
        assert!(
            report
                .repairs
                .iter()
                .any(|r| r.contains("reservations out of date") && r.contains("reloaded")),
            "{report:?}"
        );
        assert_eq!(network.dnsmasq_pid(), Some(dnsmasq_before));
        assert!(network.dnsmasq_pid().is_some_and(hatch::sys::process::is_alive));

        let nat = host.iptables_rules("nat");
        let filter = host.iptables_rules("filter");
        assert!(!nat.contains("192.168.241.77") && !nat.contains("vm-gone01"), "{nat}");
        assert!(!nat.contains(&format!("--dport {} ", gone_id.ssh_port)), "{nat}");
        assert!(
            nat.contains(&format!("--dport {} ", live_id.ssh_port)) && nat.contains("vm-live01"),
            "{nat}"
        );
        assert!(nat.contains(FOREIGN_NAT), "foreign rule touched:\n{nat}");
        assert!(filter.contains(FOREIGN_FILTER), "foreign rule touched:\n{filter}");
        // Hatch's jumps sit above the foreign rules in the built-in chains.
        assert!(
            nat.find("-j HATCH-PREROUTING").unwrap() < nat.find(FOREIGN_NAT).unwrap(),
            "{nat}"
        );
        assert!(
            filter.find("-j HATCH-FORWARD").unwrap() < filter.find(FOREIGN_FILTER).unwrap(),
            "{filter}"
        );

        // A corrupted row duplicating the live VM's address is refused.
        let mut clash = live.clone();
        let twin = NetworkIdentity {
            tap_name: "fctap-twin".into(),
            ..gone_id.clone()
        };
        clash.push((
            "vm-twin01".into(),
            NetworkIdentity {
                guest_ip: live_id.guest_ip,
                ..twin
            },
        ));
        let report = network.reconcile(&clash).await.unwrap();
        assert_eq!(report.skipped.len(), 1, "{report:?}");
        assert_eq!(report.skipped[0].0, "vm-twin01");
        assert!(!host.links().contains(&"fctap-twin".to_string()));

        // Idempotent: a second pass changes nothing.
        let again = network.reconcile(&live).await.unwrap();
        assert_eq!(again, Default::default(), "{again:?}");
        assert_eq!(host.iptables_rules("nat"), nat);

        // ensure_host again (a daemon restart) keeps everything in place.
        network.ensure_host().await.unwrap();
        assert_eq!(host.iptables_rules("nat"), nat);
        assert_eq!(host.iptables_rules("filter"), filter);
        network.shutdown().await;
    });
    // Everything above stayed inside the namespace.
    assert!(!run_ok("ip", &["-j", "link", "show"]).contains("fctap-x"));
}

#[test]
fn a_changed_ssh_allowed_cidr_replaces_the_forwards_at_restart() {
    let host = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let open = config(scratch.path(), "0.0.0.0/0");
    let narrowed = config(scratch.path(), "10.250.0.0/16");

    host.block_on(|| async {
        let first = Network::new(open.clone());
        first.ensure_host().await.unwrap();
        let id = first
            .allocate("vm-cidr01", &NetRequest::default(), &Taken::default())
            .unwrap();
        let desired = vec![("vm-cidr01".to_string(), id.clone())];
        first.reconcile(&desired).await.unwrap();
        first.shutdown().await;

        let second = Network::new(narrowed);
        second.ensure_host().await.unwrap();
        second.reconcile(&desired).await.unwrap();
        let nat = host.iptables_rules("nat");
        let dnats: Vec<&str> = nat.lines().filter(|l| l.starts_with("-A HATCH-PREROUTING")).collect();
        assert_eq!(dnats.len(), 1, "{nat}");
        assert!(dnats[0].contains("-s 10.250.0.0/16"), "{nat}");
        second.shutdown().await;
    });
}

#[test]
fn a_renamed_bridge_replaces_the_old_one_at_restart() {
    let host = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let old = config(scratch.path(), "0.0.0.0/0");
    let mut new = old.clone();
    new.bridge_name = "hatchbr1".into();

    host.block_on(|| async {
        let first = Network::new(old);
        first.ensure_host().await.unwrap();
        let id = first
            .allocate("vm-rename1", &NetRequest::default(), &Taken::default())
            .unwrap();
        let desired = vec![("vm-rename1".to_string(), id.clone())];
        first.reconcile(&desired).await.unwrap();
        first.shutdown().await;

        let second = Network::new(new.clone());
        second.ensure_host().await.unwrap();
        second.reconcile(&desired).await.unwrap();
        assert!(
            !host.links().contains(&"fcbridge".to_string()),
            "old bridge left behind"
        );
        assert!(host.ip(&["addr", "show", "hatchbr1"]).contains("inet 192.168.241.1/24"));
        assert_eq!(host.master_of(&id.tap_name).as_deref(), Some("hatchbr1"));
        assert!(dnsmasq_conf(&new).contains("\ninterface=hatchbr1\n"));
        let filter = host.iptables_rules("filter");
        assert!(!filter.contains("fcbridge"), "{filter}");
        second.shutdown().await;
    });
}
