//! SSH forwards host:ssh_port → guest:22 with a real SSH server (dropbear)
//! in a guest namespace, reached from another "host" (client namespace)
//! inside HATCH_SSH_ALLOWED_CIDR, from one outside it, and from the host
//! itself; then detach removes everything.

use crate::common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use common::net::{config, configure_guest, dnsmasq_conf, scan_host_key, ssh_banner, start_sshd};
use common::netns::TestNetns;
use hatch::net::{NetRequest, Network, Taken};

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    (ip, port).into()
}

#[test]
fn forward_answers_allowed_sources_and_the_host_only_and_detach_removes_it() {
    let host = TestNetns::new();
    let guest = TestNetns::new();
    let allowed = TestNetns::new();
    let denied = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let allowed_link = host.add_client(&allowed, 1);
    let denied_link = host.add_client(&denied, 2);
    let cfg = config(scratch.path(), &format!("{}/32", allowed_link.client_ip));
    let network = Network::new(cfg.clone());
    let vm_id = "vm-ssh001";

    host.block_on(|| async {
        network.ensure_host().await.unwrap();
        let id = network
            .allocate(vm_id, &NetRequest::default(), &Taken::default())
            .unwrap();
        assert_eq!(id.ssh_port, 2200);
        host.plug_guest(&guest, &id.tap_name, &id.guest_mac);
        network
            .attach_vm(vm_id, &id, &[(vm_id.to_string(), id.clone())])
            .await
            .unwrap();
        configure_guest(&guest, &id, &cfg);
        let (_sshd, host_key) = start_sshd(&guest, scratch.path());
        let port = id.ssh_port;

        // Another host inside the allowed CIDR: a full SSH key exchange
        // reaches exactly the guest's server.
        assert_eq!(
            scan_host_key(&allowed, allowed_link.host_ip, port).as_deref(),
            Some(host_key.as_str())
        );
        // Outside the CIDR: nothing answers, on any host address.
        assert_eq!(denied.run(|| ssh_banner(addr(denied_link.host_ip, port))), None);
        assert_eq!(denied.run(|| ssh_banner(addr(allowed_link.host_ip, port))), None);
        // The host itself (nat OUTPUT), also through 127.0.0.1.
        for local in [Ipv4Addr::LOCALHOST, allowed_link.host_ip, cfg.gateway] {
            assert!(
                ssh_banner(addr(local, port)).is_some(),
                "no SSH from the host via {local}:{port}"
            );
        }

        // The guide's troubleshooting commands find the forward and NAT.
        let prerouting = host.exec_ok("iptables", &["-t", "nat", "-L", "PREROUTING", "-n", "-v"]);
        let shown: Vec<&str> = prerouting.lines().filter(|l| l.contains(&port.to_string())).collect();
        assert_eq!(shown.len(), 1, "{prerouting}");
        assert!(shown[0].contains(&format!("{}:22", id.guest_ip)), "{prerouting}");
        let postrouting = host.exec_ok("iptables", &["-t", "nat", "-L", "POSTROUTING", "-n", "-v"]);
        assert!(postrouting.contains("MASQUERADE"), "{postrouting}");
        let ping = host.exec("busybox", &["ping", "-c", "1", "-W", "3", &id.guest_ip.to_string()]);
        assert!(
            ping.status.success(),
            "ping from host: {}",
            String::from_utf8_lossy(&ping.stdout)
        );

        // An open session through the forward is seen in conntrack.
        let mut session = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                allowed.name(),
                "busybox",
                "nc",
                &allowed_link.host_ip.to_string(),
                &port.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut seen = 0;
        for _ in 0..100 {
            seen = network.established_ssh_sessions(&id).await.unwrap();
            if seen > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen, 1, "session not found in conntrack");
        session.kill().unwrap();
        session.wait().unwrap();

        // Guests do not reach host services; the host does.
        let service = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8099)).unwrap();
        assert!(guest
            .run(|| TcpStream::connect_timeout(&addr(cfg.gateway, 8099), Duration::from_secs(3)))
            .is_err());
        assert!(TcpStream::connect_timeout(&addr(cfg.gateway, 8099), Duration::from_secs(3)).is_ok());
        drop(service);

        // Detach: TAP, forward and reservation are gone.
        network.detach_vm(vm_id, &id, &[]).await.unwrap();
        assert!(!host.links().contains(&id.tap_name));
        for table in ["nat", "filter"] {
            let rules = host.iptables_rules(table);
            assert!(
                !rules.contains(vm_id) && !rules.contains(&format!("--dport {port}")),
                "{rules}"
            );
        }
        assert!(!dnsmasq_conf(&cfg).contains(&id.guest_mac));
        assert_eq!(allowed.run(|| ssh_banner(addr(allowed_link.host_ip, port))), None);
        assert!(ssh_banner(addr(Ipv4Addr::LOCALHOST, port)).is_none());
        network.shutdown().await;
    });
}

#[test]
fn a_port_bound_by_another_program_is_skipped_and_exhaustion_is_reported() {
    let host = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let cfg = hatch::net::settings::config_from_values(
        "fcbridge",
        "192.168.241.1/24",
        "0.0.0.0/0",
        "2200",
        "2201",
        scratch.path().join("dhcp"),
    )
    .unwrap();
    let network = Network::new(cfg);
    host.run(|| {
        let other_program = TcpListener::bind((Ipv4Addr::LOCALHOST, 2200)).unwrap();
        let id = network
            .allocate("vm-port01", &NetRequest::default(), &Taken::default())
            .unwrap();
        assert_eq!(id.ssh_port, 2201);
        let err = network
            .allocate("vm-port02", &NetRequest::default(), &Taken::from_identities([&id]))
            .unwrap_err();
        assert!(
            matches!(err, hatch::net::NetError::Exhausted { what: "SSH port", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("2200-2201"), "{err}");
        drop(other_program);
        // A child another test forks at this moment holds a copy of the
        // listener until it execs, so the port is free again soon after the
        // drop rather than at once.
        let freed = common::netns::wait_for(Duration::from_secs(5), || {
            network
                .allocate("vm-port02", &NetRequest::default(), &Taken::from_identities([&id]))
                .ok()
        })
        .expect("the port the other program let go of is allocated again");
        assert_eq!(freed.ssh_port, 2200);
    });
}
