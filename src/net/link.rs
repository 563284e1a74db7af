//! Reading and changing links through `ip -j` (JSON), never /sys/class/net:
//! sysfs shows the namespace it was mounted in, `ip` the caller's own.

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::sys::cmd;

use super::NetError;

#[derive(Debug, Clone, Deserialize)]
pub struct Link {
    pub ifname: String,
}

#[derive(Deserialize)]
struct AddrInfo {
    #[serde(default)]
    addr_info: Vec<AddrEntry>,
}

#[derive(Debug, Clone, Deserialize)]
struct AddrEntry {
    family: String,
    local: String,
    prefixlen: u8,
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, NetError> {
    serde_json::from_str(text).map_err(|e| NetError::Host(format!("cannot parse `ip -j {what}` output: {e}")))
}

/// One link as `ip -j addr show` prints it: enough to check a bridge or a
/// TAP without a command per link.
#[derive(Debug, Clone, Deserialize)]
pub struct LinkState {
    pub ifname: String,
    #[serde(default)]
    pub flags: Vec<String>,
    /// The bridge this link is enslaved to, if any.
    #[serde(default)]
    pub master: Option<String>,
    /// The MAC address.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    addr_info: Vec<AddrEntry>,
}

impl LinkState {
    /// Administratively up (`ip link set up`); a TAP without a VM on it has
    /// no carrier, so the operational state is not what counts.
    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }

    /// IPv4 addresses with prefix length.
    pub fn ipv4(&self) -> Vec<(Ipv4Addr, u8)> {
        self.addr_info
            .iter()
            .filter(|entry| entry.family == "inet")
            .filter_map(|entry| Some((entry.local.parse().ok()?, entry.prefixlen)))
            .collect()
    }
}

/// Every link with its flags, master and addresses, from one `ip` call.
pub async fn states() -> Result<Vec<LinkState>, NetError> {
    let out = cmd::stdout("ip", ["-j", "addr", "show"]).await?;
    parse_json("addr show", &out)
}

/// All links in the caller's network namespace.
pub async fn list() -> Result<Vec<Link>, NetError> {
    let out = cmd::stdout("ip", ["-j", "link", "show"]).await?;
    parse_json("link show", &out)
}

#[derive(Deserialize)]
struct Detailed {
    #[serde(default)]
    linkinfo: Option<LinkKind>,
}

#[derive(Deserialize)]
struct LinkKind {
    #[serde(default)]
    info_kind: Option<String>,
}

/// The link's kind (`bridge`, `tun`, `veth`...), if it exists and has one.
pub async fn kind(name: &str) -> Result<Option<String>, NetError> {
    if find(name).await?.is_none() {
        return Ok(None);
    }
    let out = cmd::stdout("ip", ["-j", "-d", "link", "show", "dev", name]).await?;
    let links: Vec<Detailed> = parse_json("-d link show", &out)?;
    Ok(links
        .into_iter()
        .next()
        .and_then(|l| l.linkinfo)
        .and_then(|i| i.info_kind))
}

pub async fn find(name: &str) -> Result<Option<Link>, NetError> {
    Ok(list().await?.into_iter().find(|link| link.ifname == name))
}

/// IPv4 addresses with prefix length on `dev`.
pub async fn ipv4_addresses(dev: &str) -> Result<Vec<(Ipv4Addr, u8)>, NetError> {
    let out = cmd::stdout("ip", ["-j", "-4", "addr", "show", "dev", dev]).await?;
    let links: Vec<AddrInfo> = parse_json("addr show", &out)?;
    Ok(links
        .into_iter()
        .flat_map(|link| link.addr_info)
        .filter(|entry| entry.family == "inet")
        .filter_map(|entry| Some((entry.local.parse().ok()?, entry.prefixlen)))
        .collect())
}

/// Deletes a link; a link that is already gone is not an error.
pub async fn delete(name: &str) -> Result<bool, NetError> {
    if find(name).await?.is_none() {
        return Ok(false);
    }
    match cmd::run("ip", ["link", "del", "dev", name]).await {
        Ok(_) => Ok(true),
        Err(err) if find(name).await?.is_none() => {
            tracing::debug!("{name} vanished while deleting it: {err}");
            Ok(true)
        }
        Err(err) => Err(err.into()),
    }
}

/// Writes a sysctl of the caller's network namespace; returns whether it
/// had another value. Written from the
/// calling thread (not a blocking pool) because /proc/sys/net follows the
/// writing thread's namespace.
pub fn set_sysctl(path: &str, value: &str) -> Result<bool, NetError> {
    let full = std::path::PathBuf::from("/proc/sys").join(path);
    let current = std::fs::read_to_string(&full).map_err(|source| NetError::Io {
        path: full.clone(),
        source,
    })?;
    if current.trim() == value {
        return Ok(false);
    }
    std::fs::write(&full, value).map_err(|source| NetError::Io { path: full, source })?;
    Ok(true)
}

/// Turns IPv6 off on a Hatch interface: guests are IPv4-only, and an IPv6
/// link-local address on the host side would be a way for guests to reach
/// host services around the IPv4 INPUT rules. A kernel without IPv6 has
/// nothing to turn off. Returns whether IPv6 was on.
pub fn disable_ipv6(dev: &str) -> Result<bool, NetError> {
    let path = format!("net/ipv6/conf/{dev}/disable_ipv6");
    if !std::path::Path::new("/proc/sys").join(&path).exists() {
        return Ok(false);
    }
    set_sysctl(&path, "1")
}
