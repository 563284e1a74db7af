//! Names that reach `ip` arguments and dnsmasq.conf: interface names, VM ids
//! (used as DHCP host names) and TAP names derived from them.

use std::collections::HashSet;

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Prefix of every TAP Hatch creates; reconcile deletes stale ones by it.
pub const TAP_PREFIX: &str = "fctap-";
/// How many characters of the VM id the TAP name keeps, as the guide shows
/// (`vm-abc123` → `fctap-vm-abc12`).
const TAP_ID_CHARS: usize = 8;

/// A conservative interface name: 1..=15 of `[A-Za-z0-9_.-]`, not starting
/// with `-` (it would read as an option) and not `.`/`..`.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Err(format!("{name:?} must be 1 to {IFNAME_MAX} characters long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!("{name:?} may only contain letters, digits, '_', '.' and '-'"));
    }
    if name.starts_with('-') || name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

/// VM ids end up as DHCP host names and in TAP names and rule comments:
/// one DNS label of letters, digits and `-`.
pub fn check_vm_id(id: &str) -> Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= 63
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a valid VM id (letters, digits and '-', at most 63)"
        ))
    }
}

/// Whether `name` looks like a TAP Hatch made (so reconcile may remove it).
pub fn is_hatch_tap(name: &str) -> bool {
    name.starts_with(TAP_PREFIX) && check_ifname(name).is_ok()
}

/// `fctap-<first 8 chars of the id>`, or when that is taken a deterministic
/// variant `fctap-<shorter id>-<n>` (n in base 36), so VMs whose ids share a
/// prefix still get distinct names. `None` when every candidate is taken.
pub fn tap_name(vm_id: &str, taken: &HashSet<String>) -> Option<String> {
    let room = IFNAME_MAX - TAP_PREFIX.len();
    let prefix = |n: usize| vm_id.chars().take(n).collect::<String>();
    let base = format!("{TAP_PREFIX}{}", prefix(TAP_ID_CHARS));
    if !taken.contains(&base) {
        return Some(base);
    }
    (1u32..36 * 36 * 36)
        .map(|n| {
            let suffix = format!("-{}", base36(n));
            format!("{TAP_PREFIX}{}{suffix}", prefix(room - suffix.len()))
        })
        .find(|candidate| !taken.contains(candidate))
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_name_matches_the_guide() {
        assert_eq!(tap_name("vm-abc123", &HashSet::new()).unwrap(), "fctap-vm-abc12");
        assert_eq!(tap_name("vm-xyz789", &HashSet::new()).unwrap(), "fctap-vm-xyz78");
        assert_eq!(tap_name("vm-a", &HashSet::new()).unwrap(), "fctap-vm-a");
    }

    #[test]
    fn shared_prefixes_get_distinct_deterministic_names() {
        let mut taken = HashSet::new();
        let mut names = Vec::new();
        for i in 0..50 {
            let id = format!("vm-abc12{i:03}");
            let name = tap_name(&id, &taken).unwrap();
            assert!(name.len() <= IFNAME_MAX && is_hatch_tap(&name), "{name}");
            assert!(taken.insert(name.clone()), "{name} duplicated");
            names.push(name);
        }
        assert_eq!(names[0], "fctap-vm-abc12");
        assert_eq!(names[1], "fctap-vm-abc1-1");
        // Same inputs, same answer.
        let again = tap_name("vm-abc12999", &taken).unwrap();
        assert_eq!(again, tap_name("vm-abc12999", &taken).unwrap());
    }

    #[test]
    fn ifname_rules() {
        for good in ["fcbridge", "br0", "hatch-br.1", "a23456789012345"] {
            assert!(check_ifname(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a234567890123456",
            "-br",
            "br 0",
            "br/0",
            "br:0",
            ".",
            "..",
            "br\n",
            "brü",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vm_id_rules() {
        assert!(check_vm_id("vm-abc123").is_ok());
        for bad in ["", "vm abc", "vm,abc", "vm\nabc", "-vm", "vm-", &"a".repeat(64)] {
            assert!(check_vm_id(bad).is_err(), "{bad:?}");
        }
    }
}
