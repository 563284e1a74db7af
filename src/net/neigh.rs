//! The host's neighbour (ARP) entries for its guests: one permanent entry
//! per VM on the bridge, from the address and MAC Hatch gave it.
//!
//! Why: the host never has to ask a guest who it is. No guest's ARP claim
//! can redirect the host's traffic for another guest's address (its SSH
//! forward, the proxy's requests), whatever gets past the bridge table. And
//! a guest that has just brought its address up gets the first packet sent
//! to it: without the entry, the host's packets to a guest that has not
//! yet spoken to the host wait on ARP, which the kernel repeats only once a
//! second (with Hatch's own images the guest speaks first, so this showed
//! in no benchmark; see docs/benchmarks.md).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::model::NetworkIdentity;
use crate::sys::cmd;

use super::cidr::Ipv4Cidr;
use super::{NetConfig, NetError};

/// One entry as `ip -j neigh show` prints it.
#[derive(Debug, Deserialize)]
struct Entry {
    dst: String,
    #[serde(default)]
    lladdr: Option<String>,
}

/// Sets (or corrects) the permanent entry for one guest.
pub async fn set(bridge: &str, ip: Ipv4Addr, mac: &str) -> Result<(), NetError> {
    let ip = ip.to_string();
    cmd::run(
        "ip",
        [
            "neigh",
            "replace",
            &ip,
            "lladdr",
            mac,
            "dev",
            bridge,
            "nud",
            "permanent",
        ],
    )
    .await?;
    Ok(())
}

