//! Isolation with real guests (QEMU TCG, `minimal` image, real dnsmasq,
//! nftables and iptables), in namespaces the test makes: guests cannot
//! reach each other (unless HATCH_VM_TO_VM=allow), spoof MAC, ARP or IP
//! addresses, serve DHCP, reach the host's own services or leave through
//! anything their `egress` and HATCH_EGRESS_DENY_CIDRS do not allow.
//!
//! One daemon and three guests serve every assertion: A (`internet`), B
//! (an allow list) and C (`none`, from a template); the daemon is restarted with
//! HATCH_VM_TO_VM=allow half-way, the guests keep running.

use crate::common;

use std::time::{Duration, Instant};

use common::e2e::{create_ready_vm, Topology, VmView};
use common::hatchd::TestKey;
use common::netns::TestNetns;
use serde_json::{json, Value};

const GATEWAY: &str = "192.168.241.1";
/// The test "internet": a namespace behind the Hatch host's default route.
const INET_ADDR: &str = "10.250.9.2";
/// Another network there, the one B's allow list names.
const ALLOWED_ADDR: &str = "198.51.100.7";
const METADATA_ADDR: &str = "169.254.169.254";

/// Runs `command` in a guest; never retries on the command's own failure.
fn guest(topo: &Topology, key: &TestKey, vm: &VmView, command: &str) -> String {
    topo.ssh(key, "root", vm.ssh_port, &format!("{command}\ntrue"))
}

/// Whether the guest gets `tag` back from a TCP server at `addr:port`.
fn tcp_reaches(topo: &Topology, key: &TestKey, vm: &VmView, addr: &str, port: u16, tag: &str) -> bool {
    // busybox nc exits at the end of its input: keep it open for the answer.
    let out = guest(topo, key, vm, &format!("sleep 2 | nc -w 3 {addr} {port} 2>&1"));
    eprintln!("[{}] nc {addr} {port}: {out:?}", vm.id);
    out.contains(tag)
}

fn pings(topo: &Topology, key: &TestKey, vm: &VmView, addr: &str) -> bool {
    guest(
        topo,
        key,
        vm,
        &format!("ping -c 1 -W 2 {addr} >/dev/null 2>&1 && echo PING-OK"),
    )
    .contains("PING-OK")
}

/// A test server process, stopped when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP server answering `tag`, on every address of `ns`, once it listens.
fn serve(ns: &TestNetns, port: u16, tag: &str) -> Server {
    let server = Server(ns.spawn(
        "socat",
        &[
            &format!("TCP-LISTEN:{port},fork,reuseaddr"),
            &format!("SYSTEM:echo {tag}"),
        ],
    ));
    wait_for("the test server listening", Duration::from_secs(10), || {
        ns.exec_ok("ss", &["-Hltn", &format!("sport = :{port}")])
            .contains(&port.to_string())
    });
    server
}

