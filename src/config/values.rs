//! Parsers for single configuration values. Each returns a message that the
//! caller prefixes with the variable's name.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Where the API listens: TCP `host:port` or a Unix socket (`unix:/path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

pub fn listen_addr(text: &str) -> Result<ListenAddr, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(format!(
                "{text:?}: a unix socket path must be absolute (unix:/run/hatch.sock)"
            ));
        }
        return Ok(ListenAddr::Unix(path));
    }
    socket_addr(text).map(ListenAddr::Tcp)
}

/// `host:port` where host is an IP address or a name that resolves locally (e.g. localhost).
pub fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let hint = "expected host:port such as 127.0.0.1:8080";
    if !text.contains(':') {
        return Err(format!("{text:?}: {hint}"));
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("{text:?}: {hint}"))
}

/// `90s`, `5m`, `1h`, `250ms`; a bare number means seconds. Zero is refused.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?}: expected a duration such as 90s, 5m or 1h");
    let value: u64 = number.parse().map_err(|_| bad())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    let millis = value.checked_mul(millis_per_unit).ok_or_else(bad)?;
    if millis == 0 {
        return Err(format!("{text:?}: must be longer than zero"));
    }
    Ok(Duration::from_millis(millis))
}

/// HATCH_PROXY_HSTS: `off`/`false` (no header), `true`/`on` (one year), or a
/// max-age as a duration (`30d`, `3600`); `0` sends max-age=0, which tells
/// browsers to forget an earlier policy.
pub fn hsts(text: &str) -> Result<Option<Duration>, String> {
    const ONE_YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "off" | "false" | "no" => Ok(None),
        "on" | "true" | "yes" => Ok(Some(ONE_YEAR)),
        "0" => Ok(Some(Duration::ZERO)),
        // HSTS max-ages are long: days too (only here).
        other => match other.strip_suffix('d').map(|days| number(days, 1u64, 36_500)) {
            Some(Ok(days)) => Ok(Some(Duration::from_secs(days * 86_400))),
            _ => match duration(other) {
                Ok(max_age) if max_age.subsec_millis() == 0 => Ok(Some(max_age)),
                _ => Err(format!(
                    "{text:?}: expected off, true, or a max-age such as 365d or 31536000 (whole seconds)"
                )),
            },
        },
    }
}

/// `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
pub fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{text:?}: expected true or false")),
    }
}

pub fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(text: &str, min: T, max: T) -> Result<T, String> {
    let value: T = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if value < min || value > max {
        return Err(format!("{value} is outside {min}..={max}"));
    }
    Ok(value)
}

/// A DNS name made of valid labels (for HATCH_PROXY_BASE_DOMAIN).
pub fn dns_name(text: &str) -> Result<String, String> {
    let valid_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if text.len() > 253 || !text.split('.').all(valid_label) {
        return Err(format!("{text:?} is not a valid DNS name"));
    }
    Ok(text.to_ascii_lowercase())
}

pub fn absolute_path(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if text.is_empty() || !path.is_absolute() {
        return Err(format!("{text:?}: must be an absolute path"));
    }
    Ok(path)
}

/// A size in bytes: a number, or one with a binary suffix `K`, `M` or `G`
/// (`512K`, `8M`; `KiB`/`MiB`/`GiB` too), between `min` and `max`.
pub fn byte_size(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?}: expected a size such as 8M, 512K or a number of bytes");
    let value: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim() {
        "" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = value.checked_mul(factor).ok_or_else(bad)?;
    if bytes < min || bytes > max {
        return Err(format!("{text:?}: must be between {min} and {max} bytes"));
    }
    Ok(bytes)
}

/// A finite decimal such as `1.0` or `1.5`, between `min` and `max`.
pub fn ratio(text: &str, min: f64, max: f64) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected a number such as 1.0 or 1.5"))?;
    if !value.is_finite() || value < min || value > max {
        return Err(format!("{text:?}: must be between {min} and {max}"));
    }
    Ok(value)
}

