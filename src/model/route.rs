use serde::{Deserialize, Serialize};

use super::Timestamp;

/// `<subdomain>.<HATCH_PROXY_BASE_DOMAIN>` → `http://<guest_ip>:<target_port>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub id: String,
    pub vm_id: String,
    pub subdomain: String,
    pub target_port: u16,
    /// Restore a snapshotted VM when a request arrives for it.
    pub auto_wake: bool,
    pub created_at: Timestamp,
    /// The API key that owns this route (the VM's owner) (null: admin-owned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_key_id: Option<String>,
}
