//! The request's values, checked and parsed before anything is changed: a
//! value that reaches `ip`, sethostname or a file has passed through here.

use std::fmt;
use std::net::Ipv4Addr;

use hatch_agent_proto::{ErrorCode, Identity, NicIdentity, Reply};

use crate::channel::error;

/// The kernel's limit (`__NEW_UTS_LEN`).
const MAX_HOSTNAME: usize = 64;
const MAX_LABEL: usize = 63;

/// A hostname of RFC 1123 labels joined by dots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname(String);

impl Hostname {
    pub fn parse(text: &str) -> Result<Hostname, String> {
        if text.is_empty() || text.len() > MAX_HOSTNAME {
            return Err(format!("hostname {text:?} must have 1 to {MAX_HOSTNAME} characters"));
        }
        for label in text.split('.') {
            let allowed = label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if label.is_empty() || label.len() > MAX_LABEL || !allowed || label.starts_with('-') || label.ends_with('-')
            {
                return Err(format!(
                    "hostname {text:?} is not dot-separated labels of letters, digits and inner hyphens (at most {MAX_LABEL} each)"
                ));
            }
        }
        Ok(Hostname(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An Ethernet address; shown as `aa:bb:cc:dd:ee:ff`, the form of
/// /sys/class/net/*/address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac([u8; 6]);

impl Mac {
    /// Exactly six pairs of hex digits separated by colons.
    pub fn parse(text: &str) -> Option<Mac> {
        let mut octets = [0u8; 6];
        let mut parts = text.split(':');
        for octet in &mut octets {
            let part = parts.next()?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            *octet = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(octets))
    }

    /// What a NIC may have: not a group address, not all zeros.
    fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An IPv4 address with its prefix length, `10.0.0.5/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn parse(text: &str) -> Result<Ipv4Cidr, String> {
        let bad = || format!("address {text:?} is not an IPv4 address with a prefix length 1-32 (10.0.0.5/24)");
        let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
        let address = host_address(address).ok_or_else(bad)?;
        // Digits only: u8's parser would take "+24" and "024".
        let canonical = !prefix.is_empty() && prefix.len() <= 2 && prefix.bytes().all(|b| b.is_ascii_digit());
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| canonical && (1..=32).contains(p))
            .ok_or_else(bad)?;
        let cidr = Ipv4Cidr { address, prefix };
        // /31 and /32 have no network or broadcast address.
        if prefix <= 30 && (address == cidr.network() || address == cidr.broadcast()) {
            return Err(format!("address {text:?} is its subnet's network or broadcast address"));
        }
        Ok(cidr)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & self.mask())
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }

    fn contains(&self, other: Ipv4Addr) -> bool {
        u32::from(other) & self.mask() == u32::from(self.network())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// A dotted quad (std's parser: four decimal octets, no leading zeros)
/// that may be a host's: not 0.0.0.0, loopback, multicast or broadcast.
fn host_address(text: &str) -> Option<Ipv4Addr> {
    let address: Ipv4Addr = text.parse().ok()?;
    let usable =
        !(address.is_unspecified() || address.is_loopback() || address.is_multicast() || address.is_broadcast());
    usable.then_some(address)
}

/// A NIC's new identity, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub previous_mac: Mac,
    pub mac: Mac,
    pub address: Ipv4Cidr,
    pub gateway: Option<Ipv4Addr>,
}

impl Nic {
    fn parse(nic: &NicIdentity) -> Result<Nic, String> {
        let mac = |field: &str, text: &str| {
            Mac::parse(text)
                .filter(Mac::is_unicast)
                .ok_or_else(|| format!("{field} {text:?} is not a unicast MAC address (aa:bb:cc:dd:ee:ff)"))
        };
        let previous_mac = mac("previous_mac", &nic.previous_mac)?;
        let mac = mac("mac", &nic.mac)?;
        let address = Ipv4Cidr::parse(&nic.address)?;
        let gateway = match &nic.gateway {
            None => None,
            Some(text) => {
                let gateway =
                    host_address(text).ok_or_else(|| format!("gateway {text:?} is not a host's IPv4 address"))?;
                // `ip route ... via` needs a gateway on the link: checked
                // here so that a bad one changes nothing.
                if gateway == address.address || !address.contains(gateway) {
                    return Err(format!("gateway {text:?} is not another address in {address}'s subnet"));
                }
                Some(gateway)
            }
        };
        Ok(Nic {
            previous_mac,
            mac,
            address,
            gateway,
        })
    }
}

/// The whole request, checked.
#[derive(Debug)]
pub struct Checked<'a> {
    pub hostname: Hostname,
    pub nic: Option<Nic>,
    pub entropy: &'a [u8],
}

impl Checked<'_> {
    /// Every value, or an Invalid reply naming the first bad one.
    pub fn parse(identity: &Identity) -> Result<Checked<'_>, Reply> {
        let invalid = |message: String| error(ErrorCode::Invalid, message);
        Ok(Checked {
            hostname: Hostname::parse(&identity.hostname).map_err(invalid)?,
            nic: identity.nic.as_ref().map(Nic::parse).transpose().map_err(invalid)?,
            entropy: &identity.entropy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_rfc_1123_labels_of_at_most_64_characters() {
        for good in [
            "a",
            "clone-1",
            "Web01",
            "vm-3.internal",
            "0abc",
            &"a".repeat(63),
            &format!("{}.b", "a".repeat(62)),
        ] {
            assert_eq!(Hostname::parse(good).unwrap().as_str(), good);
        }
        let long = format!("{}.{}", "a".repeat(32), "b".repeat(32));
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a_b",
            "a b",
            "a;reboot",
            "$(id)",
            "ä",
            "a\n",
            "a\0",
            &"a".repeat(64 + 1),
            &"a".repeat(64),
            &long,
        ] {
            assert!(Hostname::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn macs_are_six_hex_pairs_and_shown_in_lower_case() {
        let mac = Mac::parse("52:54:00:AB:cd:0F").unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert!(mac.is_unicast());
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:00",
            "52-54-00-ab-cd-0f",
            "5254.00ab.cd0f",
            "52:54:00:ab:cd:f",
            "52:54:00:ab:cd:0g",
            "52:54:00:ab:cd:+f",
            "52:54:00:ab:cd:0f ",
            "52:54:00:ab:cd:0f\n",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad:?} was accepted");
        }
        assert!(!Mac::parse("01:00:5e:00:00:01").unwrap().is_unicast());
        assert!(!Mac::parse("ff:ff:ff:ff:ff:ff").unwrap().is_unicast());
        assert!(!Mac::parse("00:00:00:00:00:00").unwrap().is_unicast());
    }

    #[test]
    fn addresses_are_dotted_quads_with_a_prefix_from_1_to_32() {
        let cidr = Ipv4Cidr::parse("10.0.0.5/24").unwrap();
        assert_eq!((cidr.address, cidr.prefix), (Ipv4Addr::new(10, 0, 0, 5), 24));
        assert_eq!(cidr.to_string(), "10.0.0.5/24");
        for good in ["10.0.0.5/1", "10.0.0.5/32", "10.0.0.0/31", "192.168.1.254/24"] {
            assert!(Ipv4Cidr::parse(good).is_ok(), "{good:?} was refused");
        }
        for bad in [
            "10.0.0.5",
            "10.0.0.5/",
            "10.0.0.5/0",
            "10.0.0.5/33",
            "10.0.0.5/+24",
            "10.0.0.5/024",
            "10.0.0.5/24/1",
            "10.0.0.5 /24",
            "10.0.0/24",
            "10.0.0.05/24",
            "10.0.0.256/24",
            "0x0a.0.0.5/24",
            "fd00::5/64",
            "0.0.0.0/8",
            "127.0.0.1/8",
            "224.0.0.1/24",
            "255.255.255.255/32",
            "10.0.0.0/24",
            "10.0.0.255/24",
            "10.0.0.5/24; reboot",
        ] {
            assert!(Ipv4Cidr::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    fn nic(gateway: Option<&str>) -> NicIdentity {
        NicIdentity {
            previous_mac: "52:54:00:00:00:01".into(),
            mac: "52:54:00:00:00:02".into(),
            address: "10.0.0.5/24".into(),
            gateway: gateway.map(str::to_string),
        }
    }

    #[test]
    fn a_gateway_must_be_another_address_on_the_subnet() {
        let parsed = Nic::parse(&nic(Some("10.0.0.1"))).unwrap();
        assert_eq!(parsed.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(Nic::parse(&nic(None)).unwrap().gateway, None);
        for bad in [
            "10.0.1.1",
            "10.0.0.5",
            "10.0.0.1/24",
            "gateway",
            "",
            "0.0.0.0",
            "10.0.0.1 ",
        ] {
            assert!(Nic::parse(&nic(Some(bad))).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_first_bad_value_is_named_as_invalid() {
        let identity = |nic: NicIdentity| Identity {
            hostname: "clone-1".into(),
            nic: Some(nic),
            entropy: vec![1, 2, 3],
        };
        let cases = [
            (
                NicIdentity {
                    mac: "01:00:5e:00:00:01".into(),
                    ..nic(None)
                },
                "mac",
            ),
            (
                NicIdentity {
                    previous_mac: "junk".into(),
                    ..nic(None)
                },
                "previous_mac",
            ),
            (
                NicIdentity {
                    address: "10.0.0.5".into(),
                    ..nic(None)
                },
                "address",
            ),
            (nic(Some("10.9.9.9")), "gateway"),
        ];
        for (nic, field) in cases {
            let Err(Reply::Error(error)) = Checked::parse(&identity(nic)) else {
                panic!("{field} was accepted")
            };
            assert_eq!(error.code, ErrorCode::Invalid);
            assert!(error.message.starts_with(field), "{}", error.message);
        }
        let bad_name = Identity {
            hostname: "bad_name".into(),
            ..Default::default()
        };
        let Err(Reply::Error(error)) = Checked::parse(&bad_name) else {
            panic!("a bad hostname was accepted")
        };
        assert!(error.message.starts_with("hostname"), "{}", error.message);
        let good = identity(nic(Some("10.0.0.1")));
        let checked = Checked::parse(&good).unwrap();
        assert_eq!(checked.hostname.as_str(), "clone-1");
        assert_eq!(checked.entropy, [1, 2, 3]);
        assert_eq!(checked.nic.unwrap().mac.to_string(), "52:54:00:00:00:02");
    }
}
