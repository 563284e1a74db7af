//! Network settings from their `HATCH_*` values, validated once at start-up.
//! Every error names the variable it is about.

use std::path::PathBuf;

use super::cidr::Ipv4Cidr;
use super::names::{check_ifname, TAP_PREFIX};
use super::{NetConfig, NetError};

pub const DEFAULT_BRIDGE_NAME: &str = "fcbridge";
pub const DEFAULT_BRIDGE_CIDR: &str = "192.168.241.1/24";
pub const DEFAULT_SSH_ALLOWED_CIDR: &str = "0.0.0.0/0";
pub const DEFAULT_SSH_PORT_MIN: &str = "2200";
pub const DEFAULT_SSH_PORT_MAX: &str = "2299";
pub const DEFAULT_VM_TO_VM: &str = "deny";
pub const DEFAULT_EGRESS_DENY_CIDRS: &str = "169.254.0.0/16";

fn invalid(field: &'static str, message: String) -> NetError {
    NetError::Invalid { field, message }
}

pub fn config_from_values(
    bridge_name: &str,
    bridge_cidr: &str,
    ssh_allowed_cidr: &str,
    port_min: &str,
    port_max: &str,
    dhcp_dir: PathBuf,
) -> Result<NetConfig, NetError> {
    check_ifname(bridge_name).map_err(|m| invalid("HATCH_BRIDGE_NAME", m))?;
    if bridge_name.starts_with(TAP_PREFIX) {
        return Err(invalid(
            "HATCH_BRIDGE_NAME",
            format!("{bridge_name:?} starts with {TAP_PREFIX:?}, which is reserved for VM TAP devices"),
        ));
    }

    let bridge = Ipv4Cidr::parse(bridge_cidr).map_err(|m| invalid("HATCH_BRIDGE_CIDR", m))?;
    if !(1..=30).contains(&bridge.prefix_len) {
        return Err(invalid(
            "HATCH_BRIDGE_CIDR",
            format!(
                "prefix length /{} leaves no room for guests; use /1 to /30",
                bridge.prefix_len
            ),
        ));
    }
    if !bridge.is_host_address(bridge.addr) {
        return Err(invalid(
            "HATCH_BRIDGE_CIDR",
            format!(
                "{} is the network or broadcast address of {}; give the gateway address, e.g. {}/{}",
                bridge.addr,
                bridge.network_cidr(),
                std::net::Ipv4Addr::from(u32::from(bridge.network()) + 1),
                bridge.prefix_len
            ),
        ));
    }

    let allowed = Ipv4Cidr::parse(ssh_allowed_cidr).map_err(|m| invalid("HATCH_SSH_ALLOWED_CIDR", m))?;
    if allowed.addr != allowed.network() {
        return Err(invalid(
            "HATCH_SSH_ALLOWED_CIDR",
            format!("{allowed} has host bits set; did you mean {}?", allowed.network_cidr()),
        ));
    }

    let min = parse_port("HATCH_SSH_PORT_MIN", port_min)?;
    let max = parse_port("HATCH_SSH_PORT_MAX", port_max)?;
    if min > max {
        return Err(invalid(
            "HATCH_SSH_PORT_MIN",
            format!("HATCH_SSH_PORT_MIN ({min}) is greater than HATCH_SSH_PORT_MAX ({max})"),
        ));
    }

    if !dhcp_dir.is_absolute() {
        return Err(invalid(
            "HATCH_DATA_DIR",
            format!("{} is not an absolute path", dhcp_dir.display()),
        ));
    }
    Ok(NetConfig {
        bridge_name: bridge_name.to_string(),
        gateway: bridge.addr,
        prefix_len: bridge.prefix_len,
        ssh_allowed: (allowed.addr, allowed.prefix_len),
        ssh_port_min: min,
        ssh_port_max: max,
        dhcp_dir,
        vm_to_vm_allowed: false,
        egress_deny: parse_deny_cidrs(DEFAULT_EGRESS_DENY_CIDRS)?,
    })
}

