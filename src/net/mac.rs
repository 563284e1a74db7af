//! MAC addresses: validation of user-supplied ones and generation of random
//! locally administered unicast ones with Hatch's `02:fc:` prefix.

use std::collections::HashSet;

use rand::Rng;

/// Parses `xx:xx:xx:xx:xx:xx` (hex, either case) into bytes.
fn parse_bytes(text: &str) -> Option<[u8; 6]> {
    let mut bytes = [0u8; 6];
    let mut parts = text.split(':');
    for byte in bytes.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(bytes)
}

fn format_bytes(bytes: [u8; 6]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Validates a MAC for use by a guest and returns it in lowercase.
/// Rejects other notations, multicast (and so broadcast) and all zeros.
pub fn normalise(text: &str) -> Result<String, String> {
    let bytes = parse_bytes(text).ok_or_else(|| format!("{:?} is not a MAC address like 02:fc:00:11:22:33", text))?;
    if bytes == [0; 6] {
        return Err("the all-zeros MAC address cannot be used".into());
    }
    if bytes[0] & 0x01 != 0 {
        return Err(format!(
            "{} is a multicast address; a guest needs a unicast MAC",
            format_bytes(bytes)
        ));
    }
    Ok(format_bytes(bytes))
}

/// A random `02:fc:xx:xx:xx:xx` not in `taken` (compared in lowercase).
/// 2^32 candidates: collisions are retried, exhaustion is not realistic but
/// is still reported rather than looping forever.
pub fn random_unique(taken: &HashSet<String>) -> Option<String> {
    let taken: HashSet<String> = taken.iter().map(|mac| mac.to_ascii_lowercase()).collect();
    let mut rng = rand::thread_rng();
    (0..10_000).find_map(|_| {
        let tail: [u8; 4] = rng.gen();
        let mac = format_bytes([0x02, 0xfc, tail[0], tail[1], tail[2], tail[3]]);
        (!taken.contains(&mac)).then_some(mac)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_valid_unicast() {
        assert_eq!(normalise("02:FC:00:11:22:AA").unwrap(), "02:fc:00:11:22:aa");
        assert_eq!(normalise("52:54:00:12:34:56").unwrap(), "52:54:00:12:34:56");
    }

    #[test]
    fn rejects_bad_macs() {
        for bad in [
            "",
            "02:fc:00:11:22",
            "02:fc:00:11:22:33:44",
            "02-fc-00-11-22-33",
            "02:fc:00:11:22:3g",
            "02:fc:00:11:22:33\n",
            "02:fc:00:11:22:33\ndhcp-range=x",
            " 02:fc:00:11:22:33",
            "2:fc:00:11:22:33",
            "00:00:00:00:00:00",
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "03:fc:00:00:00:01",
        ] {
            assert!(normalise(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn random_macs_have_prefix_and_avoid_taken() {
        let mut taken = HashSet::new();
        for _ in 0..500 {
            let mac = random_unique(&taken).unwrap();
            assert!(mac.starts_with("02:fc:"));
            assert_eq!(normalise(&mac).unwrap(), mac);
            assert!(taken.insert(mac));
        }
    }
}
