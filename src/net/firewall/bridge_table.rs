//! Layer-2 isolation: the nftables table `bridge hatch`.
//!
//! ```text
//! chain prerouting (hook prerouting, priority -200, policy accept)
//!     iifname TAP-of-VM jump VM          one per VM
//!     iifname "fctap-*" drop             a TAP with no VM (or a flushed VM chain) sends nothing
//! chain VM (one per VM, named by its id)
//!     ether saddr != MAC drop            its own MAC only
//!     ether type != { ip, arp } drop     no IPv6, VLAN tags or other protocols
//!     arp saddr ether != MAC drop
//!     arp saddr ip 0.0.0.0 accept        address probes (DHCP clients' conflict checks)
//!     arp saddr ip != IP drop            no claiming another guest's or the gateway's address
//!     ip saddr 0.0.0.0 ... udp 68 -> 67 accept   DHCP discovery before it has an address
//!     ip saddr != IP drop                no forged sources
//!     udp sport 67 drop                  guests are not DHCP servers
//!     ip daddr 127.0.0.0/8 drop          loopback is never a destination on the wire
//!     accept
//! chain forward (hook forward, priority -200, policy accept)
//!     iifname "fctap-*" oifname "fctap-*" drop   with HATCH_VM_TO_VM=deny
//! ```
//!
//! Why nftables' bridge family: it sees every frame a TAP sends before the
//! bridge forwards or delivers it, matches MAC, ARP and IPv4 fields in one
//! place, is changed by one atomic transaction (`nft -f`, here a delete
//! and re-create of the whole table, so no packet ever sees it half built)
//! and is Hatch's own table, so nothing of other programs is touched.
//! ebtables is the legacy front end of the same hooks with no atomic
//! replace of user chains; br_netfilter + iptables physdev would make every
//! bridged frame of every bridge on the host traverse iptables (Docker's
//! rules included) and cannot match ARP; bridge port isolation only covers
//! guest-to-guest traffic, not spoofing.
//!
//! Window on drift: flushing or deleting one VM's chain makes its frames
//! fall through to the final `fctap-*` drop of `prerouting` (closed, not
//! open). Deleting the whole table (or flushing `prerouting`) opens
//! spoofing and guest-to-guest frames until the reconciler's next pass
//! (HATCH_RECONCILE_INTERVAL) recreates it; the iptables chains still hold
//! meanwhile (egress by source address, the host's own services), and a
//! base chain with policy drop is not used because it would drop the
//! frames of every other bridge on the host while it exists alone.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

use crate::model::NetworkIdentity;
use crate::net::names::{self, TAP_PREFIX};
use crate::net::{mac, NetConfig, NetError};
use crate::sys::cmd;

const FAMILY: &str = "bridge";
const TABLE: &str = "hatch";
const PRIORITY: i64 = -200;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    text: String,
    comment: String,
}

