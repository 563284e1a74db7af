use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Saved defaults for creating VMs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub vcpu_count: u32,
    pub mem_mib: u32,
    pub user_data: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    pub created_at: Timestamp,
}
