//! HATCH_BRIDGE_* and HATCH_SSH_* into `NetConfig`.
//! (The networking module offers the same parsing as `Network::config_from_values`;
//! the daemon switches to it once both are merged.)

use std::net::Ipv4Addr;
use std::path::Path;

use super::values::{ipv4_cidr, mask, number};
use super::ConfigError;
use crate::net::NetConfig;

pub struct NetValues<'a> {
    pub bridge_name: &'a str,
    pub bridge_cidr: &'a str,
    pub ssh_allowed_cidr: &'a str,
    pub ssh_port_min: &'a str,
    pub ssh_port_max: &'a str,
}

pub fn parse_net(values: &NetValues<'_>, data_dir: &Path) -> Result<NetConfig, ConfigError> {
    let bridge_name = bridge_name(values.bridge_name).map_err(ConfigError::on("HATCH_BRIDGE_NAME"))?;
    let (gateway, prefix_len) = gateway_cidr(values.bridge_cidr).map_err(ConfigError::on("HATCH_BRIDGE_CIDR"))?;
    let (allowed, allowed_len) =
        ipv4_cidr(values.ssh_allowed_cidr).map_err(ConfigError::on("HATCH_SSH_ALLOWED_CIDR"))?;
    let ssh_port_min: u16 = number(values.ssh_port_min, 1, u16::MAX).map_err(ConfigError::on("HATCH_SSH_PORT_MIN"))?;
    let ssh_port_max: u16 = number(values.ssh_port_max, 1, u16::MAX).map_err(ConfigError::on("HATCH_SSH_PORT_MAX"))?;
    if ssh_port_max < ssh_port_min {
        return Err(ConfigError::new(
            "HATCH_SSH_PORT_MAX",
            format!("{ssh_port_max} is below HATCH_SSH_PORT_MIN ({ssh_port_min})"),
        ));
    }
    Ok(NetConfig {
        bridge_name,
        gateway,
        prefix_len,
        ssh_allowed: (Ipv4Addr::from(u32::from(allowed) & mask(allowed_len)), allowed_len),
        ssh_port_min,
        ssh_port_max,
        dhcp_dir: data_dir.join("dhcp"),
    })
}

/// A Linux interface name: at most 15 bytes of letters, digits, `-`, `_`.
fn bridge_name(text: &str) -> Result<String, String> {
    let ok = (1..=15).contains(&text.len()) && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?}: an interface name is 1-15 letters, digits, '-' or '_'"
        ))
    }
}

/// The gateway address with its prefix; it must be a usable host address.
fn gateway_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (gateway, len) = ipv4_cidr(text)?;
    if !(1..=30).contains(&len) {
        return Err(format!(
            "{text:?}: the prefix length must be between 1 and 30 to leave room for guests"
        ));
    }
    let host_bits = !mask(len);
    let host = u32::from(gateway) & host_bits;
    if host == 0 || host == host_bits {
        return Err(format!(
            "{text:?}: the gateway must be a host address, not the network or broadcast address (e.g. 192.168.241.1/24)"
        ));
    }
    Ok((gateway, len))
}