impl Rule {
    fn new(chain: &str, what: &str, text: String) -> Rule {
        let mut hash = Sha256::new();
        hash.update(format!("{chain}\0{text}"));
        let fingerprint = hex::encode(&hash.finalize()[..4]);
        Rule {
            text,
            comment: format!("hatch {what} #{fingerprint}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Chain {
    name: String,
    /// Base chains: the hook (priority [`PRIORITY`], policy accept).
    hook: Option<&'static str>,
    rules: Vec<Rule>,
}

/// The whole table Hatch wants for `vms` (sorted by id by the caller).
fn desired(cfg: &NetConfig, vms: &[&(String, NetworkIdentity)]) -> Vec<Chain> {
    let any_tap = format!("\"{TAP_PREFIX}*\"");
    let mut prerouting = Chain {
        name: "prerouting".into(),
        hook: Some("prerouting"),
        rules: Vec::new(),
    };
    let mut chains = Vec::new();
    for (vm_id, id) in vms {
        // Only identities that are safe to write into the script (the
        // caller already skipped invalid ones; this is the last guard).
        let (Ok(()), true, Ok(mac)) = (
            names::check_vm_id(vm_id),
            names::is_hatch_tap(&id.tap_name),
            mac::normalise(&id.guest_mac),
        ) else {
            continue;
        };
        let chain = vm_chain(vm_id);
        prerouting.rules.push(Rule::new(
            "prerouting",
            &format!("vm={vm_id} frames from {}", id.tap_name),
            format!("iifname \"{}\" jump {chain}", id.tap_name),
        ));
        chains.push(Chain {
            rules: vm_rules(&chain, vm_id, &mac, id.guest_ip),
            name: chain,
            hook: None,
        });
    }
    prerouting.rules.push(Rule::new(
        "prerouting",
        "TAPs without a VM send nothing",
        format!("iifname {any_tap} drop"),
    ));
    let mut forward = Chain {
        name: "forward".into(),
        hook: Some("forward"),
        rules: Vec::new(),
    };
    if !cfg.vm_to_vm_allowed {
        forward.rules.push(Rule::new(
            "forward",
            "no frames between guests (HATCH_VM_TO_VM=deny)",
            format!("iifname {any_tap} oifname {any_tap} drop"),
        ));
    }
    let mut all = vec![prerouting, forward];
    all.extend(chains);
    all
}

fn vm_chain(vm_id: &str) -> String {
    format!("vm-{}", vm_id.trim_start_matches("vm-"))
}

fn vm_rules(chain: &str, vm_id: &str, mac: &str, ip: Ipv4Addr) -> Vec<Rule> {
    let rule = |what: &str, text: String| Rule::new(chain, &format!("vm={vm_id} {what}"), text);
    vec![
        rule("own MAC only", format!("ether saddr != {mac} drop")),
        rule("IPv4 and ARP only", "ether type != { ip, arp } drop".into()),
        rule("ARP own MAC only", format!("arp saddr ether != {mac} drop")),
        rule("ARP probes", "arp saddr ip 0.0.0.0 accept".into()),
        rule("ARP own address only", format!("arp saddr ip != {ip} drop")),
        rule(
            "DHCP discovery",
            "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept".into(),
        ),
        rule("own address only", format!("ip saddr != {ip} drop")),
        rule("no DHCP server", "udp sport 67 drop".into()),
        rule("no loopback destinations", "ip daddr 127.0.0.0/8 drop".into()),
        rule("checked", "accept".into()),
    ]
}

/// The `nft -f` script that replaces the table with `chains` in one
/// transaction (the empty `table` line makes `delete` valid when the table
/// does not exist yet).
fn script(chains: &[Chain]) -> String {
    let mut text = format!("table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\ntable {FAMILY} {TABLE} {{\n");
    for chain in chains {
        text.push_str(&format!("\tchain {} {{\n", chain.name));
        if let Some(hook) = chain.hook {
            text.push_str(&format!(
                "\t\ttype filter hook {hook} priority {PRIORITY}; policy accept;\n"
            ));
        }
        for rule in &chain.rules {
            text.push_str(&format!("\t\t{} comment \"{}\"\n", rule.text, rule.comment));
        }
        text.push_str("\t}\n");
    }
    text.push_str("}\n");
    text
}

/// A chain as `nft -j list ruleset bridge` shows it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Listed {
    hook: Option<String>,
    prio: Option<i64>,
    policy: Option<String>,
    comments: Vec<Option<String>>,
}

/// Hatch's table as listed, or `None` when it does not exist.
fn parse(json: &str) -> Result<Option<BTreeMap<String, Listed>>, NetError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| NetError::Host(format!("nft -j list ruleset: {e}")))?;
    let items = value
        .get("nftables")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let ours = |obj: &serde_json::Value| {
        obj.get("family").and_then(|f| f.as_str()) == Some(FAMILY)
            && obj.get("table").or(obj.get("name")).and_then(|t| t.as_str()) == Some(TABLE)
    };
    let mut found = false;
    let mut chains: BTreeMap<String, Listed> = BTreeMap::new();
    for item in &items {
        if let Some(table) = item.get("table") {
            if table.get("family").and_then(|f| f.as_str()) == Some(FAMILY)
                && table.get("name").and_then(|t| t.as_str()) == Some(TABLE)
            {
                found = true;
            }
        } else if let Some(chain) = item.get("chain").filter(|c| ours(c)) {
            let name = chain.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            let entry = chains.entry(name.to_string()).or_default();
            entry.hook = chain.get("hook").and_then(|h| h.as_str()).map(String::from);
            entry.prio = chain.get("prio").and_then(|p| p.as_i64());
            entry.policy = chain.get("policy").and_then(|p| p.as_str()).map(String::from);
        } else if let Some(rule) = item.get("rule").filter(|r| ours(r)) {
            let name = rule.get("chain").and_then(|n| n.as_str()).unwrap_or_default();
            let comment = rule.get("comment").and_then(|c| c.as_str()).map(String::from);
            chains.entry(name.to_string()).or_default().comments.push(comment);
        }
    }
    Ok(found.then_some(chains))
}

