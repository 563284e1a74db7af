//! Per-VM TAP devices, attached to the bridge.

use crate::sys::cmd;

use super::{link, NetError};

/// Whether the TAP exists, is up and is a port of `bridge` (read from
/// sysfs: no process to start on a restore's path).
pub fn is_attached(tap: &str, bridge: &str) -> bool {
    let dir = std::path::Path::new("/sys/class/net").join(tap);
    let on_bridge = std::fs::read_link(dir.join("master"))
        .ok()
        .is_some_and(|master| master.file_name().is_some_and(|name| name == bridge));
    let up = std::fs::read_to_string(dir.join("flags"))
        .ok()
        .and_then(|flags| u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|flags| flags & 0x1 != 0);
    on_bridge && up
}

/// Creates the TAP if no link of that name exists (an existing one is
/// reused, whatever created it), enslaves it to the bridge and brings it up.
pub async fn ensure(tap: &str, bridge: &str) -> Result<bool, NetError> {
    let created = if link::find(tap).await?.is_none() {
        cmd::run("ip", ["tuntap", "add", "dev", tap, "mode", "tap"]).await?;
        true
    } else {
        false
    };
    link::disable_ipv6(tap)?;
    cmd::run("ip", ["link", "set", "dev", tap, "master", bridge, "up"]).await?;
    Ok(created)
}

/// What is wrong with a wanted TAP, in words, from the links as
/// `ip -j addr show` lists them; `None` when it is as [`ensure`] leaves it.
pub fn drift(tap: &str, bridge: &str, links: &[link::LinkState]) -> Option<String> {
    let Some(found) = links.iter().find(|l| l.ifname == tap) else {
        return Some(format!("TAP {tap} missing, recreated on {bridge}"));
    };
    if found.master.as_deref() != Some(bridge) {
        return Some(format!(
            "TAP {tap} was not attached to {bridge} (master: {}), reattached",
            found.master.as_deref().unwrap_or("none")
        ));
    }
    (!found.is_up()).then(|| format!("TAP {tap} was down, brought up"))
}

pub async fn delete(tap: &str) -> Result<bool, NetError> {
    link::delete(tap).await
}