/// Removes the entry for `ip`; one that is already gone is not an error
/// (the table is read only when the removal fails, to tell which).
pub async fn remove(bridge: &str, ip: Ipv4Addr) -> Result<(), NetError> {
    let ip_text = ip.to_string();
    match cmd::run("ip", ["neigh", "del", &ip_text, "dev", bridge]).await {
        Ok(_) => Ok(()),
        Err(_) if !permanent_entries(bridge).await?.contains_key(&ip) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Makes the bridge's permanent entries inside Hatch's subnet exactly one
/// per VM in `vms`, with its MAC; entries outside the subnet are somebody
/// else's and stay. Returns what it repaired, in words.
pub async fn reconcile(cfg: &NetConfig, vms: &[(String, NetworkIdentity)]) -> Result<Vec<String>, NetError> {
    let bridge = cfg.bridge_name.as_str();
    let found = permanent_entries(bridge).await?;
    let plan = plan(&Ipv4Cidr::new(cfg.gateway, cfg.prefix_len), vms, &found);
    for (ip, mac, why) in &plan.set {
        set(bridge, *ip, mac).await?;
        tracing::debug!(%ip, why, "neighbour entry set");
    }
    for ip in &plan.remove {
        remove(bridge, *ip).await?;
    }
    let mut repairs: Vec<String> = plan.set.into_iter().map(|(_, _, why)| why).collect();
    repairs.extend(
        plan.remove
            .iter()
            .map(|ip| format!("neighbour entry for {ip} belongs to no VM, removed")),
    );
    Ok(repairs)
}

/// What [`reconcile`] changes: entries to set (with the reason) and to remove.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    set: Vec<(Ipv4Addr, String, String)>,
    remove: Vec<Ipv4Addr>,
}

fn plan(subnet: &Ipv4Cidr, vms: &[(String, NetworkIdentity)], found: &HashMap<Ipv4Addr, String>) -> Plan {
    let mut plan = Plan::default();
    let mut wanted = HashSet::new();
    for (vm_id, id) in vms {
        let mac = id.guest_mac.to_ascii_lowercase();
        wanted.insert(id.guest_ip);
        let why = match found.get(&id.guest_ip) {
            Some(current) if *current == mac => continue,
            Some(current) => format!(
                "neighbour entry for {} ({vm_id}) named {current} instead of {mac}, corrected",
                id.guest_ip
            ),
            None => format!("neighbour entry for {} ({vm_id}) missing, set", id.guest_ip),
        };
        plan.set.push((id.guest_ip, mac, why));
    }
    let mut stale: Vec<Ipv4Addr> = found
        .keys()
        .filter(|ip| subnet.contains(**ip) && !wanted.contains(*ip))
        .copied()
        .collect();
    stale.sort();
    plan.remove = stale;
    plan
}

/// The bridge's permanent IPv4 entries: address to MAC (lower case).
async fn permanent_entries(bridge: &str) -> Result<HashMap<Ipv4Addr, String>, NetError> {
    let out = cmd::stdout("ip", ["-j", "-4", "neigh", "show", "dev", bridge, "nud", "permanent"]).await?;
    parse(&out)
}

fn parse(json: &str) -> Result<HashMap<Ipv4Addr, String>, NetError> {
    // `ip -j` prints nothing at all for a device without entries.
    if json.trim().is_empty() {
        return Ok(HashMap::new());
    }
    let entries: Vec<Entry> = serde_json::from_str(json)
        .map_err(|e| NetError::Host(format!("cannot parse `ip -j neigh show` output: {e}")))?;
    Ok(entries
        .into_iter()
        .filter_map(|entry| Some((entry.dst.parse().ok()?, entry.lladdr?.to_ascii_lowercase())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: &str, ip: [u8; 4], mac: &str) -> (String, NetworkIdentity) {
        (
            id.to_string(),
            NetworkIdentity {
                guest_ip: Ipv4Addr::from(ip),
                guest_mac: mac.to_string(),
                tap_name: format!("tap-{id}"),
                ssh_port: 2222,
                egress: Default::default(),
            },
        )
    }

    #[test]
    fn parses_ip_json_and_skips_entries_without_a_mac() {
        let json = r#"[{"dst":"192.168.241.34","lladdr":"02:FC:31:EA:64:15","state":["PERMANENT"]},
                      {"dst":"192.168.241.35","state":["PERMANENT"]}]"#;
        let entries = parse(json).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[&Ipv4Addr::new(192, 168, 241, 34)], "02:fc:31:ea:64:15");
        assert!(parse("").unwrap().is_empty());
        assert!(parse("not json").is_err());
    }

    #[test]
    fn plan_sets_missing_and_wrong_entries_and_removes_strays_only_inside_the_subnet() {
        let subnet = Ipv4Cidr::new(Ipv4Addr::new(192, 168, 241, 1), 24);
        let vms = [
            vm("vm-ok", [192, 168, 241, 10], "02:FC:00:00:00:0A"),
            vm("vm-missing", [192, 168, 241, 11], "02:fc:00:00:00:0b"),
            vm("vm-wrong", [192, 168, 241, 12], "02:fc:00:00:00:0c"),
        ];
        let found: HashMap<Ipv4Addr, String> = [
            ([192, 168, 241, 10], "02:fc:00:00:00:0a"),
            ([192, 168, 241, 12], "02:fc:00:00:00:ff"),
            ([192, 168, 241, 99], "02:fc:00:00:00:63"),
            ([10, 0, 0, 5], "02:00:00:00:00:05"),
        ]
        .into_iter()
        .map(|(ip, mac)| (Ipv4Addr::from(ip), mac.to_string()))
        .collect();
        let plan = plan(&subnet, &vms, &found);
        let set: Vec<(Ipv4Addr, &str)> = plan.set.iter().map(|(ip, mac, _)| (*ip, mac.as_str())).collect();
        assert_eq!(
            set,
            [
                (Ipv4Addr::new(192, 168, 241, 11), "02:fc:00:00:00:0b"),
                (Ipv4Addr::new(192, 168, 241, 12), "02:fc:00:00:00:0c"),
            ]
        );
        assert!(plan.set[1].2.contains("02:fc:00:00:00:ff instead of 02:fc:00:00:00:0c"));
        assert_eq!(plan.remove, [Ipv4Addr::new(192, 168, 241, 99)]);
    }
}