/// Empty values mean "unset" (so `HATCH_X=` can clear a setting).
pub fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Longest HATCH_S3_PREFIX: leaves room in the key for `<vm>/<snapshot>/<artefact>`.
const MAX_KEY_PREFIX_LEN: usize = 128;

/// An object key prefix (HATCH_S3_PREFIX): one or more segments as in a
/// snapshot object key (`team-a/host-1`); one trailing `/` is dropped.
pub fn key_prefix(text: &str) -> Result<String, String> {
    let prefix = text.strip_suffix('/').unwrap_or(text);
    if prefix.len() > MAX_KEY_PREFIX_LEN {
        return Err(format!("{text:?}: at most {MAX_KEY_PREFIX_LEN} characters"));
    }
    match crate::snapshot::validate_key(prefix) {
        Ok(()) => Ok(prefix.to_string()),
        Err(crate::snapshot::SnapshotError::InvalidKey { reason, .. }) => {
            Err(format!("{text:?} is not a safe key prefix: {reason}"))
        }
        Err(other) => Err(format!("{text:?} is not a safe key prefix: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_is_off_true_or_a_max_age() {
        assert_eq!(hsts("off").unwrap(), None);
        assert_eq!(hsts("false").unwrap(), None);
        assert_eq!(hsts("").unwrap(), None);
        assert_eq!(hsts("true").unwrap(), Some(Duration::from_secs(31_536_000)));
        assert_eq!(hsts("30d").unwrap(), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(hsts("3600").unwrap(), Some(Duration::from_secs(3600)));
        assert_eq!(hsts("0").unwrap(), Some(Duration::ZERO));
        assert_eq!(hsts("12h").unwrap(), Some(Duration::from_secs(12 * 3600)));
        for bad in ["maybe", "-1", "10ms", "1y", "d", "0d", "99999d"] {
            assert!(hsts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn booleans_are_true_or_false() {
        for yes in ["true", "TRUE", " yes", "on", "1"] {
            assert_eq!(boolean(yes), Ok(true), "{yes}");
        }
        for no in ["false", "no", "off", "0"] {
            assert_eq!(boolean(no), Ok(false), "{no}");
        }
        for bad in ["", "maybe", "2"] {
            assert!(boolean(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_prefixes_are_safe_object_key_segments() {
        assert_eq!(key_prefix("host-a").unwrap(), "host-a");
        assert_eq!(key_prefix("team_1/host.a/").unwrap(), "team_1/host.a");
        for bad in [
            "/", "/abs", "a//b", "a//", "..", "a/../b", ".hidden", "sp ace", "a\\b", "a?b", "%2e",
        ] {
            let error = key_prefix(bad).expect_err(bad);
            assert!(error.contains("safe key prefix"), "{bad:?}: {error}");
        }
        assert!(key_prefix(&"a".repeat(129)).is_err());
        assert!(key_prefix(&"a".repeat(128)).is_ok());
    }
}

#[cfg(test)]
mod byte_size_tests {
    use super::byte_size;

    #[test]
    fn sizes_take_binary_suffixes_and_bounds() {
        assert_eq!(byte_size("8M", 1, u64::MAX), Ok(8 << 20));
        assert_eq!(byte_size("512K", 1, u64::MAX), Ok(512 << 10));
        assert_eq!(byte_size("1GiB", 1, u64::MAX), Ok(1 << 30));
        assert_eq!(byte_size("4096", 1, u64::MAX), Ok(4096));
        assert!(byte_size("8X", 1, u64::MAX).is_err());
        assert!(byte_size("", 1, u64::MAX).is_err());
        assert!(byte_size("80", 64, 100).is_ok());
        assert!(byte_size("10", 64, 100).is_err());
        assert!(byte_size("1K", 64, 100).is_err());
        assert!(byte_size("99999999999999999999G", 1, u64::MAX).is_err());
    }
}
