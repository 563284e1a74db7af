//! The bridge every TAP attaches to, carrying the gateway address, and the
//! kernel switches the forwards need.

use crate::sys::cmd;

use super::{link, NetConfig, NetError};

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
        cmd::run("ip", ["addr", "add", &format!("{}/{}", cfg.gateway, cfg.prefix_len), "dev", name]).await?;
    }
    cmd::run("ip", ["link", "set", "dev", name, "up"]).await?;
    Ok(())
}

/// IP forwarding for outbound NAT and forwards; route_localnet on the
/// bridge so `ssh -p PORT root@127.0.0.1` on the host can be DNATed to a
/// guest (the packet leaves through the bridge with a loopback source until
/// MASQUERADE rewrites it).
pub fn enable_forwarding(cfg: &NetConfig) -> Result<(), NetError> {
    link::set_sysctl("net/ipv4/ip_forward", "1")?;
    link::set_sysctl(&format!("net/ipv4/conf/{}/route_localnet", cfg.bridge_name), "1")?;
    Ok(())
}
