//! Counting established SSH sessions to a guest from the kernel's
//! connection tracking (`conntrack -L`).
//!
//! A session through the VM's forwarded port is DNATed to `guest_ip:22`, and
//! a direct one goes to `guest_ip:22`: either way the reply direction of the
//! flow comes from `guest_ip` port 22, which is what is counted.

use std::net::Ipv4Addr;

use crate::sys::cmd::{self, CmdError};

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("reading connection tracking failed: {0}")]
    Command(#[from] CmdError),
}

/// How many ESTABLISHED TCP flows in `listing` (output of `conntrack -L`)
/// have their reply coming from `guest_ip:port`.
pub fn count_established(listing: &str, guest_ip: Ipv4Addr, port: u16) -> usize {
    let ip = guest_ip.to_string();
    let port = port.to_string();
    listing
        .lines()
        .filter(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some("tcp") && line.split_whitespace().any(|word| word == "ESTABLISHED")
        })
        .filter(|line| reply_source(line).is_some_and(|(src, sport)| src == ip && sport == port))
        .count()
}

/// The reply tuple's `src=` and `sport=` (the second of each on the line).
fn reply_source(line: &str) -> Option<(&str, &str)> {
    let second = |key: &str| {
        line.split_whitespace()
            .filter_map(|word| word.strip_prefix(key))
            .nth(1)
    };
    Some((second("src=")?, second("sport=")?))
}

/// Established SSH (or any TCP service on `port`) sessions to the guest,
/// read with the `conntrack` tool in the current network namespace.
pub async fn established_sessions(guest_ip: Ipv4Addr, port: u16) -> Result<usize, ConntrackError> {
    let ip = guest_ip.to_string();
    let port_text = port.to_string();
    let args = ["-L", "-p", "tcp", "--state", "ESTABLISHED", "--reply-src", &ip, "--reply-port-src", &port_text];
    let listing = cmd::stdout("conntrack", args).await?;
    Ok(count_established(&listing, guest_ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
tcp      6 431999 ESTABLISHED src=192.0.2.7 dst=198.51.100.1 sport=50122 dport=22001 src=172.30.0.5 dst=192.0.2.7 sport=22 dport=50122 [ASSURED] mark=0 use=1
tcp      6 431990 ESTABLISHED src=172.30.0.1 dst=172.30.0.5 sport=40000 dport=22 src=172.30.0.5 dst=172.30.0.1 sport=22 dport=40000 [ASSURED] mark=0 use=1
tcp      6 118 TIME_WAIT src=192.0.2.7 dst=198.51.100.1 sport=50100 dport=22001 src=172.30.0.5 dst=192.0.2.7 sport=22 dport=50100 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=192.0.2.7 dst=198.51.100.1 sport=50123 dport=22002 src=172.30.0.6 dst=192.0.2.7 sport=22 dport=50123 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=192.0.2.7 dst=172.30.0.5 sport=50124 dport=8080 src=172.30.0.5 dst=192.0.2.7 sport=8080 dport=50124 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=172.30.0.5 dst=192.0.2.9 sport=22 dport=50125 src=192.0.2.9 dst=172.30.0.5 sport=50125 dport=22 [ASSURED] mark=0 use=1
udp      17 29 src=172.30.0.5 dst=172.30.0.1 sport=22 dport=53 src=172.30.0.1 dst=172.30.0.5 sport=53 dport=22 mark=0 use=1
";

    #[test]
    fn counts_established_flows_answered_by_the_guest_port() {
        let guest: Ipv4Addr = "172.30.0.5".parse().unwrap();
        // The forwarded session and the direct one; not TIME_WAIT, not other
        // guests, not other ports, not flows the guest started, not UDP.
        assert_eq!(count_established(LISTING, guest, 22), 2);
        assert_eq!(count_established(LISTING, guest, 8080), 1);
        assert_eq!(count_established(LISTING, "172.30.0.6".parse().unwrap(), 22), 1);
        assert_eq!(count_established(LISTING, "172.30.0.9".parse().unwrap(), 22), 0);
        assert_eq!(count_established("", guest, 22), 0);
        assert_eq!(count_established("garbage\nsrc=1", guest, 22), 0);
    }
}
