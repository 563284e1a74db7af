//! Guest address allocation inside the bridge network: never the network,
//! broadcast or gateway address, never an address another VM holds.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rand::Rng;

use super::cidr::Ipv4Cidr;

/// The bridge network: gateway address plus prefix (validated: prefix
/// 1..=30, gateway a host address).
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub gateway: Ipv4Addr,
    pub cidr: Ipv4Cidr,
}

impl Pool {
    pub fn new(gateway: Ipv4Addr, prefix_len: u8) -> Self {
        Pool {
            gateway,
            cidr: Ipv4Cidr::new(gateway, prefix_len),
        }
    }

    /// Why `ip` cannot be given to a guest, regardless of other VMs.
    pub fn check_guest_ip(&self, ip: Ipv4Addr) -> Result<(), String> {
        let net = self.cidr.network_cidr();
        if !self.cidr.contains(ip) {
            return Err(format!("{ip} is outside the bridge network {net}"));
        }
        if ip == self.cidr.network() {
            return Err(format!("{ip} is the network address of {net}"));
        }
        if ip == self.cidr.broadcast() {
            return Err(format!("{ip} is the broadcast address of {net}"));
        }
        if ip == self.gateway {
            return Err(format!("{ip} is the bridge gateway address"));
        }
        Ok(())
    }

    /// A random free guest address. Starts at a random host address and
    /// walks forward (wrapping), so it finds the last free one too.
    pub fn random_free(&self, taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let (first, last) = self.cidr.host_range();
        let count = u64::from(last - first) + 1;
        let start = rand::thread_rng().gen_range(0..count);
        (0..count)
            .map(|step| Ipv4Addr::from(first + ((start + step) % count) as u32))
            .find(|ip| *ip != self.gateway && !taken.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn custom_ip_rules() {
        let pool = Pool::new(ip("192.168.241.1"), 24);
        assert!(pool.check_guest_ip(ip("192.168.241.50")).is_ok());
        assert!(pool.check_guest_ip(ip("192.168.241.254")).is_ok());
        for bad in [
            "192.168.241.0",
            "192.168.241.255",
            "192.168.241.1",
            "192.168.242.5",
            "10.0.0.1",
        ] {
            assert!(pool.check_guest_ip(ip(bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn slash_30_has_exactly_one_guest_then_exhausts() {
        let pool = Pool::new(ip("10.9.9.1"), 30);
        let mut taken = HashSet::new();
        let only = pool.random_free(&taken).unwrap();
        assert_eq!(only, ip("10.9.9.2"));
        taken.insert(only);
        assert_eq!(pool.random_free(&taken), None);
    }

    #[test]
    fn gateway_need_not_be_first_address() {
        let pool = Pool::new(ip("10.9.9.2"), 30);
        assert_eq!(pool.random_free(&HashSet::new()), Some(ip("10.9.9.1")));
    }

    #[test]
    fn fills_a_slash_24_without_duplicates_or_reserved_addresses() {
        let pool = Pool::new(ip("192.168.241.1"), 24);
        let mut taken = HashSet::new();
        while let Some(next) = pool.random_free(&taken) {
            assert!(pool.check_guest_ip(next).is_ok(), "{next}");
            assert!(taken.insert(next));
        }
        assert_eq!(taken.len(), 253);
    }

    #[test]
    fn slash_16_allocates_across_the_whole_range() {
        let pool = Pool::new(ip("172.20.0.1"), 16);
        let mut taken = HashSet::new();
        for _ in 0..2000 {
            let next = pool.random_free(&taken).unwrap();
            assert!(pool.check_guest_ip(next).is_ok());
            assert!(taken.insert(next));
        }
        // Random placement: some address beyond the first /24 is used.
        assert!(taken.iter().any(|a| a.octets()[2] != 0));
    }

    #[test]
    fn wide_prefixes_work() {
        let pool = Pool::new(ip("10.0.0.1"), 8);
        let next = pool.random_free(&HashSet::new()).unwrap();
        assert!(pool.check_guest_ip(next).is_ok());
        let huge = Pool::new(ip("64.0.0.1"), 1);
        assert!(huge.check_guest_ip(huge.random_free(&HashSet::new()).unwrap()).is_ok());
    }
}
