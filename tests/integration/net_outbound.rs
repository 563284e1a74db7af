//! Outbound access: guests reach other hosts through the host, masqueraded
//! behind the host's address; the bridge carries the gateway address.

use crate::common;

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use common::net::{config, configure_guest};
use common::netns::TestNetns;
use hatch::net::{NetRequest, Network, Taken};

#[test]
fn guest_traffic_to_other_hosts_is_masqueraded() {
    let host = TestNetns::new();
    let guest = TestNetns::new();
    let upstream = TestNetns::new();
    let scratch = tempfile::tempdir().unwrap();
    let link = host.add_client(&upstream, 7);
    let cfg = config(scratch.path(), "0.0.0.0/0");
    let network = Network::new(cfg.clone());

    host.block_on(|| async {
        network.ensure_host().await.unwrap();
        let id = network
            .allocate("vm-out001", &NetRequest::default(), &Taken::default())
            .unwrap();
        host.plug_guest(&guest, &id.tap_name, &id.guest_mac);
        network.attach_vm("vm-out001", &id, &[]).await.unwrap();
        configure_guest(&guest, &id, &cfg);

        // The guide's check: `ip addr show fcbridge` shows the gateway.
        let bridge = host.ip(&["addr", "show", "fcbridge"]);
        assert!(bridge.contains("inet 192.168.241.1/24"), "{bridge}");
        // The gateway's MAC is fixed, not taken from whichever TAP joined.
        assert!(bridge.contains("link/ether 02:fd:c0:a8:f1:01"), "{bridge}");
        assert_eq!(host.exec_ok("cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(), "1");
        // No IPv6 path from guests to the host around the IPv4 rules.
        for dev in ["fcbridge", id.tap_name.as_str()] {
            let path = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
            assert_eq!(host.exec_ok("cat", &[&path]).trim(), "1", "{dev}");
        }
        assert!(!host.ip(&["-6", "addr", "show", "dev", "fcbridge"]).contains("inet6"));

        let seen_from = std::thread::scope(|scope| {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let server = scope.spawn(|| {
                upstream.run(move || {
                    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8080)).unwrap();
                    ready_tx.send(()).unwrap();
                    let (mut stream, peer) = listener.accept().unwrap();
                    let mut greeting = String::new();
                    stream.read_to_string(&mut greeting).unwrap();
                    (peer.ip(), greeting)
                })
            });
            ready_rx.recv().unwrap();
            guest.run(|| {
                use std::io::Write;
                let mut stream = TcpStream::connect_timeout(&(link.client_ip, 8080).into(), Duration::from_secs(5))
                    .expect("guest reaches the upstream host");
                stream.write_all(b"hello").unwrap();
            });
            server.join().unwrap()
        });
        assert_eq!(
            seen_from,
            (link.host_ip.into(), "hello".to_string()),
            "not masqueraded behind the host"
        );
        network.shutdown().await;
    });
}
