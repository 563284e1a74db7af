//! The bridge every TAP attaches to, carrying the gateway address, and the
//! kernel switches the forwards need.

use crate::sys::cmd;

use super::{link, names, NetConfig, NetError};

/// The bridge's fixed MAC, `02:fd:` + the gateway's octets: outside the
/// `02:fc:` guest range. A bridge left to pick its own MAC takes the lowest
/// port MAC and changes it as TAPs come and go, leaving guests with a stale
/// ARP entry for their gateway.
pub fn bridge_mac(cfg: &NetConfig) -> String {
    let [a, b, c, d] = cfg.gateway.octets();
    format!("02:fd:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Creates the bridge if missing, gives it its fixed MAC and exactly the
/// gateway address (older addresses from a previous HATCH_BRIDGE_CIDR are
/// removed: the bridge is Hatch's own), and brings it up. Idempotent.
pub async fn ensure(cfg: &NetConfig) -> Result<(), NetError> {
    let name = cfg.bridge_name.as_str();
    if link::find(name).await?.is_none() {
        cmd::run("ip", ["link", "add", "name", name, "type", "bridge"]).await?;
    }
    cmd::run("ip", ["link", "set", "dev", name, "address", &bridge_mac(cfg)]).await?;
    let wanted = (cfg.gateway, cfg.prefix_len);
    let present = link::ipv4_addresses(name).await?;
    for (addr, len) in present.iter().filter(|entry| **entry != wanted) {
        cmd::run("ip", ["addr", "del", &format!("{addr}/{len}"), "dev", name]).await?;
    }
    if !present.contains(&wanted) {
        cmd::run(
            "ip",
            [
                "addr",
                "add",
                &format!("{}/{}", cfg.gateway, cfg.prefix_len),
                "dev",
                name,
            ],
        )
        .await?;
    }
    cmd::run("ip", ["link", "set", "dev", name, "up"]).await?;
    Ok(())
}

/// After HATCH_BRIDGE_NAME changed, the bridge named in the previous
/// dnsmasq.conf still holds the gateway address (a duplicate route) and
/// the TAPs moved away from it: delete it, if it is still a bridge.
pub async fn remove_previous(cfg: &NetConfig, previous: &str) -> Result<(), NetError> {
    if previous == cfg.bridge_name || names::check_ifname(previous).is_err() || names::is_hatch_tap(previous) {
        return Ok(());
    }
    if link::kind(previous).await?.as_deref() == Some("bridge") {
        tracing::info!(previous, current = %cfg.bridge_name, "removing the bridge of the previous HATCH_BRIDGE_NAME");
        link::delete(previous).await?;
    }
    Ok(())
}

/// IP forwarding for outbound NAT and forwards; route_localnet on the
/// bridge, which the host's own SSH forwards need and nothing else:
/// `ssh -p PORT root@127.0.0.1` on the host is DNATed to the guest in nat
/// OUTPUT (HATCH-OUTPUT), so its packets are routed out through the bridge
/// with source 127.0.0.1 (refused without route_localnet on the outgoing
/// device) until POSTROUTING's "-s 127/8 -o BR -> MASQUERADE" rewrites it,
/// and the guest's replies come back in through the bridge to be un-NATed
/// to 127.0.0.1 (a martian destination without it). What it would also
/// allow, guests sending to 127.0.0.0/8 on the host, is closed twice: the
/// bridge table drops frames from a TAP to 127.0.0.0/8, and HATCH-INPUT
/// accepts from guests only replies, DHCP and DNS to the gateway.
/// Returns the switches that were set otherwise.
pub fn enable_forwarding(cfg: &NetConfig) -> Result<Vec<String>, NetError> {
    let mut changed = Vec::new();
    let route_localnet = format!("net/ipv4/conf/{}/route_localnet", cfg.bridge_name);
    for path in ["net/ipv4/ip_forward", route_localnet.as_str()] {
        if link::set_sysctl(path, "1")? {
            changed.push(path.replace('/', "."));
        }
    }
    if link::disable_ipv6(&cfg.bridge_name)? {
        changed.push(format!("net.ipv6.conf.{}.disable_ipv6", cfg.bridge_name));
    }
    Ok(changed)
}

/// What is wrong with the bridge, in words (empty when it is as
/// [`ensure`] leaves it), from the links as `ip -j addr show` lists them.
pub fn drift(cfg: &NetConfig, links: &[link::LinkState]) -> Vec<String> {
    let name = cfg.bridge_name.as_str();
    let Some(bridge) = links.iter().find(|l| l.ifname == name) else {
        return vec![format!("bridge {name} missing, recreated")];
    };
    let mut found = Vec::new();
    let wanted = (cfg.gateway, cfg.prefix_len);
    let present = bridge.ipv4();
    if !present.contains(&wanted) {
        found.push(format!(
            "bridge {name} had lost its address {}/{}, restored",
            cfg.gateway, cfg.prefix_len
        ));
    }
    let others: Vec<String> = present
        .iter()
        .filter(|entry| **entry != wanted)
        .map(|(addr, len)| format!("{addr}/{len}"))
        .collect();
    if !others.is_empty() {
        found.push(format!(
            "bridge {name} had other addresses ({}), removed",
            others.join(", ")
        ));
    }
    if !bridge.is_up() {
        found.push(format!("bridge {name} was down, brought up"));
    }
    let mac = bridge_mac(cfg);
    if !bridge.address.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(&mac)) {
        found.push(format!(
            "bridge {name} had MAC {}, set back to {mac}",
            bridge.address.as_deref().unwrap_or("none")
        ));
    }
    found
}
