//! The iptables rules Hatch wants, as data. Every rule carries a comment
//! that names it and ends with a fingerprint of its table, chain and match
//! arguments, so "is this rule still wanted?" is a comparison of comments,
//! and a rule whose parameters changed (new CIDR, new port) is replaced.

use sha2::{Digest, Sha256};

use crate::model::{Egress, NetworkIdentity};
use crate::net::cidr::Ipv4Cidr;
use crate::net::NetConfig;

pub const NAT: &str = "nat";
pub const FILTER: &str = "filter";
pub const PREROUTING_CHAIN: &str = "HATCH-PREROUTING";
pub const OUTPUT_CHAIN: &str = "HATCH-OUTPUT";
pub const POSTROUTING_CHAIN: &str = "HATCH-POSTROUTING";
pub const FORWARD_CHAIN: &str = "HATCH-FORWARD";
pub const INPUT_CHAIN: &str = "HATCH-INPUT";
pub const EGRESS_CHAIN: &str = "HATCH-EGRESS";
/// Hatch's own chains (table, chain). Every rule in them is Hatch's.
pub const OWN_CHAINS: [(&str, &str); 6] = [
    (NAT, PREROUTING_CHAIN),
    (NAT, OUTPUT_CHAIN),
    (NAT, POSTROUTING_CHAIN),
    (FILTER, EGRESS_CHAIN),
    (FILTER, FORWARD_CHAIN),
    (FILTER, INPUT_CHAIN),
];
/// Built-in chains that hold Hatch's jumps. In these, only rules jumping to
/// a `HATCH-` chain are Hatch's; everything else belongs to someone else.
pub const BUILTIN_CHAINS: [(&str, &str); 5] = [
    (NAT, "PREROUTING"),
    (NAT, "OUTPUT"),
    (NAT, "POSTROUTING"),
    (FILTER, "FORWARD"),
    (FILTER, "INPUT"),
];
pub const OWN_PREFIX: &str = "HATCH-";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: &'static str,
    pub chain: &'static str,
    /// Match and target arguments, without the comment.
    pub args: Vec<String>,
    pub comment: String,
}

impl Rule {
    fn new(table: &'static str, chain: &'static str, what: &str, args: &[&str]) -> Rule {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut hash = Sha256::new();
        hash.update(format!("{table}\0{chain}\0{}", args.join("\0")));
        let fingerprint = hex::encode(&hash.finalize()[..4]);
        Rule {
            table,
            chain,
            args,
            comment: format!("hatch {what} #{fingerprint}"),
        }
    }

    /// Arguments for `iptables -A/-I/-D <chain> ...`.
    pub fn spec(&self) -> Vec<String> {
        let mut spec = self.args.clone();
        spec.extend(["-m".into(), "comment".into(), "--comment".into(), self.comment.clone()]);
        spec
    }

    /// Built-in chains get Hatch's jumps at the top, ahead of other
    /// programs' rules (Docker's DNATs, a FORWARD policy of DROP...).
    pub fn goes_first(&self) -> bool {
        !self.chain.starts_with(OWN_PREFIX)
    }
}

/// Comment prefix shared by every rule of one VM.
pub fn vm_prefix(vm_id: &str) -> String {
    format!("hatch vm={vm_id} ")
}

