//! Per-VM TAP devices, attached to the bridge.

use crate::sys::cmd;

use super::{link, names, NetError};

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

pub async fn delete(tap: &str) -> Result<bool, NetError> {
    link::delete(tap).await
}

/// Links whose names say Hatch made them (`fctap-*`).
pub async fn list_hatch_taps() -> Result<Vec<String>, NetError> {
    Ok(link::list()
        .await?
        .into_iter()
        .map(|l| l.ifname)
        .filter(|name| names::is_hatch_tap(name))
        .collect())
}
