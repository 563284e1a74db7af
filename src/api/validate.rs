//! Field checks shared by the resources. Each failure names the field.

use super::error::{ApiError, ErrorKind};
use crate::cloudinit::{validate_ssh_public_key, SeedError, MAX_SSH_KEYS, MAX_USER_DATA_BYTES};
use crate::config::{MAX_VCPU_COUNT, MIN_MEM_MIB};
use crate::model::{UserData, MAX_WARM_POOL, USER_DATA_BASE64_FIELD, USER_DATA_FIELD};

/// A template's warm pool: 0 (none) up to [`MAX_WARM_POOL`] VMs.
pub fn warm_pool_size(value: u32) -> Result<u32, ApiError> {
    if value > MAX_WARM_POOL {
        return Err(ApiError::invalid(
            "warm_pool_size",
            format!("warm_pool_size must be between 0 and {MAX_WARM_POOL}, got {value}"),
        ));
    }
    Ok(value)
}

pub fn vcpu_count(value: u32) -> Result<u32, ApiError> {
    // vCPUs may be overcommitted (they are host threads); the bound is the
    // hypervisors' own.
    let max = MAX_VCPU_COUNT;
    if !(1..=max).contains(&value) {
        return Err(ApiError::invalid(
            "vcpu_count",
            format!("vcpu_count must be between 1 and {max}, got {value}"),
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
    crate::vmm::host::memory_mib()
        .and_then(|mib| u32::try_from(mib).ok())
        .unwrap_or(65_536)
}

/// The request's user data as bytes, from `user_data` (text) or
/// `user_data_base64` (any bytes): never both, valid base64, and at most
/// 64 KiB once decoded. Each failure names the field that was given.
pub fn user_data(text: &Option<String>, base64: &Option<String>) -> Result<Option<UserData>, ApiError> {
    let data = UserData::from_fields(text.as_deref(), base64.as_deref())
        .map_err(|e| ApiError::invalid(e.field(), e.to_string()))?;
    let field = if base64.is_some() {
        USER_DATA_BASE64_FIELD
    } else {
        USER_DATA_FIELD
    };
    match data {
        Some(data) if data.len() > MAX_USER_DATA_BYTES => Err(ApiError::field(
            ErrorKind::TooLarge,
            field,
            format!("{field} is {} bytes; the limit is {MAX_USER_DATA_BYTES}", data.len()),
        )),
        data => Ok(data),
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

/// OpenSSH public keys (see `cloudinit::validate_ssh_public_key`); a bad
/// key is named with its index, e.g. `ssh_authorized_keys[2]`.
pub fn ssh_authorized_keys(keys: &[String]) -> Result<(), ApiError> {
    if keys.len() > MAX_SSH_KEYS {
        return Err(ApiError::invalid(
            "ssh_authorized_keys",
            format!("at most {MAX_SSH_KEYS} keys"),
        ));
    }
    for (i, key) in keys.iter().enumerate() {
        if let Err(why) = validate_ssh_public_key(key) {
            let why = match why {
                SeedError::Invalid { message, .. } => message,
                other => other.to_string(),
            };
            return Err(ApiError::invalid(
                format!("ssh_authorized_keys[{i}]"),
                format!("ssh_authorized_keys[{i}]: {why}"),
            ));
        }
    }
    Ok(())
}

/// `egress`: `"internet"`, `"none"` or a list of at most 64 CIDRs.
pub fn egress(value: &serde_json::Value) -> Result<crate::model::Egress, ApiError> {
    crate::model::Egress::from_json(value).map_err(|message| ApiError::invalid("egress", format!("egress {message}")))
}