/// Host-wide rules: jumps into Hatch's chains, outbound NAT, forwarding and
/// what guests may reach on the host itself. Order matters within a chain.
pub fn host_rules(cfg: &NetConfig) -> Vec<Rule> {
    let br = cfg.bridge_name.as_str();
    let net = Ipv4Cidr::new(cfg.gateway, cfg.prefix_len).network_cidr().to_string();
    let mut rules = vec![
        // One jump for connections the host makes itself; per-VM jumps in
        // PREROUTING come from `vm_rules` so `iptables -t nat -L PREROUTING
        // -n -v | grep <port>` shows each forward.
        Rule::new(
            NAT,
            "OUTPUT",
            "SSH forwards for connections from this host",
            &["-p", "tcp", "-m", "addrtype", "--dst-type", "LOCAL", "-j", OUTPUT_CHAIN],
        ),
        Rule::new(
            NAT,
            "POSTROUTING",
            &format!("MASQUERADE {net} via HATCH-POSTROUTING"),
            &["-j", POSTROUTING_CHAIN],
        ),
        Rule::new(
            NAT,
            POSTROUTING_CHAIN,
            &format!("MASQUERADE {net} leaving via other interfaces"),
            &["-s", &net, "!", "-o", br, "-j", "MASQUERADE"],
        ),
        // A forward to 127.0.0.1:PORT leaves through the bridge with a
        // loopback source; the guest must see the gateway instead.
        Rule::new(
            NAT,
            POSTROUTING_CHAIN,
            "MASQUERADE loopback-sourced SSH forwards",
            &["-s", "127.0.0.0/8", "-o", br, "-j", "MASQUERADE"],
        ),
        Rule::new(FILTER, "FORWARD", "guest traffic", &["-j", FORWARD_CHAIN]),
    ];
    let gateway = cfg.gateway.to_string();
    if !cfg.vm_to_vm_allowed {
        // Guests routing to each other through the gateway (or through an
        // SSH forward's port on the gateway) are refused here; on the
        // bridge itself the nftables bridge table refuses them.
        rules.push(Rule::new(
            FILTER,
            FORWARD_CHAIN,
            "no traffic between guests (HATCH_VM_TO_VM=deny)",
            &["-i", br, "-o", br, "-j", "DROP"],
        ));
    }
    rules.extend([
        Rule::new(
            FILTER,
            FORWARD_CHAIN,
            "replies to guests",
            &[
                "-o",
                br,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ],
        ),
        Rule::new(
            FILTER,
            FORWARD_CHAIN,
            "SSH forwards to guests",
            &["-o", br, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"],
        ),
        // Guests answer connections made to them (SSH forwards) whatever
        // their egress: only the reply direction of an accepted connection.
        Rule::new(
            FILTER,
            FORWARD_CHAIN,
            "guests' replies",
            &[
                "-i",
                br,
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED",
                "--ctdir",
                "REPLY",
                "-j",
                "ACCEPT",
            ],
        ),
    ]);
    for cidr in &cfg.egress_deny {
        let cidr = cidr.to_string();
        rules.push(Rule::new(
            FILTER,
            FORWARD_CHAIN,
            &format!("HATCH_EGRESS_DENY_CIDRS {cidr}"),
            &[
                "-i",
                br,
                "-d",
                &cidr,
                "-j",
                "REJECT",
                "--reject-with",
                "icmp-admin-prohibited",
            ],
        ));
    }
    rules.extend([
        Rule::new(
            FILTER,
            FORWARD_CHAIN,
            "guests outbound, by each VM's egress",
            &["-i", br, "-j", EGRESS_CHAIN],
        ),
        // HATCH-EGRESS accepts or rejects every VM's own address; what
        // comes back from it has a source no VM holds (forged).
        Rule::new(
            FILTER,
            FORWARD_CHAIN,
            "no forged sources from the bridge",
            &["-i", br, "-j", "DROP"],
        ),
        // Other hosts reach guests only through the forwards.
        Rule::new(
            FILTER,
            FORWARD_CHAIN,
            "no other inbound to guests",
            &["-o", br, "-j", "DROP"],
        ),
        Rule::new(FILTER, "INPUT", "guests to the host", &["-i", br, "-j", INPUT_CHAIN]),
        Rule::new(
            FILTER,
            INPUT_CHAIN,
            "replies to the host",
            &["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ),
        Rule::new(
            FILTER,
            INPUT_CHAIN,
            "DHCP broadcast",
            &["-d", "255.255.255.255", "-p", "udp", "--dport", "67", "-j", "ACCEPT"],
        ),
        Rule::new(
            FILTER,
            INPUT_CHAIN,
            "DHCP to the gateway",
            &["-d", &gateway, "-p", "udp", "--dport", "67", "-j", "ACCEPT"],
        ),
        Rule::new(
            FILTER,
            INPUT_CHAIN,
            "DNS over UDP",
            &["-d", &gateway, "-p", "udp", "--dport", "53", "-j", "ACCEPT"],
        ),
        Rule::new(
            FILTER,
            INPUT_CHAIN,
            "DNS over TCP",
            &["-d", &gateway, "-p", "tcp", "--dport", "53", "-j", "ACCEPT"],
        ),
        // Guests must not reach host services (API, databases...) on the
        // gateway, any other host address or 127.0.0.0/8 (which
        // route_localnet on the bridge would otherwise route, see bridge.rs).
        Rule::new(
            FILTER,
            INPUT_CHAIN,
            "no other host services for guests",
            &["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"],
        ),
    ]);
    rules
}

/// The SSH forward of one VM: a visible per-port jump in PREROUTING, the
/// DNAT for other hosts (only from HATCH_SSH_ALLOWED_CIDR) and the DNAT for
/// the host's own connections (the host can reach guests directly anyway,
/// so the allowed CIDR does not apply to it).
pub fn vm_rules(cfg: &NetConfig, vm_id: &str, id: &NetworkIdentity) -> Vec<Rule> {
    let port = id.ssh_port.to_string();
    let target = format!("{}:22", id.guest_ip);
    let allowed = Ipv4Cidr::new(cfg.ssh_allowed.0, cfg.ssh_allowed.1).to_string();
    let what = |path: &str| format!("vm={vm_id} ssh {port} -> {target} {path}");
    let dport = ["-p", "tcp", "-m", "tcp", "--dport", &port];
    let dnat = [
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "DNAT",
        "--to-destination",
        &target,
    ];
    let mut rules = vec![
        Rule::new(
            NAT,
            "PREROUTING",
            &what(&format!("from {allowed}")),
            &[&dport[..], &["-j", PREROUTING_CHAIN]].concat(),
        ),
        Rule::new(
            NAT,
            PREROUTING_CHAIN,
            &what(&format!("from {allowed}")),
            &[&["-s", &allowed][..], &dport, &dnat].concat(),
        ),
        Rule::new(
            NAT,
            OUTPUT_CHAIN,
            &what("from this host"),
            &[&dport[..], &dnat].concat(),
        ),
    ];
    rules.extend(egress_rules(vm_id, id));
    rules
}

/// One VM's egress in HATCH-EGRESS, matched on its address (the bridge
/// table guarantees a VM's packets carry its own): accept what its policy
/// allows, reject the rest, so nothing of a known VM falls through.
fn egress_rules(vm_id: &str, id: &NetworkIdentity) -> Vec<Rule> {
    let ip = id.guest_ip.to_string();
    let mut rules = Vec::new();
    let reject = |what: &str| {
        Rule::new(
            FILTER,
            EGRESS_CHAIN,
            &format!("vm={vm_id} egress {what} from {ip}"),
            &["-s", &ip, "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"],
        )
    };
    match &id.egress {
        Egress::Internet => rules.push(Rule::new(
            FILTER,
            EGRESS_CHAIN,
            &format!("vm={vm_id} egress internet from {ip}"),
            &["-s", &ip, "-j", "ACCEPT"],
        )),
        Egress::None => rules.push(reject("none")),
        Egress::Allow(cidrs) => {
            for cidr in cidrs {
                rules.push(Rule::new(
                    FILTER,
                    EGRESS_CHAIN,
                    &format!("vm={vm_id} egress to {cidr} from {ip}"),
                    &["-s", &ip, "-d", cidr, "-j", "ACCEPT"],
                ));
            }
            rules.push(reject("elsewhere refused"));
        }
    }
    rules
}

/// Whether rule order matters in this chain (ACCEPT/DROP sequences). In
/// the others, rules are independent and only the set matters.
pub fn ordered(chain: &str) -> bool {
    matches!(chain, POSTROUTING_CHAIN | FORWARD_CHAIN | INPUT_CHAIN | EGRESS_CHAIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(allowed: &str) -> NetConfig {
        crate::net::settings::config_from_values("fcbridge", "192.168.241.1/24", allowed, "2200", "2299", "/d".into())
            .unwrap()
    }

    fn ident() -> NetworkIdentity {
        NetworkIdentity {
            guest_ip: "192.168.241.10".parse().unwrap(),
            guest_mac: "02:fc:00:00:00:01".into(),
            tap_name: "fctap-vm-abc12".into(),
            ssh_port: 2200,
            egress: Default::default(),
        }
    }

    #[test]
    fn comments_are_unique_and_change_with_parameters() {
        let rules: Vec<Rule> = host_rules(&cfg("0.0.0.0/0"))
            .into_iter()
            .chain(vm_rules(&cfg("0.0.0.0/0"), "vm-abc123", &ident()))
            .collect();
        let mut comments: Vec<&str> = rules.iter().map(|r| r.comment.as_str()).collect();
        comments.sort();
        comments.dedup();
        assert_eq!(comments.len(), rules.len());
        assert!(rules.iter().all(|r| r.comment.len() < 256 && !r.comment.contains('"')));
        let narrowed = vm_rules(&cfg("10.0.0.0/8"), "vm-abc123", &ident());
        assert_ne!(
            narrowed[1].comment,
            vm_rules(&cfg("0.0.0.0/0"), "vm-abc123", &ident())[1].comment
        );
    }

    #[test]
    fn prerouting_jump_shows_the_port_and_guest() {
        let jump = &vm_rules(&cfg("0.0.0.0/0"), "vm-abc123", &ident())[0];
        assert_eq!(jump.chain, "PREROUTING");
        assert!(jump.args.contains(&"2200".to_string()));
        assert!(jump.comment.starts_with(&vm_prefix("vm-abc123")));
        assert!(jump.comment.contains("2200 -> 192.168.241.10:22"));
    }
}
