//! Host networking for VMs, as the networking guide describes: a bridge with
//! the gateway address, one TAP per networked VM, address allocation, DHCP
//! reservations served by a supervised dnsmasq, outbound NAT and SSH port
//! forwards in Hatch's own iptables chains.
//!
//! The database is the source of truth: [`Network::reconcile`] derives the
//! host state (TAPs, reservations, forwards) from the list of networked VMs
//! it is given, and is idempotent. It also repairs drift (a flushed chain, a
//! deleted jump or TAP, the bridge's address gone, dnsmasq dead or its
//! configuration edited) and says what it repaired in [`ReconcileReport`];
//! on a clean host it only reads, so it can run every few seconds.
//!
//! Orchestration sees all this through the [`HostNetwork`] trait, which
//! [`Network`] implements (tests drive orchestration with a fake).

mod alloc;
mod backend;
mod bridge;
pub mod cidr;
mod conntrack;
pub mod dnsmasq;
pub mod firewall;
mod host;
pub mod ipam;
mod link;
pub mod mac;
pub mod names;
mod neigh;
pub mod ports;
pub mod settings;
mod tap;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::model::NetworkIdentity;

pub use backend::HostNetwork;
pub use host::{Network, ReconcileReport};

/// Network settings (HATCH_BRIDGE_*, HATCH_SSH_*), validated at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub bridge_name: String,
    /// Gateway address on the bridge.
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    /// Source network allowed to reach guests through SSH forwards.
    pub ssh_allowed: (Ipv4Addr, u8),
    pub ssh_port_min: u16,
    pub ssh_port_max: u16,
    /// `$HATCH_DATA_DIR/dhcp`: dnsmasq.conf, leases, pid.
    pub dhcp_dir: PathBuf,
    /// HATCH_VM_TO_VM=allow: guests may exchange traffic with each other
    /// (default deny: every guest only talks to the gateway and beyond).
    pub vm_to_vm_allowed: bool,
    /// HATCH_EGRESS_DENY_CIDRS: networks no guest may reach, whatever its
    /// own `egress` (default the link-local range, home of cloud metadata).
    pub egress_deny: Vec<cidr::Ipv4Cidr>,
}

/// What the caller asked for at create time (both optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetRequest {
    pub guest_ip: Option<String>,
    pub guest_mac: Option<String>,
    /// Validated at the API edge; kept with the identity.
    pub egress: crate::model::Egress,
}

/// Resources already held by other VMs (from the database).
#[derive(Debug, Clone, Default)]
pub struct Taken {
    pub ips: std::collections::HashSet<Ipv4Addr>,
    pub macs: std::collections::HashSet<String>,
    pub taps: std::collections::HashSet<String>,
    pub ports: std::collections::HashSet<u16>,
}

impl Taken {
    pub fn from_identities<'a>(ids: impl IntoIterator<Item = &'a NetworkIdentity>) -> Self {
        let mut taken = Taken::default();
        for id in ids {
            taken.ips.insert(id.guest_ip);
            taken.macs.insert(id.guest_mac.clone());
            taken.taps.insert(id.tap_name.clone());
            taken.ports.insert(id.ssh_port);
        }
        taken
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Bad user input; `field` names the request field.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    /// A value requested by the user is held by another VM.
    #[error("{field}: {message}")]
    Conflict { field: &'static str, message: String },
    #[error("no free {what} left in {pool}")]
    Exhausted { what: &'static str, pool: String },
    #[error(transparent)]
    Command(#[from] crate::sys::cmd::CmdError),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dnsmasq: {0}")]
    Dhcp(String),
    /// Host state could not be read or changed (unexpected tool output...).
    #[error("host networking: {0}")]
    Host(String),
}
