use serde::{Deserialize, Serialize};

use super::{Timestamp, UserData};

/// Saved defaults for creating VMs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub vcpu_count: u32,
    pub mem_mib: u32,
    /// `user_data` (null when absent or binary), plus `user_data_base64`
    /// when binary (see [`UserData`]).
    #[serde(flatten, with = "super::user_data_fields_with_null")]
    pub user_data: Option<UserData>,
    pub ssh_authorized_keys: Vec<String>,
    /// Egress policy for VMs made from it (`internet` when not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<super::Egress>,
    /// `ttl_seconds`, `idle_timeout_seconds` and `on_idle` for VMs made
    /// from it (a VM's own settings win field by field).
    #[serde(flatten)]
    pub lifetime: super::Lifetime,
    pub created_at: Timestamp,
    /// The API key that owns this object (null: admin-owned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_key_id: Option<String>,
    /// How many VMs of it are kept booted and snapshotted, for creates
    /// that take one (0: no warm pool).
    #[serde(default)]
    pub warm_pool_size: u32,
}

/// Most VMs one template's warm pool may hold.
pub const MAX_WARM_POOL: u32 = 8;
