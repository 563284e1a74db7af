//! SSH sessions are counted from the kernel's connection tracking, for a
//! session through a forwarded (DNATed) port and a direct one, inside a
//! namespace this test creates (root required; nothing leaves it).

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use common::netns::TestNetns;
use hatch::idle::conntrack::established_sessions;

const GUEST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 5);

async fn count_until(expected: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let count = established_sessions(GUEST, 22).await.expect("conntrack -L");
        if count == expected || tokio::time::Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn established_ssh_sessions_are_counted_from_conntrack() {
    let ns = TestNetns::new();
    // The "guest" address lives on the namespace's loopback.
    ns.ip(&["addr", "add", "10.77.0.5/24", "dev", "lo"]);
    // The forwarded port, as Hatch's SSH port forward does it.
    let dnat = ["-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "10.77.0.9", "--dport", "2222"];
    let mut rule: Vec<&str> = dnat.to_vec();
    rule.extend(["-j", "DNAT", "--to-destination", "10.77.0.5:22"]);
    ns.exec_ok("iptables", &rule);

    ns.block_on(|| async {
        let listener = TcpListener::bind((GUEST, 22)).await.expect("listen on the guest's port 22");
        assert_eq!(count_until(0).await, 0);

        let forwarded = TcpStream::connect("10.77.0.9:2222").await.expect("connect through the forward");
        let (forwarded_server, _) = listener.accept().await.expect("accept");
        assert_eq!(count_until(1).await, 1, "the forwarded session");

        let direct = TcpStream::connect((GUEST, 22)).await.expect("connect directly");
        let (direct_server, _) = listener.accept().await.expect("accept");
        assert_eq!(count_until(2).await, 2, "forwarded and direct sessions");
        // Another guest address has none.
        assert_eq!(established_sessions(Ipv4Addr::new(10, 77, 0, 6), 22).await.unwrap(), 0);

        drop((forwarded, forwarded_server, direct, direct_server));
        assert_eq!(count_until(0).await, 0, "closed sessions are no longer established");
    });
}