/// HATCH_VM_TO_VM (`deny` or `allow`) and HATCH_EGRESS_DENY_CIDRS (comma
/// separated networks, may be empty) on top of [`config_from_values`].
pub fn with_isolation(mut cfg: NetConfig, vm_to_vm: &str, egress_deny: &str) -> Result<NetConfig, NetError> {
    cfg.vm_to_vm_allowed = match vm_to_vm {
        "deny" => false,
        "allow" => true,
        other => {
            return Err(invalid(
                "HATCH_VM_TO_VM",
                format!("must be \"deny\" or \"allow\", got {other:?}"),
            ))
        }
    };
    cfg.egress_deny = parse_deny_cidrs(egress_deny)?;
    Ok(cfg)
}

fn parse_deny_cidrs(text: &str) -> Result<Vec<Ipv4Cidr>, NetError> {
    let mut out: Vec<Ipv4Cidr> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let cidr = Ipv4Cidr::parse(item).map_err(|m| invalid("HATCH_EGRESS_DENY_CIDRS", m))?;
        if cidr.addr != cidr.network() {
            return Err(invalid(
                "HATCH_EGRESS_DENY_CIDRS",
                format!("{cidr} has host bits set; did you mean {}?", cidr.network_cidr()),
            ));
        }
        if !out.contains(&cidr) {
            out.push(cidr);
        }
    }
    if out.len() > 64 {
        return Err(invalid(
            "HATCH_EGRESS_DENY_CIDRS",
            format!("{} networks given; at most 64", out.len()),
        ));
    }
    Ok(out)
}

/// Reads the variables through `lookup` (normally `std::env::var`), using
/// the guide's defaults for unset ones.
pub fn config_from_lookup(lookup: impl Fn(&str) -> Option<String>, dhcp_dir: PathBuf) -> Result<NetConfig, NetError> {
    let get = |name: &str, default: &str| lookup(name).unwrap_or_else(|| default.to_string());
    let cfg = config_from_values(
        &get("HATCH_BRIDGE_NAME", DEFAULT_BRIDGE_NAME),
        &get("HATCH_BRIDGE_CIDR", DEFAULT_BRIDGE_CIDR),
        &get("HATCH_SSH_ALLOWED_CIDR", DEFAULT_SSH_ALLOWED_CIDR),
        &get("HATCH_SSH_PORT_MIN", DEFAULT_SSH_PORT_MIN),
        &get("HATCH_SSH_PORT_MAX", DEFAULT_SSH_PORT_MAX),
        dhcp_dir,
    )?;
    with_isolation(
        cfg,
        &get("HATCH_VM_TO_VM", DEFAULT_VM_TO_VM),
        &get("HATCH_EGRESS_DENY_CIDRS", DEFAULT_EGRESS_DENY_CIDRS),
    )
}

/// The guide's defaults with a placeholder DHCP directory, for unit tests
/// of what is derived from a configuration.
#[cfg(test)]
pub(crate) fn guide_defaults_for_tests() -> NetConfig {
    config_from_values("fcbridge", "192.168.241.1/24", "0.0.0.0/0", "2200", "2299", "/d".into())
        .expect("the guide's defaults are valid")
}

