//! Established SSH sessions to a guest, read from the kernel's connection
//! tracking table (for the idle monitor: a VM someone is logged into is
//! not idle).

use crate::model::NetworkIdentity;
use crate::sys::cmd;

use super::NetError;

/// Counts ESTABLISHED TCP connections whose reply comes from the guest's
/// port 22: sessions through the forward (DNATed) and direct ones from the
/// host alike.
pub async fn established_ssh_sessions(id: &NetworkIdentity) -> Result<usize, NetError> {
    let ip = id.guest_ip.to_string();
    let out = cmd::stdout(
        "conntrack",
        [
            "-L",
            "-p",
            "tcp",
            "--state",
            "ESTABLISHED",
            "--reply-src",
            ip.as_str(),
            "--reply-port-src",
            "22",
        ],
    )
    .await?;
    Ok(count_entries(&out))
}

fn count_entries(listing: &str) -> usize {
    listing
        .lines()
        .filter(|line| line.trim_start().starts_with("tcp "))
        .count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_tcp_lines_only() {
        let out = "tcp      6 431999 ESTABLISHED src=10.0.0.2 dst=10.0.0.1 sport=5 dport=2200 src=192.168.241.10 dst=10.0.0.2 sport=22 dport=5 [ASSURED] mark=0 use=1\n";
        assert_eq!(super::count_entries(out), 1);
        assert_eq!(super::count_entries(""), 0);
    }
}
