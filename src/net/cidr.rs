//! IPv4 networks in `a.b.c.d/len` notation, parsed strictly (no shell or
//! config-file value ever comes from an unparsed string).

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 address with a prefix length, as written by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d/len` (len 0..=32). The address may have host bits set.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not in a.b.c.d/len notation"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix_len = if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            len.parse::<u8>().ok().filter(|len| *len <= 32)
        }
        .ok_or_else(|| format!("prefix length {len:?} must be a number from 0 to 32"))?;
        Ok(Ipv4Cidr { addr, prefix_len })
    }

    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        Ipv4Cidr {
            addr,
            prefix_len: prefix_len.min(32),
        }
    }

    pub fn mask(&self) -> u32 {
        match self.prefix_len {
            0 => 0,
            len => u32::MAX << (32 - u32::from(len)),
        }
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// The same network with host bits cleared (`192.168.241.0/24`).
    pub fn network_cidr(&self) -> Ipv4Cidr {
        Ipv4Cidr::new(self.network(), self.prefix_len)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether `ip` is usable by a host: inside, and neither the network nor
    /// the broadcast address (prefixes up to /30 have both).
    pub fn is_host_address(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.network() && ip != self.broadcast()
    }

    /// First and last host address as integers (inclusive); meaningful for
    /// prefixes up to /30.
    pub fn host_range(&self) -> (u32, u32) {
        (u32::from(self.network()) + 1, u32::from(self.broadcast()) - 1)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_computes_network_and_broadcast() {
        let cidr = Ipv4Cidr::parse("192.168.241.1/24").unwrap();
        assert_eq!(cidr.network(), Ipv4Addr::new(192, 168, 241, 0));
        assert_eq!(cidr.broadcast(), Ipv4Addr::new(192, 168, 241, 255));
        assert_eq!(cidr.network_cidr().to_string(), "192.168.241.0/24");
        let wide = Ipv4Cidr::parse("10.1.2.3/16").unwrap();
        assert_eq!(wide.network(), Ipv4Addr::new(10, 1, 0, 0));
        assert_eq!(wide.broadcast(), Ipv4Addr::new(10, 1, 255, 255));
        let any = Ipv4Cidr::parse("0.0.0.0/0").unwrap();
        assert!(any.contains(Ipv4Addr::new(8, 8, 8, 8)));
        let one = Ipv4Cidr::parse("10.0.0.5/32").unwrap();
        assert!(one.contains(Ipv4Addr::new(10, 0, 0, 5)));
        assert!(!one.contains(Ipv4Addr::new(10, 0, 0, 6)));
    }

    #[test]
    fn slash_30_has_two_hosts() {
        let cidr = Ipv4Cidr::parse("10.9.9.1/30").unwrap();
        assert!(!cidr.is_host_address(Ipv4Addr::new(10, 9, 9, 0)));
        assert!(cidr.is_host_address(Ipv4Addr::new(10, 9, 9, 1)));
        assert!(cidr.is_host_address(Ipv4Addr::new(10, 9, 9, 2)));
        assert!(!cidr.is_host_address(Ipv4Addr::new(10, 9, 9, 3)));
        assert_eq!(
            cidr.host_range(),
            (
                u32::from(Ipv4Addr::new(10, 9, 9, 1)),
                u32::from(Ipv4Addr::new(10, 9, 9, 2))
            )
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "10.0.0.1",
            "10.0.0.1/",
            "10.0.0.1/33",
            "10.0.0.1/-1",
            "10.0.0/8",
            "10.0.0.1/8 ",
            "10.0.0.1/+8",
            "a/8",
            "10.0.0.1/8\n",
            "010.0.0.1/8",
        ] {
            assert!(Ipv4Cidr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