fn parse_port(field: &'static str, text: &str) -> Result<u16, NetError> {
    let port = if !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u32>().ok()
    } else {
        None
    };
    match port {
        Some(port @ 1..=65535) => Ok(port as u16),
        _ => Err(invalid(field, format!("{text:?} is not a port number from 1 to 65535"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(name: &str, cidr: &str, allowed: &str, min: &str, max: &str) -> Result<NetConfig, NetError> {
        config_from_values(name, cidr, allowed, min, max, PathBuf::from("/var/lib/hatch/dhcp"))
    }

    fn field_of(result: Result<NetConfig, NetError>) -> &'static str {
        match result {
            Err(NetError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn guide_defaults_parse() {
        let cfg = config_from_lookup(|_| None, PathBuf::from("/var/lib/hatch/dhcp")).unwrap();
        assert_eq!(cfg.bridge_name, "fcbridge");
        assert_eq!(cfg.gateway.to_string(), "192.168.241.1");
        assert_eq!(cfg.prefix_len, 24);
        assert_eq!(cfg.ssh_allowed, ("0.0.0.0".parse().unwrap(), 0));
        assert_eq!((cfg.ssh_port_min, cfg.ssh_port_max), (2200, 2299));
    }

    #[test]
    fn any_prefix_from_1_to_30() {
        for cidr in [
            "10.0.0.1/30",
            "10.0.0.2/30",
            "172.16.0.1/16",
            "10.0.0.1/8",
            "64.0.0.1/1",
            "192.168.241.200/24",
        ] {
            assert!(values("fcbridge", cidr, "0.0.0.0/0", "2200", "2299").is_ok(), "{cidr}");
        }
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let ok = ("fcbridge", "192.168.241.1/24", "0.0.0.0/0", "2200", "2299");
        type Values<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);
        let cases: Vec<(Values, &str)> = vec![
            (("", ok.1, ok.2, ok.3, ok.4), "HATCH_BRIDGE_NAME"),
            (("waytoolongbridge0", ok.1, ok.2, ok.3, ok.4), "HATCH_BRIDGE_NAME"),
            (("br 0", ok.1, ok.2, ok.3, ok.4), "HATCH_BRIDGE_NAME"),
            (("fctap-br", ok.1, ok.2, ok.3, ok.4), "HATCH_BRIDGE_NAME"),
            ((ok.0, "192.168.241.1", ok.2, ok.3, ok.4), "HATCH_BRIDGE_CIDR"),
            ((ok.0, "192.168.241.0/24", ok.2, ok.3, ok.4), "HATCH_BRIDGE_CIDR"),
            ((ok.0, "192.168.241.255/24", ok.2, ok.3, ok.4), "HATCH_BRIDGE_CIDR"),
            ((ok.0, "10.0.0.1/31", ok.2, ok.3, ok.4), "HATCH_BRIDGE_CIDR"),
            ((ok.0, "10.0.0.1/32", ok.2, ok.3, ok.4), "HATCH_BRIDGE_CIDR"),
            ((ok.0, "10.0.0.1/0", ok.2, ok.3, ok.4), "HATCH_BRIDGE_CIDR"),
            ((ok.0, "300.0.0.1/24", ok.2, ok.3, ok.4), "HATCH_BRIDGE_CIDR"),
            ((ok.0, ok.1, "0.0.0.0", ok.3, ok.4), "HATCH_SSH_ALLOWED_CIDR"),
            ((ok.0, ok.1, "10.0.0.5/24", ok.3, ok.4), "HATCH_SSH_ALLOWED_CIDR"),
            ((ok.0, ok.1, "10.0.0.0/33", ok.3, ok.4), "HATCH_SSH_ALLOWED_CIDR"),
            ((ok.0, ok.1, ok.2, "0", ok.4), "HATCH_SSH_PORT_MIN"),
            ((ok.0, ok.1, ok.2, "abc", ok.4), "HATCH_SSH_PORT_MIN"),
            ((ok.0, ok.1, ok.2, ok.3, "65536"), "HATCH_SSH_PORT_MAX"),
            ((ok.0, ok.1, ok.2, ok.3, "-1"), "HATCH_SSH_PORT_MAX"),
            ((ok.0, ok.1, ok.2, "2300", "2299"), "HATCH_SSH_PORT_MIN"),
        ];
        for ((name, cidr, allowed, min, max), field) in cases {
            assert_eq!(
                field_of(values(name, cidr, allowed, min, max)),
                field,
                "{name} {cidr} {allowed} {min} {max}"
            );
        }
    }
}