/// Packets counted by the rule whose comment is `name` in `ns`'s INPUT.
fn counted(ns: &TestNetns, name: &str) -> u64 {
    let out = ns.exec_ok("iptables", &["-w", "-L", "INPUT", "-n", "-v", "-x"]);
    out.lines()
        .find(|l| l.contains(name))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn guests_are_isolated_from_each_other_the_host_and_what_their_egress_forbids() {
    let image = common::images::minimal_image().await;
    let (topo, mut daemon, image_id) = Topology::with_daemon(&image, &[("HATCH_RECONCILE_INTERVAL", "1s")]);
    let key = TestKey::generate();

    // The test "internet": default route of the Hatch host, with a server
    // on its link address, on an allowed network and at the metadata address.
    let inet = TestNetns::new();
    topo.host().add_client(&inet, 9);
    topo.host().ip(&["route", "add", "default", "via", INET_ADDR]);
    inet.ip(&["link", "set", "dev", "lo", "up"]);
    for addr in [ALLOWED_ADDR, METADATA_ADDR] {
        inet.ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
    }
    let _inet_server = serve(&inet, 8080, "INET-OK");
    // Pings of two sizes counted where they arrive: real and forged sources.
    for (size, name) in [("1128", "real-source"), ("1262", "forged-source")] {
        inet.exec_ok(
            "iptables",
            &[
                "-w",
                "-A",
                "INPUT",
                "-p",
                "icmp",
                "-m",
                "length",
                "--length",
                size,
                "-m",
                "comment",
                "--comment",
                name,
                "-j",
                "ACCEPT",
            ],
        );
    }
    // A host service guests must not reach, on every host address.
    let _host_server = serve(topo.host(), 9999, "HOST-OK");

    // Bad `egress` values: 400 naming the field, nothing created.
    let many: Vec<String> = (0..65).map(|i| format!("10.{i}.0.0/16")).collect();
    for bad in [
        json!("everything"),
        json!(["10.0.0.0/33"]),
        json!(["10.0.0.1/8"]),
        json!(many),
        json!(7),
    ] {
        let body = json!({"image_id": image_id, "egress": bad});
        let (status, error) = daemon.api("POST", "/vms", Some(&body));
        assert_eq!(status, 400, "{bad}: {error}");
        assert_eq!(error["error"]["field"], "egress", "{error}");
    }
    let (_, list) = daemon.api("GET", "/vms", None);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");

    let a = create_ready_vm(&daemon, &image_id, &key, json!({}));
    let b = create_ready_vm(&daemon, &image_id, &key, json!({"egress": ["198.51.100.0/24"]}));
    // C takes `none` from its template.
    let (status, template) = daemon.api(
        "POST",
        "/templates",
        Some(&json!({"name": "offline", "image_id": image_id, "egress": "none", "ssh_authorized_keys": [key.public]})),
    );
    assert_eq!(status, 201, "{template}");
    let (status, c) = daemon.api(
        "POST",
        "/vms?wait=ready&timeout=180",
        Some(&json!({"template_id": template["id"]})),
    );
    assert_eq!(status, 201, "{c}");
    let c = VmView::from(&c);
    let shown = |vm: &VmView| -> Value { daemon.api("GET", &format!("/vms/{}", vm.id), None).1["egress"].clone() };
    assert_eq!(shown(&a), json!("internet"));
    assert_eq!(shown(&b), json!(["198.51.100.0/24"]));
    assert_eq!(shown(&c), json!("none"));

    // --- HATCH_VM_TO_VM=deny (default): nothing between guests.
    guest(
        &topo,
        &key,
        &b,
        "setsid nc -ll -p 7777 -e echo B-OK </dev/null >/dev/null 2>&1 &",
    );
    assert!(!pings(&topo, &key, &a, &b.guest_ip), "A pinged B");
    assert!(
        !tcp_reaches(&topo, &key, &a, &b.guest_ip, 7777, "B-OK"),
        "A reached B over TCP"
    );
    // Not through B's SSH forward on the gateway either.
    assert!(
        !tcp_reaches(&topo, &key, &a, GATEWAY, b.ssh_port, "SSH"),
        "A reached B's SSH forward"
    );

    // --- Egress: the deny list, `internet`, an allow list, `none`.
    assert!(
        tcp_reaches(&topo, &key, &a, INET_ADDR, 8080, "INET-OK"),
        "A has no internet"
    );
    assert!(tcp_reaches(&topo, &key, &a, ALLOWED_ADDR, 8080, "INET-OK"));
    assert!(
        !tcp_reaches(&topo, &key, &a, METADATA_ADDR, 8080, "INET-OK"),
        "A reached the metadata address"
    );
    assert!(
        tcp_reaches(&topo, &key, &b, ALLOWED_ADDR, 8080, "INET-OK"),
        "B's allow list"
    );
    assert!(
        !tcp_reaches(&topo, &key, &b, INET_ADDR, 8080, "INET-OK"),
        "B left its allow list"
    );
    assert!(
        !tcp_reaches(&topo, &key, &c, INET_ADDR, 8080, "INET-OK"),
        "C has egress none"
    );
    assert!(
        !tcp_reaches(&topo, &key, &c, ALLOWED_ADDR, 8080, "INET-OK"),
        "C has egress none"
    );
    assert!(!pings(&topo, &key, &c, INET_ADDR), "C pinged out with egress none");
    // `none` still has DNS on the gateway (an answer, not a timeout) and DHCP.
    let dns = guest(&topo, &key, &c, &format!("nslookup hatchtest {GATEWAY} 2>&1"));
    assert!(!dns.contains("timed out") && !dns.is_empty(), "{dns}");
    let lease = guest(&topo, &key, &c, "udhcpc -i eth0 -n -q -t 3 -T 2 -s /bin/true 2>&1");
    assert!(lease.contains(&format!("obtained from {GATEWAY}")), "{lease}");

    // --- The host: only DHCP and DNS on the gateway.
    for addr in [GATEWAY, topo.host_addr(), "10.250.9.1"] {
        assert!(
            !tcp_reaches(&topo, &key, &a, addr, 9999, "HOST-OK"),
            "A reached a host service on {addr}"
        );
    }
    // Loopback through the gateway (what route_localnet would route).
    let via_gw = guest(
        &topo,
        &key,
        &a,
        &format!(
            "sysctl -w net.ipv4.conf.eth0.route_localnet=1 >/dev/null; ip route del local 127.0.0.0/8 dev lo table local; \
             ip route add 127.0.0.9/32 via {GATEWAY}; echo | nc -w 3 127.0.0.9 9999; \
             ip route del 127.0.0.9/32; ip route add local 127.0.0.0/8 dev lo table local"
        ),
    );
    assert!(!via_gw.contains("HOST-OK"), "A reached the host's loopback: {via_gw}");

    // --- Forged sources never leave the host; the real one does.
    guest(&topo, &key, &a, &format!("ping -c 2 -W 2 -s 1100 {INET_ADDR}"));
    assert_eq!(counted(&inet, "real-source"), 2, "A's own pings did not arrive");
    for forged in ["10.99.0.5", &b.guest_ip] {
        guest(
            &topo,
            &key,
            &a,
            &format!(
                "ip addr add {forged}/32 dev eth0; ping -c 2 -W 2 -s 1234 -I {forged} {INET_ADDR}; ip addr del {forged}/32 dev eth0"
            ),
        );
    }
    assert_eq!(
        counted(&inet, "forged-source"),
        0,
        "a forged source reached the internet"
    );

    // --- HATCH_VM_TO_VM=allow: guests reach each other, still unspoofed.
    daemon.restart_with(&[("HATCH_VM_TO_VM", "allow")]);
    wait_for("guest-to-guest traffic allowed", Duration::from_secs(60), || {
        pings(&topo, &key, &a, &b.guest_ip)
    });
    assert!(
        tcp_reaches(&topo, &key, &a, &b.guest_ip, 7777, "B-OK"),
        "A cannot reach B over TCP"
    );

    // A claims B's address with gratuitous ARP: the host keeps B's MAC.
    // (SSH to B first, so the host holds a neighbour entry the claim
    // would overwrite.)
    assert_eq!(topo.ssh(&key, "root", b.ssh_port, "hostname").trim(), b.id);
    guest(
        &topo,
        &key,
        &a,
        &format!(
            "ip addr add {}/24 dev eth0; arping -U -c 3 -I eth0 -s {0} {0}; ip addr del {0}/24 dev eth0",
            b.guest_ip
        ),
    );
    let neigh = topo.on_host("ip", &["neigh", "show", &b.guest_ip]);
    assert!(
        neigh.to_lowercase().contains(&b.guest_mac.to_lowercase()),
        "host neighbour entry for B: {neigh}"
    );
    assert_eq!(topo.ssh(&key, "root", b.ssh_port, "hostname").trim(), b.id);

    // A DHCP server in A never answers C.
    guest(
        &topo,
        &key,
        &a,
        &format!(
            "printf 'start 192.168.241.200\\nend 192.168.241.210\\ninterface eth0\\nlease_file /tmp/leases\\noption router {}\\n' > /tmp/udhcpd.conf; \
             touch /tmp/leases; setsid udhcpd -f /tmp/udhcpd.conf </dev/null >/tmp/udhcpd.log 2>&1 &",
            a.guest_ip
        ),
    );
    for _ in 0..2 {
        let lease = guest(&topo, &key, &c, "udhcpc -i eth0 -n -q -t 3 -T 2 -s /bin/true 2>&1");
        assert!(
            lease.contains(&format!("lease of {} obtained from {GATEWAY}", c.guest_ip)),
            "{lease}"
        );
        assert!(!lease.contains(&a.guest_ip), "{lease}");
    }

    // Flushing a VM's bridge chain closes (A is cut off), and the table
    // comes back within the reconcile interval; so does a deleted table.
    let chain = format!("vm-{}", a.id.trim_start_matches("vm-"));
    topo.on_host("nft", &["flush", "chain", "bridge", "hatch", &chain]);
    wait_for("the bridge table repaired", Duration::from_secs(20), || {
        topo.on_host("nft", &["list", "chain", "bridge", "hatch", &chain])
            .contains("ether saddr")
    });
    topo.on_host("nft", &["delete", "table", "bridge", "hatch"]);
    wait_for("the bridge table recreated", Duration::from_secs(20), || {
        topo.on_host("nft", &["list", "chain", "bridge", "hatch", &chain])
            .contains("ether saddr")
    });
    assert!(pings(&topo, &key, &a, &b.guest_ip), "A and B after the repairs");
    let (_, events) = daemon.api("GET", "/host/events", None);
    assert!(events.to_string().contains("nftables"), "no repair recorded: {events}");

    for vm in [&a, &b, &c] {
        let (status, body) = daemon.api("DELETE", &format!("/vms/{}", vm.id), None);
        assert!(status == 200 || status == 204, "{body}");
        topo.assert_nothing_left(&daemon, vm);
    }
    let left = topo.on_host("nft", &["list", "table", "bridge", "hatch"]);
    assert!(!left.contains("jump vm-"), "per-VM chains left: {left}");
    drop(daemon);
}
