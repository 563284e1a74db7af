//! Choosing a VM's network identity: pure validation and allocation against
//! what other VMs hold. The only host interaction is the port probe, passed
//! in as `port_in_use` so the logic is testable on its own.

use std::net::Ipv4Addr;

use super::ipam::Pool;
use super::{mac, names, ports, NetConfig, NetError, NetRequest, Taken};
use crate::model::NetworkIdentity;

fn invalid(field: &'static str, message: String) -> NetError {
    NetError::Invalid { field, message }
}

fn conflict(field: &'static str, message: String) -> NetError {
    NetError::Conflict { field, message }
}

pub fn allocate(
    cfg: &NetConfig,
    vm_id: &str,
    req: &NetRequest,
    taken: &Taken,
    port_in_use: impl Fn(u16) -> bool,
) -> Result<NetworkIdentity, NetError> {
    names::check_vm_id(vm_id).map_err(|m| invalid("vm_id", m))?;
    let pool = Pool::new(cfg.gateway, cfg.prefix_len);

    let guest_ip = match &req.guest_ip {
        Some(text) => {
            let ip: Ipv4Addr = text
                .parse()
                .map_err(|_| invalid("guest_ip", format!("{text:?} is not an IPv4 address")))?;
            pool.check_guest_ip(ip).map_err(|m| invalid("guest_ip", m))?;
            if taken.ips.contains(&ip) {
                return Err(conflict("guest_ip", format!("{ip} is already used by another VM")));
            }
            ip
        }
        None => pool.random_free(&taken.ips).ok_or_else(|| NetError::Exhausted {
            what: "IP address",
            pool: pool.cidr.network_cidr().to_string(),
        })?,
    };

    let guest_mac = match &req.guest_mac {
        Some(text) => {
            let normalised = mac::normalise(text).map_err(|m| invalid("guest_mac", m))?;
            if normalised == super::bridge::bridge_mac(cfg) {
                return Err(conflict("guest_mac", format!("{normalised} is the bridge's own MAC")));
            }
            if taken.macs.iter().any(|held| held.eq_ignore_ascii_case(&normalised)) {
                return Err(conflict(
                    "guest_mac",
                    format!("{normalised} is already used by another VM"),
                ));
            }
            normalised
        }
        None => mac::random_unique(&taken.macs).ok_or_else(|| NetError::Exhausted {
            what: "MAC address",
            pool: "02:fc:00:00:00:00/16".into(),
        })?,
    };

    let tap_name = names::tap_name(vm_id, &taken.taps).ok_or_else(|| NetError::Exhausted {
        what: "TAP name",
        pool: format!("{}{vm_id}", names::TAP_PREFIX),
    })?;

    let ssh_port =
        ports::lowest_free(cfg.ssh_port_min, cfg.ssh_port_max, &taken.ports, port_in_use).ok_or_else(|| {
            NetError::Exhausted {
                what: "SSH port",
                pool: format!(
                    "{}-{} (HATCH_SSH_PORT_MIN/HATCH_SSH_PORT_MAX; ports bound by other programs are skipped)",
                    cfg.ssh_port_min, cfg.ssh_port_max
                ),
            }
        })?;

    Ok(NetworkIdentity {
        guest_ip,
        guest_mac,
        tap_name,
        ssh_port,
        egress: req.egress.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cfg(cidr: &str, min: &str, max: &str) -> NetConfig {
        super::super::settings::config_from_values("fcbridge", cidr, "0.0.0.0/0", min, max, PathBuf::from("/tmp/d"))
            .unwrap()
    }

    fn req(ip: Option<&str>, mac: Option<&str>) -> NetRequest {
        NetRequest {
            guest_ip: ip.map(String::from),
            guest_mac: mac.map(String::from),
            ..Default::default()
        }
    }

    fn field(result: Result<NetworkIdentity, NetError>) -> (&'static str, bool) {
        match result {
            Err(NetError::Invalid { field, .. }) => (field, false),
            Err(NetError::Conflict { field, .. }) => (field, true),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn custom_values_are_validated_and_normalised() {
        let cfg = cfg("192.168.241.1/24", "2200", "2299");
        let id = allocate(
            &cfg,
            "vm-xyz789",
            &req(Some("192.168.241.50"), Some("02:FC:00:11:22:33")),
            &Taken::default(),
            |_| false,
        )
        .unwrap();
        assert_eq!(id.guest_ip.to_string(), "192.168.241.50");
        assert_eq!(id.guest_mac, "02:fc:00:11:22:33");
        assert_eq!(id.tap_name, "fctap-vm-xyz78");
        assert_eq!(id.ssh_port, 2200);
    }

    #[test]
    fn bad_custom_values_name_the_field() {
        let cfg = cfg("192.168.241.1/24", "2200", "2299");
        let mut taken = Taken::default();
        taken.ips.insert("192.168.241.60".parse().unwrap());
        taken.macs.insert("02:fc:00:00:00:60".into());
        let cases = [
            (req(Some("192.168.242.5"), None), ("guest_ip", false)),
            (req(Some("192.168.241.1"), None), ("guest_ip", false)),
            (req(Some("192.168.241.0"), None), ("guest_ip", false)),
            (req(Some("192.168.241.255"), None), ("guest_ip", false)),
            (req(Some("192.168.241.5\n"), None), ("guest_ip", false)),
            (req(Some("not-an-ip"), None), ("guest_ip", false)),
            (req(Some("192.168.241.60"), None), ("guest_ip", true)),
            (req(None, Some("02:fc:00:00:00")), ("guest_mac", false)),
            (req(None, Some("01:fc:00:00:00:01")), ("guest_mac", false)),
            (req(None, Some("00:00:00:00:00:00")), ("guest_mac", false)),
            (req(None, Some("02:fc:00:00:00:01\ndhcp-range=1")), ("guest_mac", false)),
            (req(None, Some("02:FC:00:00:00:60")), ("guest_mac", true)),
        ];
        for (request, expected) in cases {
            assert_eq!(
                field(allocate(&cfg, "vm-a", &request, &taken, |_| false)),
                expected,
                "{request:?}"
            );
        }
        assert_eq!(
            field(allocate(&cfg, "vm a", &req(None, None), &taken, |_| false)),
            ("vm_id", false)
        );
    }

    #[test]
    fn exhaustion_of_addresses_and_ports() {
        let small = cfg("10.9.9.1/30", "2200", "2201");
        let mut taken = Taken::default();
        let first = allocate(&small, "vm-1", &req(None, None), &taken, |_| false).unwrap();
        taken = Taken::from_identities([&first]);
        assert!(matches!(
            allocate(&small, "vm-2", &req(None, None), &taken, |_| false),
            Err(NetError::Exhausted { what: "IP address", .. })
        ));
        let wide = cfg("10.9.0.1/16", "2200", "2201");
        let busy = allocate(&wide, "vm-2", &req(None, None), &taken, |port| port == 2201);
        assert!(
            matches!(busy, Err(NetError::Exhausted { what: "SSH port", .. })),
            "{busy:?}"
        );
    }

    #[test]
    fn many_allocations_are_unique() {
        let cfg = cfg("172.16.0.1/16", "2200", "2299");
        let mut taken = Taken::default();
        for i in 0..100 {
            let id = allocate(&cfg, &format!("vm-same{i:04}"), &req(None, None), &taken, |_| false).unwrap();
            assert!(taken.ips.insert(id.guest_ip));
            assert!(taken.macs.insert(id.guest_mac));
            assert!(taken.taps.insert(id.tap_name));
            assert!(taken.ports.insert(id.ssh_port));
        }
        assert!(matches!(
            allocate(&cfg, "vm-one-more", &req(None, None), &taken, |_| false),
            Err(NetError::Exhausted { what: "SSH port", .. })
        ));
    }
}
