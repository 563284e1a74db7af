//! Assembling the NoCloud seed: the three documents and the volume.

use std::path::Path;

use super::fat::build_volume;
use super::user_network::{user_network_config, UserNetworkError};
use super::yaml_emit::{to_document, YamlNode};
use super::{SeedError, SeedInput, MAX_USER_DATA_BYTES};
use crate::sys::atomic_file::AtomicFile;

/// The volume label cloud-init's NoCloud datasource looks for.
pub const SEED_LABEL: &str = "CIDATA";
/// The interface name the generated network-config gives the NIC.
pub const GUEST_NIC_NAME: &str = "eth0";
/// user-data when the caller gave none: an empty cloud-config.
pub const DEFAULT_USER_DATA: &[u8] = b"#cloud-config\n";

/// Checks user_data before it is stored: only its size is limited, since
/// cloud-init accepts many formats (cloud-config, scripts, MIME multipart,
/// gzip) and Hatch passes it through byte for byte. A `#cloud-config` whose
/// `network:` block cannot serve as network-config is refused too, because
/// building the seed would fail later.
pub fn validate_user_data(user_data: &[u8]) -> Result<(), SeedError> {
    if user_data.len() > MAX_USER_DATA_BYTES {
        return Err(SeedError::TooLarge { size: user_data.len() });
    }
    user_network_config(user_data).map_err(user_network_invalid)?;
    Ok(())
}

fn user_network_invalid(err: UserNetworkError) -> SeedError {
    SeedError::Invalid {
        field: "user_data",
        message: err.to_string(),
    }
}

/// Builds the NoCloud seed: a FAT volume labelled CIDATA, made in memory,
/// holding `meta-data`, `user-data` and, when the VM has a NIC,
/// `network-config`.
///
/// `network-config` is DHCP on the NIC matched by `nic_mac` (named eth0),
/// unless the user-data is a `#cloud-config` with its own top-level
/// `network:` block: cloud-init ignores network settings in user-data, so
/// that block is what goes into `network-config` instead.
pub fn build_seed(input: &SeedInput) -> Result<Vec<u8>, SeedError> {
    let user_data = input.user_data.as_deref().unwrap_or(DEFAULT_USER_DATA);
    validate_user_data(user_data)?;
    let meta_data = meta_data(input)?;
    let network_config = match &input.nic_mac {
        None => None,
        Some(mac) => Some(match user_network_config(user_data).map_err(user_network_invalid)? {
            Some(users_own) => users_own,
            None => dhcp_network_config(mac)?,
        }),
    };

    let mut files: Vec<(&str, &[u8])> = vec![("meta-data", meta_data.as_bytes()), ("user-data", user_data)];
    if let Some(config) = &network_config {
        files.push(("network-config", config.as_bytes()));
    }
    build_volume(SEED_LABEL, volume_serial(&input.instance_id), &files).map_err(|e| SeedError::Build(e.to_string()))
}

/// Builds the seed and writes it to `path` atomically: a temporary file in
/// the same directory, synced, then renamed over `path`, so a reader never
/// sees a half-written seed.
pub async fn write_seed(input: &SeedInput, path: &Path) -> Result<(), SeedError> {
    let input = input.clone();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let image = build_seed(&input)?;
        write_atomically(&path, &image)
    })
    .await
    .map_err(|e| SeedError::Build(format!("seed writer task failed: {e}")))?
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), SeedError> {
    use std::io::Write as _;
    let io_err = |e: std::io::Error| SeedError::Build(format!("writing {}: {e}", path.display()));
    let mut file = AtomicFile::create(path).map_err(io_err)?;
    file.file().write_all(contents).map_err(io_err)?;
    file.commit().map_err(io_err)
}

/// A FAT serial derived from the instance id: stable for a VM, different
/// between VMs (the crate's default is the same constant for every volume).
fn volume_serial(instance_id: &str) -> u32 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(instance_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn meta_data(input: &SeedInput) -> Result<String, SeedError> {
    let id = input.instance_id.as_str();
    if id.is_empty() || id.chars().any(char::is_control) {
        return Err(SeedError::Invalid {
            field: "instance_id",
            message: "must be non-empty and free of control characters".to_owned(),
        });
    }
    let mut entries = vec![
        ("instance-id", YamlNode::str(id)),
        ("local-hostname", YamlNode::str(id)),
    ];
    if !input.public_keys.is_empty() {
        let keys = super::validate_ssh_keys(&input.public_keys)?;
        entries.push((
            "public-keys",
            YamlNode::Seq(keys.into_iter().map(YamlNode::Str).collect()),
        ));
    }
    to_document(&YamlNode::map(entries)).map_err(|e| SeedError::Build(e.to_string()))
}

fn dhcp_network_config(mac: &str) -> Result<String, SeedError> {
    let mac = normalise_mac(mac)?;
    let nic = YamlNode::map([
        ("match", YamlNode::map([("macaddress", YamlNode::str(mac))])),
        ("set-name", YamlNode::str(GUEST_NIC_NAME)),
        ("dhcp4", YamlNode::Bool(true)),
    ]);
    let config = YamlNode::map([
        ("version", YamlNode::Number("2".to_owned())),
        ("ethernets", YamlNode::map([(GUEST_NIC_NAME, nic)])),
    ]);
    to_document(&config).map_err(|e| SeedError::Build(e.to_string()))
}

/// `aa:bb:cc:dd:ee:ff`, lower-case (as the guest kernel reports it).
fn normalise_mac(mac: &str) -> Result<String, SeedError> {
    let octets: Vec<&str> = mac.split(':').collect();
    let valid = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    if !valid {
        return Err(SeedError::Invalid {
            field: "nic_mac",
            message: format!(
                "{:?} is not a MAC address like 52:54:00:12:34:56",
                mac.chars().take(40).collect::<String>()
            ),
        });
    }
    Ok(mac.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_checked_and_lower_cased() {
        assert_eq!(normalise_mac("52:54:00:AB:cd:0F").unwrap(), "52:54:00:ab:cd:0f");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52-54-00-ab-cd-0f",
            "52:54:00:ab:cd:0g",
            "52:54:00:ab:cd:0f\n",
        ] {
            assert!(normalise_mac(bad).is_err(), "{bad:?}");
        }
    }
}
