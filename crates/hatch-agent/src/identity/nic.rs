//! The NIC's new MAC and IPv4 configuration, applied with `ip` (busybox's
//! applet in the minimal image, iproute2 elsewhere: only commands both
//! understand are used).

use std::ffi::CStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use hatch_agent_proto::{ErrorCode, Reply};

use super::values::{Mac, Nic};
use crate::channel::{error, io_error};
use crate::system_tools::{self, find_program, SEARCH_PATH};

/// Runs `ip` with arguments; Err describes the failure (with its stderr).
/// A trait so the order of commands and the fallbacks are tested without
/// touching a real link.
pub trait Ip {
    fn run(&self, args: &[&str]) -> Result<(), String>;
}

pub struct SystemIp {
    program: PathBuf,
}

impl SystemIp {
    pub fn find() -> Result<SystemIp, Reply> {
        find_program("ip").map(|program| SystemIp { program }).ok_or_else(|| {
            error(
                ErrorCode::NotFound,
                format!("no ip command in {} (busybox's or iproute2's)", SEARCH_PATH),
            )
        })
    }
}

impl Ip for SystemIp {
    fn run(&self, args: &[&str]) -> Result<(), String> {
        system_tools::run(&self.program, args)
    }
}

/// The interface with the snapshot's MAC, or one that already has the new
/// MAC (a repeated request). Answers its name and its current MAC.
pub fn find_interface(sys_class_net: &Path, nic: &Nic) -> Result<(String, Mac), Reply> {
    let entries = std::fs::read_dir(sys_class_net).map_err(|e| io_error(&sys_class_net.display().to_string(), &e))?;
    let mut found: Vec<(String, Mac)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let address = std::fs::read_to_string(entry.path().join("address")).ok()?;
            let mac = Mac::parse(address.trim())?;
            (mac == nic.previous_mac || mac == nic.mac).then_some((name, mac))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    match found.as_slice() {
        [] => Err(error(
            ErrorCode::NotFound,
            format!(
                "no interface has MAC {} (or already {}) in {}",
                nic.previous_mac,
                nic.mac,
                sys_class_net.display()
            ),
        )),
        [one] => Ok(one.clone()),
        several => {
            let names: Vec<&str> = several.iter().map(|(name, _)| name.as_str()).collect();
            Err(error(
                ErrorCode::Io,
                format!(
                    "interfaces {} all have MAC {} or {}: refusing to guess which is the NIC",
                    names.join(", "),
                    nic.previous_mac,
                    nic.mac
                ),
            ))
        }
    }
}

/// Sets the MAC (unless it is set already), removes the parent's IPv4
/// addresses and brings the link up: the NIC is the new one, without an
/// address yet (see [`configure`] and the DHCP clients).
pub fn take_mac(ip: &dyn Ip, interface: &str, current: Mac, nic: &Nic) -> Result<(), Reply> {
    let failed = |message: String| error(ErrorCode::Io, message);
    if current != nic.mac {
        set_mac(ip, interface, nic.mac).map_err(failed)?;
    }
    ip.run(&["-4", "addr", "flush", "dev", interface]).map_err(failed)?;
    ip.run(&["link", "set", "dev", interface, "up"]).map_err(failed)
}

/// Gives the NIC its address, unless it has it already (a DHCP client
/// bound it), and points the default route at the gateway.
pub fn configure(ip: &dyn Ip, interface: &str, nic: &Nic, has_address: bool) -> Result<(), Reply> {
    let failed = |message: String| error(ErrorCode::Io, message);
    if !has_address {
        let address = nic.address.to_string();
        ip.run(&["-4", "addr", "add", &address, "dev", interface])
            .map_err(failed)?;
    }
    if let Some(gateway) = nic.gateway {
        let gateway = gateway.to_string();
        ip.run(&["-4", "route", "replace", "default", "via", &gateway, "dev", interface])
            .map_err(failed)?;
    }
    Ok(())
}