/// What differs between the listed table and the wanted one, in words.
fn drift(listed: Option<&BTreeMap<String, Listed>>, wanted: &[Chain]) -> Vec<String> {
    let Some(listed) = listed else {
        return vec![format!("nftables table {FAMILY} {TABLE} missing, recreated")];
    };
    let mut found = Vec::new();
    for chain in wanted {
        let Some(present) = listed.get(&chain.name) else {
            found.push(format!("nftables chain {} missing, recreated", chain.name));
            continue;
        };
        let base_ok = match chain.hook {
            Some(hook) => {
                present.hook.as_deref() == Some(hook)
                    && present.prio == Some(PRIORITY)
                    && present.policy.as_deref() == Some("accept")
            }
            None => present.hook.is_none(),
        };
        if !base_ok {
            found.push(format!(
                "nftables chain {} had another hook or policy, restored",
                chain.name
            ));
        }
        let comments: Vec<Option<&str>> = present.comments.iter().map(|c| c.as_deref()).collect();
        let wanted_comments: Vec<Option<&str>> = chain.rules.iter().map(|r| Some(r.comment.as_str())).collect();
        if comments != wanted_comments {
            let missing = wanted_comments.iter().filter(|c| !comments.contains(c)).count();
            let unknown = comments.iter().filter(|c| !wanted_comments.contains(c)).count();
            let what = match (missing, unknown) {
                (0, 0) => "rules out of order".to_string(),
                (m, 0) => format!("{m} rule(s) missing"),
                (0, u) => format!("{u} unknown rule(s)"),
                (m, u) => format!("{m} rule(s) missing, {u} unknown rule(s)"),
            };
            found.push(format!("nftables chain {}: {what}, restored", chain.name));
        }
    }
    for name in listed.keys().filter(|name| !wanted.iter().any(|c| &c.name == *name)) {
        found.push(format!("nftables chain {name} belongs to no VM, removed"));
    }
    found
}

/// The table's chains as listed now; `None` when it does not exist.
pub(super) async fn read() -> Result<Option<BTreeMap<String, Listed>>, NetError> {
    let out = cmd::stdout("nft", ["-j", "list", "ruleset", FAMILY]).await?;
    if out.trim().is_empty() {
        return Ok(None);
    }
    parse(&out)
}

async fn write(chains: &[Chain]) -> Result<(), NetError> {
    cmd::run_with_input("nft", ["-f", "-"], script(chains).as_bytes()).await?;
    Ok(())
}

/// Creates the table (no VM chains yet: every TAP's frames are dropped
/// until the first reconcile) when it does not exist; else leaves it.
pub async fn ensure_exists(cfg: &NetConfig) -> Result<(), NetError> {
    if read().await?.is_none() {
        write(&desired(cfg, &[])).await?;
    }
    Ok(())
}

/// Makes the table, `listed` as [`read`] found it, exactly what `vms`
/// need; returns what had drifted.
pub async fn reconcile(
    cfg: &NetConfig,
    vms: &[&(String, NetworkIdentity)],
    listed: Option<&BTreeMap<String, Listed>>,
) -> Result<Vec<String>, NetError> {
    let wanted = desired(cfg, vms);
    let found = drift(listed, &wanted);
    if !found.is_empty() {
        write(&wanted).await?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NetConfig {
        crate::net::settings::guide_defaults_for_tests()
    }

    fn vm() -> (String, NetworkIdentity) {
        (
            "vm-abc123".into(),
            NetworkIdentity {
                guest_ip: "192.168.241.10".parse().unwrap(),
                guest_mac: "02:FC:00:00:00:01".into(),
                tap_name: "fctap-vm-abc12".into(),
                ssh_port: 2200,
                egress: Default::default(),
            },
        )
    }

    #[test]
    fn script_names_the_vm_and_its_addresses() {
        let vm = vm();
        let text = script(&desired(&cfg(), &[&vm]));
        assert!(text.contains("iifname \"fctap-vm-abc12\" jump vm-abc123 comment \"hatch vm=vm-abc123 "));
        assert!(text.contains("ether saddr != 02:fc:00:00:00:01 drop"), "{text}");
        assert!(text.contains("arp saddr ip != 192.168.241.10 drop"));
        assert!(text.contains("iifname \"fctap-*\" oifname \"fctap-*\" drop"));
        let mut allowed = cfg();
        allowed.vm_to_vm_allowed = true;
        assert!(!script(&desired(&allowed, &[&vm])).contains("oifname"));
    }

    #[test]
    fn listing_as_wanted_has_no_drift_and_changes_are_named() {
        let vm = vm();
        let wanted = desired(&cfg(), &[&vm]);
        let mut listed: BTreeMap<String, Listed> = wanted
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    Listed {
                        hook: c.hook.map(String::from),
                        prio: c.hook.map(|_| PRIORITY),
                        policy: c.hook.map(|_| "accept".to_string()),
                        comments: c.rules.iter().map(|r| Some(r.comment.clone())).collect(),
                    },
                )
            })
            .collect();
        assert!(drift(Some(&listed), &wanted).is_empty());
        listed.get_mut("vm-abc123").unwrap().comments.clear();
        listed.insert("vm-gone".into(), Listed::default());
        assert_eq!(
            drift(Some(&listed), &wanted),
            [
                "nftables chain vm-abc123: 10 rule(s) missing, restored",
                "nftables chain vm-gone belongs to no VM, removed"
            ]
        );
        assert_eq!(drift(None, &wanted).len(), 1);
    }
}
