//! Bad input gives an error naming the field or variable, and changes
//! nothing on the host.

use crate::common;

use common::net::{config, dnsmasq_conf};
use common::netns::TestNetns;
use hatch::model::NetworkIdentity;
use hatch::net::{NetError, NetRequest, Network, Taken};

fn field_of<T: std::fmt::Debug>(result: Result<T, NetError>) -> &'static str {
    match result {
        Err(NetError::Invalid { field, message }) | Err(NetError::Conflict { field, message }) => {
            assert!(!message.is_empty());
            field
        }
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn bad_settings_name_their_variable_and_create_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("dhcp");
    let ok = ["fcbridge", "192.168.241.1/24", "0.0.0.0/0", "2200", "2299"];
    let cases = [
        (0, "bridge;rm", "HATCH_BRIDGE_NAME"),
        (0, "fctap-bridge", "HATCH_BRIDGE_NAME"),
        (1, "192.168.241.0/24", "HATCH_BRIDGE_CIDR"),
        (1, "192.168.241.1/31", "HATCH_BRIDGE_CIDR"),
        (1, "192.168.241.1", "HATCH_BRIDGE_CIDR"),
        (2, "any", "HATCH_SSH_ALLOWED_CIDR"),
        (2, "10.0.0.1/8", "HATCH_SSH_ALLOWED_CIDR"),
        (3, "0", "HATCH_SSH_PORT_MIN"),
        (4, "70000", "HATCH_SSH_PORT_MAX"),
        (3, "2300", "HATCH_SSH_PORT_MIN"),
    ];
    for (index, value, variable) in cases {
        let mut values = ok;
        values[index] = value;
        let result = hatch::net::settings::config_from_values(
            values[0],
            values[1],
            values[2],
            values[3],
            values[4],
            dir.clone(),
        );
        let err = result.as_ref().map(|_| ()).unwrap_err().to_string();
        assert!(err.starts_with(variable), "{value:?}: {err}");
        assert_eq!(field_of(result), variable, "{value:?}");
    }
    assert!(!dir.exists());
}

struct HostState {
    links: Vec<String>,
    nat: String,
    filter: String,
    conf: String,
    dnsmasq: Option<u32>,
}

fn snapshot(host: &TestNetns, network: &Network) -> HostState {
    HostState {
        links: host.links(),
        nat: host.iptables_rules("nat"),
        filter: host.iptables_rules("filter"),
        conf: dnsmasq_conf(network.config()),
        dnsmasq: network.dnsmasq_pid(),
    }
}

fn assert_unchanged(before: &HostState, after: &HostState, what: &str) {
    assert_eq!(before.links, after.links, "{what}: links changed");
    assert_eq!(before.nat, after.nat, "{what}: nat rules changed");
    assert_eq!(before.filter, after.filter, "{what}: filter rules changed");
    assert_eq!(before.conf, after.conf, "{what}: dnsmasq.conf changed");
    assert_eq!(before.dnsmasq, after.dnsmasq, "{what}: dnsmasq restarted");
}

#[test]
fn bad_guest_ip_and_mac_are_refused_without_side_effects() {
    let host = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let network = Network::new(config(scratch.path(), "0.0.0.0/0"));

    host.block_on(|| async {
        network.ensure_host().await.unwrap();
        let existing = network
            .allocate(
                "vm-held01",
                &NetRequest {
                    guest_ip: Some("192.168.241.60".into()),
                    guest_mac: Some("02:fc:00:00:00:60".into()),
                    ..Default::default()
                },
                &Taken::default(),
            )
            .unwrap();
        let all = vec![("vm-held01".to_string(), existing.clone())];
        network.attach_vm("vm-held01", &existing, &all).await.unwrap();
        let taken = Taken::from_identities([&existing]);
        let before = snapshot(&host, &network);

        let ip = |text: &str| NetRequest {
            guest_ip: Some(text.into()),
            guest_mac: None,
            ..Default::default()
        };
        let mac = |text: &str| NetRequest {
            guest_ip: None,
            guest_mac: Some(text.into()),
            ..Default::default()
        };
        let cases = [
            (ip("10.0.0.5"), "guest_ip"),
            (ip("192.168.241.1"), "guest_ip"),
            (ip("192.168.241.0"), "guest_ip"),
            (ip("192.168.241.255"), "guest_ip"),
            (ip("192.168.241.60"), "guest_ip"),
            (ip("192.168.241.7\nx"), "guest_ip"),
            (mac("02:fc:00:00:00"), "guest_mac"),
            (mac("02:fc:00:00:00:61\ndhcp-range=0.0.0.0,0.0.0.1"), "guest_mac"),
            (mac("01:00:5e:00:00:01"), "guest_mac"),
            (mac("ff:ff:ff:ff:ff:ff"), "guest_mac"),
            (mac("00:00:00:00:00:00"), "guest_mac"),
            (mac("02:FC:00:00:00:60"), "guest_mac"),
        ];
        for (request, field) in cases {
            assert_eq!(
                field_of(network.allocate("vm-new001", &request, &taken)),
                field,
                "{request:?}"
            );
        }

        // Identities that bypass allocate (a corrupted database row) are
        // refused by attach before anything is touched.
        let corrupt = [
            (
                NetworkIdentity {
                    guest_mac: "02:fc:00:00:00:61\nuser=nobody".into(),
                    ..existing.clone()
                },
                "guest_mac",
            ),
            (
                NetworkIdentity {
                    guest_ip: "10.1.2.3".parse().unwrap(),
                    ..existing.clone()
                },
                "guest_ip",
            ),
            (
                NetworkIdentity {
                    tap_name: "eth0".into(),
                    ..existing.clone()
                },
                "tap_name",
            ),
        ];
        for (id, field) in corrupt {
            assert_eq!(
                field_of(network.attach_vm("vm-new001", &id, &all).await),
                field,
                "{id:?}"
            );
        }
        assert_eq!(field_of(network.attach_vm("vm new", &existing, &all).await), "vm_id");
        assert_unchanged(&before, &snapshot(&host, &network), "bad input");
        network.shutdown().await;
    });
}