/// Whether `interface` holds the IPv4 address `address` now.
pub fn has_address(interface: &str, address: Ipv4Addr) -> bool {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below; every entry is read
    // only while the list lives, and address pointers are checked for null
    // and for their family before the cast.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return false;
        }
        let mut found = false;
        let mut entry = list;
        while !entry.is_null() && !found {
            let ifa = &*entry;
            let ipv4 = !ifa.ifa_addr.is_null() && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET;
            if ipv4 && CStr::from_ptr(ifa.ifa_name).to_bytes() == interface.as_bytes() {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == address;
            }
            entry = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

/// Live when the driver allows it; else with the link down for the change
/// (brought up again whatever happens: a NIC left down is worse).
fn set_mac(ip: &dyn Ip, interface: &str, mac: Mac) -> Result<(), String> {
    let mac = mac.to_string();
    let set = ["link", "set", "dev", interface, "address", &mac];
    let Err(live) = ip.run(&set) else {
        return Ok(());
    };
    ip.run(&["link", "set", "dev", interface, "down"])
        .map_err(|down| format!("{live}; then {down}"))?;
    let changed = ip.run(&set);
    let up = ip.run(&["link", "set", "dev", interface, "up"]);
    match (changed, up) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), _) => Err(format!("{live}; with the link down: {e}")),
        (Ok(()), Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::net::Ipv4Addr;

    use super::super::values::Ipv4Cidr;
    use super::*;

    /// Records the commands; refuses those that contain `refuse`, and with
    /// `live_mac: false` a MAC change while the link is up (as drivers
    /// without IFF_LIVE_ADDR_CHANGE do).
    struct FakeIp {
        refuse: Option<&'static str>,
        live_mac: bool,
        up: Cell<bool>,
        ran: RefCell<Vec<String>>,
    }

    impl FakeIp {
        fn new(refuse: Option<&'static str>, live_mac: bool) -> FakeIp {
            FakeIp {
                refuse,
                live_mac,
                up: Cell::new(true),
                ran: RefCell::default(),
            }
        }

        fn ran(&self) -> Vec<String> {
            self.ran.borrow().clone()
        }
    }

    impl Ip for FakeIp {
        fn run(&self, args: &[&str]) -> Result<(), String> {
            let line = args.join(" ");
            self.ran.borrow_mut().push(line.clone());
            let busy = line.contains(" address ") && self.up.get() && !self.live_mac;
            if busy || self.refuse.is_some_and(|refused| line.contains(refused)) {
                return Err(format!("ip {line}: refused"));
            }
            match args.last() {
                Some(&"up") => self.up.set(true),
                Some(&"down") => self.up.set(false),
                _ => {}
            }
            Ok(())
        }
    }

    fn nic() -> Nic {
        Nic {
            previous_mac: Mac::parse("52:54:00:00:00:01").unwrap(),
            mac: Mac::parse("52:54:00:00:00:02").unwrap(),
            address: Ipv4Cidr::parse("10.0.0.5/24").unwrap(),
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
        }
    }

    const SET_MAC: &str = "link set dev eth0 address 52:54:00:00:00:02";

    #[test]
    fn the_mac_then_the_address_then_the_route() {
        let ip = FakeIp::new(None, true);
        take_mac(&ip, "eth0", nic().previous_mac, &nic()).unwrap();
        configure(&ip, "eth0", &nic(), false).unwrap();
        let expected = [
            SET_MAC,
            "-4 addr flush dev eth0",
            "link set dev eth0 up",
            "-4 addr add 10.0.0.5/24 dev eth0",
            "-4 route replace default via 10.0.0.1 dev eth0",
        ];
        assert_eq!(ip.ran(), expected);
        // A MAC already set and no gateway: those steps are left out.
        let ip = FakeIp::new(None, true);
        let nic = Nic { gateway: None, ..nic() };
        take_mac(&ip, "eth0", nic.mac, &nic).unwrap();
        configure(&ip, "eth0", &nic, false).unwrap();
        assert_eq!(ip.ran(), expected[1..4]);
        // An address a DHCP client bound is kept; the route is still set.
        let ip = FakeIp::new(None, true);
        configure(&ip, "eth0", &self::nic(), true).unwrap();
        assert_eq!(ip.ran(), expected[4..]);
    }

    #[test]
    fn a_mac_the_driver_will_not_change_live_is_changed_with_the_link_down() {
        let ip = FakeIp::new(None, false);
        set_mac(&ip, "eth0", nic().mac).unwrap();
        let expected = [SET_MAC, "link set dev eth0 down", SET_MAC, "link set dev eth0 up"];
        assert_eq!(ip.ran(), expected);
        // Refused even then: an error, and the link is up again.
        let ip = FakeIp::new(Some("address"), false);
        let failure = set_mac(&ip, "eth0", nic().mac).unwrap_err();
        assert!(failure.contains("with the link down"), "{failure}");
        assert_eq!(ip.ran(), expected);
        assert!(ip.up.get());
    }

    #[test]
    fn a_failing_step_stops_the_rest_and_is_an_io_error() {
        let ip = FakeIp::new(Some("addr add"), true);
        let Err(Reply::Error(failure)) = configure(&ip, "eth0", &nic(), false) else {
            panic!("a failed step succeeded")
        };
        assert_eq!(failure.code, ErrorCode::Io);
        assert!(failure.message.contains("addr add 10.0.0.5/24"), "{}", failure.message);
        assert_eq!(ip.ran().len(), 1);
        let ip = FakeIp::new(Some("flush"), true);
        assert!(take_mac(&ip, "eth0", nic().mac, &nic()).is_err());
        assert_eq!(ip.ran(), ["-4 addr flush dev eth0"]);
    }

    #[test]
    fn the_interface_is_found_by_its_old_or_new_mac() {
        let sys = tempfile::tempdir().unwrap();
        let link = |name: &str, address: &str| {
            std::fs::create_dir(sys.path().join(name)).unwrap();
            std::fs::write(sys.path().join(name).join("address"), format!("{address}\n")).unwrap();
        };
        link("lo", "00:00:00:00:00:00");
        link("eth0", "52:54:00:00:00:01");
        link("eth1", "52:54:00:99:99:99");
        assert_eq!(
            find_interface(sys.path(), &nic()).unwrap(),
            ("eth0".to_string(), nic().previous_mac)
        );
        std::fs::write(sys.path().join("eth0/address"), "52:54:00:00:00:02\n").unwrap();
        assert_eq!(
            find_interface(sys.path(), &nic()).unwrap(),
            ("eth0".to_string(), nic().mac)
        );
        link("eth2", "52:54:00:00:00:01");
        let Err(Reply::Error(ambiguous)) = find_interface(sys.path(), &nic()) else {
            panic!("two candidates were not refused")
        };
        assert!(ambiguous.message.contains("eth0, eth2"), "{}", ambiguous.message);
        let elsewhere = Nic {
            previous_mac: Mac::parse("52:54:00:00:00:07").unwrap(),
            mac: Mac::parse("52:54:00:00:00:08").unwrap(),
            ..nic()
        };
        let Err(Reply::Error(missing)) = find_interface(sys.path(), &elsewhere) else {
            panic!("an unknown MAC was found")
        };
        assert_eq!(missing.code, ErrorCode::NotFound);
    }
}
