//! cloud-init NoCloud seed volumes: a small FAT filesystem labelled `CIDATA`
//! holding `meta-data`, `user-data` and (optionally) `network-config`, built
//! in memory without mounting anything.

mod fat;
mod seed;
mod ssh_keys;
mod user_network;
mod yaml_emit;

pub use seed::{build_seed, validate_user_data, write_seed, DEFAULT_USER_DATA, GUEST_NIC_NAME, SEED_LABEL};
pub use ssh_keys::{validate_ssh_keys, validate_ssh_public_key, MAX_SSH_KEYS};
pub use user_network::user_data_has_network_config;

/// Largest accepted `user_data` (cloud-init's own practical limit).
pub const MAX_USER_DATA_BYTES: usize = 64 * 1024;

/// What goes into one VM's seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedInput {
    /// instance-id and local-hostname (the VM id).
    pub instance_id: String,
    /// The caller's user_data, byte for byte; `None` means `#cloud-config\n`.
    pub user_data: Option<Vec<u8>>,
    /// OpenSSH public keys for meta-data `public-keys` (already validated).
    pub public_keys: Vec<String>,
    /// The NIC's MAC when networking is on; `network-config` matches it.
    pub nic_mac: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("user_data is {size} bytes; the limit is {MAX_USER_DATA_BYTES}")]
    TooLarge { size: usize },
    #[error("building the seed volume failed: {0}")]
    Build(String),
}
