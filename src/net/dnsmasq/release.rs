//! Ending a deleted VM's DHCP lease without restarting dnsmasq: one
//! DHCPRELEASE (RFC 2131 §4.4.6) for the VM's MAC and address, sent from
//! the host to dnsmasq on the bridge, as dnsmasq's own `dhcp_release`
//! tool does. dnsmasq keeps leases across a SIGHUP, and a lease on an
//! address held by another MAC stops it handing that address to the VM
//! reserved for it next.
//!
//! The socket is bound to the bridge (SO_BINDTODEVICE), so although the
//! packet is delivered locally, dnsmasq sees it arrive on the bridge, the
//! interface it serves.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use nix::sys::socket::{setsockopt, sockopt::BindToDevice};

use super::Reservation;
use crate::net::{NetConfig, NetError};

const SERVER_PORT: u16 = 67;
const BOOTREQUEST: u8 = 1;
const HTYPE_ETHERNET: u8 = 1;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const OPTION_MESSAGE_TYPE: u8 = 53;
const OPTION_SERVER_ID: u8 = 54;
const OPTION_END: u8 = 255;
const DHCPRELEASE: u8 = 7;

/// The DHCPRELEASE packet: a BOOTP header (236 bytes) with `ciaddr` the
/// leased address and `chaddr` the client's MAC, then the options.
fn packet(mac: [u8; 6], ip: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = BOOTREQUEST;
    p[1] = HTYPE_ETHERNET;
    p[2] = 6;
    // xid: any value; no answer is expected.
    p[4..8].copy_from_slice(&rand::random::<u32>().to_be_bytes());
    p[12..16].copy_from_slice(&ip.octets());
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&MAGIC_COOKIE);
    p.extend_from_slice(&[OPTION_MESSAGE_TYPE, 1, DHCPRELEASE]);
    p.extend_from_slice(&[OPTION_SERVER_ID, 4]);
    p.extend_from_slice(&server.octets());
    p.push(OPTION_END);
    p
}

fn mac_bytes(mac: &str) -> Option<[u8; 6]> {
    let mut bytes = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut bytes {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(bytes)
}

/// Asks dnsmasq on the bridge to forget the lease of `reservation`.
/// Nothing answers a release; dnsmasq drops the lease if it has one.
pub(super) fn send(cfg: &NetConfig, reservation: &Reservation) -> Result<(), NetError> {
    let io = |e: std::io::Error| NetError::Dhcp(format!("sending a DHCP release: {e}"));
    let mac = mac_bytes(reservation.mac()).ok_or_else(|| NetError::Dhcp(format!("bad MAC {}", reservation.mac())))?;
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).map_err(io)?;
    setsockopt(&socket, BindToDevice, &OsString::from(&cfg.bridge_name)).map_err(|e| io(e.into()))?;
    let to = SocketAddrV4::new(cfg.gateway, SERVER_PORT);
    socket
        .send_to(&packet(mac, reservation.ip(), cfg.gateway), to)
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packet_names_the_lease_and_the_server() {
        let p = packet(
            mac_bytes("02:fc:00:00:00:01").unwrap(),
            "10.0.0.5".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
        );
        assert_eq!(&p[..3], &[1, 1, 6]);
        assert_eq!(&p[12..16], &[10, 0, 0, 5]);
        assert_eq!(&p[28..34], &[2, 0xfc, 0, 0, 0, 1]);
        assert_eq!(&p[236..], &[99, 130, 83, 99, 53, 1, 7, 54, 4, 10, 0, 0, 1, 255]);
        assert_eq!(mac_bytes("02:fc:00:00:00"), None);
        assert_eq!(mac_bytes("02:fc:00:00:00:01:02"), None);
    }
}
