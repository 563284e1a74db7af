//! Field checks shared by the resources. Each failure names the field.

use base64::Engine;

use super::error::{ApiError, ErrorKind};
use crate::cloudinit::MAX_USER_DATA_BYTES;
use crate::config::{MAX_VCPU_COUNT, MIN_MEM_MIB};

pub fn vcpu_count(value: u32) -> Result<u32, ApiError> {
    if !(1..=MAX_VCPU_COUNT).contains(&value) {
        return Err(ApiError::invalid(
            "vcpu_count",
            format!("vcpu_count must be between 1 and {MAX_VCPU_COUNT}, got {value}"),
        ));
    }
    Ok(value)
}

pub fn mem_mib(value: u32) -> Result<u32, ApiError> {
    let max = host_memory_mib();
    if !(MIN_MEM_MIB..=max).contains(&value) {
        return Err(ApiError::invalid(
            "mem_mib",
            format!("mem_mib must be between {MIN_MEM_MIB} and {max} (the host's memory), got {value}"),
        ));
    }
    Ok(value)
}

/// The host's total memory in MiB (a generous fixed bound if /proc is unreadable).
pub fn host_memory_mib() -> u32 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            u32::try_from(kib / 1024).ok()
        })
        .unwrap_or(65_536)
}

pub fn user_data(value: &Option<String>) -> Result<(), ApiError> {
    match value {
        Some(data) if data.len() > MAX_USER_DATA_BYTES => Err(ApiError::field(
            ErrorKind::TooLarge,
            "user_data",
            format!("user_data is {} bytes; the limit is {MAX_USER_DATA_BYTES}", data.len()),
        )),
        _ => Ok(()),
    }
}

/// A display name: 1-64 letters, digits, `.`, `_` or `-`.
pub fn name(value: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            format!("name must be 1-64 letters, digits, '.', '_' or '-', got {value:?}"),
        ))
    }
}

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// OpenSSH public keys, one line each: `type base64 [comment]`, where the
/// base64 blob really encodes a key of that type.
pub fn ssh_authorized_keys(keys: &[String]) -> Result<(), ApiError> {
    if keys.len() > 100 {
        return Err(ApiError::invalid("ssh_authorized_keys", "at most 100 keys"));
    }
    for (i, key) in keys.iter().enumerate() {
        if let Err(why) = check_public_key(key) {
            return Err(ApiError::invalid(
                format!("ssh_authorized_keys[{i}]"),
                format!("ssh_authorized_keys[{i}]: {why}"),
            ));
        }
    }
    Ok(())
}

fn check_public_key(key: &str) -> Result<(), String> {
    if key.len() > 16 * 1024 || key.chars().any(|c| c.is_control()) {
        return Err("a key is a single line of printable text".into());
    }
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err("expected \"<type> <base64> [comment]\"".into());
    };
    if !KEY_TYPES.contains(&kind) {
        return Err(format!("unsupported key type {kind:?}"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| "the key data is not valid base64".to_string())?;
    // The blob starts with the key type as an SSH string (u32 length + bytes).
    let declared = decoded
        .get(..4)
        .map(|len| u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize)
        .and_then(|len| decoded.get(4..4 + len));
    if declared != Some(kind.as_bytes()) {
        return Err(format!("the key data does not hold a {kind} key"));
    }
    Ok(())
}
