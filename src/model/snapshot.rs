use serde::{Deserialize, Serialize};

use super::Timestamp;
use crate::snapshot::ArtefactInfo;

/// A saved VM: device state, memory and disk, each stored compressed with
/// its size and SHA-256. Only complete snapshots are ever listed.
///
/// A snapshot is complete (restorable) as soon as the hypervisor's own save
/// is on the local disk, its "hot copy"; it becomes `durable` once its
/// artefacts are compressed, checksummed and in their final store, which
/// happens in the background after the VM has stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub vm_id: String,
    pub created_at: Timestamp,
    /// The hypervisor that saved it; only the same one can load it.
    pub hypervisor: String,
    pub artefacts: Vec<ArtefactInfo>,
    /// Sum of the compressed artefacts' sizes.
    pub total_bytes: u64,
    /// Whether the artefacts are stored and checksummed (false: only the
    /// local hot copy exists so far).
    pub durable: bool,
    /// XXH3-128 of each hot-copy file by name, once computed.
    #[serde(skip)]
    pub hot_checksums: std::collections::BTreeMap<String, String>,
    /// The API key that owns this snapshot (the VM's owner) (null: admin-owned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_key_id: Option<String>,
    #[serde(skip)]
    pub complete: bool,
}

impl Snapshot {
    pub fn artefact(&self, name: &str) -> Option<&ArtefactInfo> {
        self.artefacts.iter().find(|a| a.name == name)
    }
}
