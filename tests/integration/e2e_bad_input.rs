//! Bad input through the real daemon: a clear 4xx naming the field, and no
//! trace of the attempt on the host (row, TAP, rule, reservation, process).

use crate::common;

use common::e2e::Topology;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn rejected_creates_leave_nothing_behind() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let rules_before = topo.on_host("iptables-save", &[]);
    let links_before = topo.on_host("ip", &["-o", "link", "show"]);

    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"guest_ip": "10.0.0.5"}), 400, "guest_ip"),
        (json!({"guest_ip": "192.168.241.1"}), 400, "guest_ip"),
        (json!({"guest_ip": "192.168.241.0"}), 400, "guest_ip"),
        (json!({"guest_ip": "192.168.241.255"}), 400, "guest_ip"),
        (json!({"guest_ip": "not-an-ip"}), 400, "guest_ip"),
        (
            json!({"guest_mac": "02:fc:00:00:00:01\ndhcp-range=evil"}),
            400,
            "guest_mac",
        ),
        (json!({"guest_mac": "03:fc:00:00:00:01"}), 400, "guest_mac"),
        (json!({"guest_mac": "00:00:00:00:00:00"}), 400, "guest_mac"),
        (json!({"vcpu_count": 0}), 400, "vcpu_count"),
        (json!({"vcpu_count": 1000}), 400, "vcpu_count"),
        (json!({"mem_mib": 1}), 400, "mem_mib"),
        (
            json!({"enable_network": false, "guest_ip": "192.168.241.9"}),
            400,
            "guest_ip",
        ),
        (
            json!({"ssh_authorized_keys": ["ssh-ed25519 not-base64!"]}),
            400,
            "ssh_authorized_keys",
        ),
        (json!({"image_id": "img-missing"}), 400, "image_id"),
        (json!({"bogus": 1}), 400, "bogus"),
        (json!({"user_data": "x".repeat(64 * 1024 + 1)}), 413, "user_data"),
    ];
    for (mut body, status, field) in cases {
        if body.get("image_id").is_none() {
            body["image_id"] = json!(image_id);
        }
        let (got, error) = daemon.api("POST", "/vms", Some(&body));
        assert_eq!(got, status, "{body} → {error}");
        // The field is named exactly, or with the offending element's index.
        let named = error["error"]["field"].as_str().unwrap_or_default();
        assert!(
            named == field || named.starts_with(&format!("{field}[")),
            "{body} → {error}"
        );
        assert!(
            error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }

    // A taken guest_ip / guest_mac conflicts with the VM holding it.
    let (status, vm) = daemon.api(
        "POST",
        "/vms",
        Some(&json!({"image_id": image_id, "guest_ip": "192.168.241.50", "guest_mac": "02:fc:00:11:22:33"})),
    );
    assert_eq!(status, 201, "{vm}");
    assert_eq!(vm["guest_ip"], "192.168.241.50");
    assert_eq!(vm["guest_mac"], "02:fc:00:11:22:33");
    for (body, field) in [
        (json!({"image_id": image_id, "guest_ip": "192.168.241.50"}), "guest_ip"),
        (
            json!({"image_id": image_id, "guest_mac": "02:FC:00:11:22:33"}),
            "guest_mac",
        ),
    ] {
        let (got, error) = daemon.api("POST", "/vms", Some(&body));
        assert_eq!(got, 409, "{body} → {error}");
        assert_eq!(error["error"]["field"], field);
    }
    assert_eq!(
        daemon
            .api("DELETE", &format!("/vms/{}", vm["id"].as_str().unwrap()), None)
            .0,
        204
    );

    // Nothing of any of it remains.
    assert_eq!(daemon.api("GET", "/vms", None).1, json!([]));
    assert!(daemon.vmm_pids().is_empty());
    assert_eq!(
        topo.on_host("ip", &["-o", "link", "show"])
            .lines()
            .filter(|l| l.contains("fctap-"))
            .count(),
        0
    );
    assert_eq!(links_before.lines().filter(|l| l.contains("fctap-")).count(), 0);
    let rules_after = topo.on_host("iptables-save", &[]);
    assert!(!rules_after.contains("--dport 22"), "{rules_after}");
    assert_eq!(
        rules_before.lines().filter(|l| l.contains("DNAT")).count(),
        rules_after.lines().filter(|l| l.contains("DNAT")).count()
    );
    let paths = hatch::net::dnsmasq::Paths::new(&daemon.data_path().join("dhcp"));
    let hosts = std::fs::read_to_string(paths.hosts).unwrap_or_default();
    assert!(hosts.trim().is_empty(), "{hosts}");
}
