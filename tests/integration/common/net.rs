//! Fixtures for the networking tests: a "host" namespace running
//! `hatch::net::Network`, guests plugged into its bridge, real DHCP clients
//! and SSH servers.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use hatch::model::NetworkIdentity;
use hatch::net::settings::config_from_values;
use hatch::net::NetConfig;

use super::netns::{run_ok, TestNetns};

/// The guide's defaults, with the DHCP files in `dir`.
pub fn config(dir: &Path, ssh_allowed: &str) -> NetConfig {
    config_from_values(
        "fcbridge",
        "192.168.241.1/24",
        ssh_allowed,
        "2200",
        "2299",
        dir.join("dhcp"),
    )
    .expect("valid test config")
}

pub fn dnsmasq_conf(cfg: &NetConfig) -> String {
    std::fs::read_to_string(cfg.dhcp_dir.join("dnsmasq.conf")).unwrap_or_default()
}

/// The reservation as dnsmasq.conf lists it (a comment, for the guide's grep).
pub fn reservation_line(vm_id: &str, id: &NetworkIdentity) -> String {
    format!("# dhcp-host={},{},{}", id.guest_mac, id.guest_ip, vm_id)
}

/// The reservations dnsmasq serves (its `dhcp-hostsfile`), one per line.
pub fn dhcp_hosts(cfg: &NetConfig) -> Vec<String> {
    std::fs::read_to_string(hosts_file(cfg))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// dnsmasq's `dhcp-hostsfile` for the daemon whose DHCP directory `cfg` names.
pub fn hosts_file(cfg: &NetConfig) -> std::path::PathBuf {
    hatch::net::dnsmasq::Paths::new(&cfg.dhcp_dir).hosts
}

/// A reservation as `hosts.dhcp` holds it.
pub fn hosts_line(vm_id: &str, id: &NetworkIdentity) -> String {
    format!("{},{},{}", id.guest_mac, id.guest_ip, vm_id)
}

/// What a real DHCP client (busybox udhcpc) in `guest` got on eth0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: String,
    pub router: String,
    pub dns: String,
}

/// Runs udhcpc once on the guest's eth0. The hook script only prints the
/// offer (it configures nothing), so the lease is exactly what the server
/// said.
pub fn dhcp_lease(guest: &TestNetns, scratch: &Path) -> Option<Lease> {
    let script = scratch.join("udhcpc-report.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && echo \"LEASE ip=$ip router=$router dns=$dns\"\nexit 0\n",
    )
    .unwrap();
    run_ok("chmod", &["0755", script.to_str().unwrap()]);
    let out = guest.exec(
        "busybox",
        &[
            "udhcpc",
            "-f",
            "-q",
            "-n",
            "-i",
            "eth0",
            "-t",
            "8",
            "-T",
            "1",
            "-s",
            script.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|line| line.starts_with("LEASE "))?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_string()
    };
    Some(Lease {
        ip: field("ip"),
        router: field("router"),
        dns: field("dns"),
    })
}

/// Gives the guest its address statically (what DHCP would have done).
pub fn configure_guest(guest: &TestNetns, id: &NetworkIdentity, cfg: &NetConfig) {
    guest.ip(&[
        "addr",
        "add",
        &format!("{}/{}", id.guest_ip, cfg.prefix_len),
        "dev",
        "eth0",
    ]);
    guest.ip(&["route", "add", "default", "via", &cfg.gateway.to_string()]);
}

/// A real SSH server (dropbear) on the guest's port 22 with a fresh host
/// key; returns the process and the key's `ssh-ed25519 AAAA...` text.
pub fn start_sshd(guest: &TestNetns, scratch: &Path) -> (Child, String) {
    let key = scratch.join(format!("{}-host-key", guest.name()));
    let key_path = key.to_str().unwrap();
    run_ok("dropbearkey", &["-t", "ed25519", "-f", key_path]);
    let public = run_ok("dropbearkey", &["-y", "-f", key_path]);
    let public = public
        .lines()
        .find(|l| l.starts_with("ssh-ed25519 "))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .expect("dropbearkey -y prints the public key");
    let child = guest.spawn("dropbear", &["-F", "-E", "-s", "-p", "22", "-r", key_path]);
    let up = super::netns::wait_for(Duration::from_secs(10), || {
        guest.run(|| ssh_banner((Ipv4Addr::LOCALHOST, 22).into())).map(|_| ())
    });
    assert!(up.is_some(), "dropbear did not start in {}", guest.name());
    (child, public)
}

/// Connects from the calling thread's namespace and returns the server's
/// identification line (`SSH-2.0-...`), or None if nothing SSH answered.
pub fn ssh_banner(addr: SocketAddr) -> Option<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.starts_with("SSH-2.0-").then(|| line.trim().to_string())
}

/// The host key offered at `addr:port`, fetched from `ns` with a real SSH
/// key exchange (`ssh-keyscan`), as `ssh-ed25519 AAAA...`.
pub fn scan_host_key(ns: &TestNetns, addr: Ipv4Addr, port: u16) -> Option<String> {
    let out = ns.exec(
        "ssh-keyscan",
        &["-T", "5", "-t", "ed25519", "-p", &port.to_string(), &addr.to_string()],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("ssh-ed25519 "))
        .map(|l| l.split_whitespace().skip(1).take(2).collect::<Vec<_>>().join(" "))
}
