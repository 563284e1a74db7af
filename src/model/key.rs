//! What an API key may do: its role and its quotas.

use serde::{Deserialize, Serialize};

/// An API key's role. Admins manage keys, images and the host and see every
/// object; members manage only the VMs, snapshots, routes and templates
/// they own (and may use any image).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    #[default]
    Member,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Admin, Role::Member];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == s)
    }
}

/// One quota a key can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    Vms,
    Vcpus,
    MemMib,
    Snapshots,
    Routes,
}

impl QuotaKind {
    pub const ALL: [QuotaKind; 5] = [
        QuotaKind::Vms,
        QuotaKind::Vcpus,
        QuotaKind::MemMib,
        QuotaKind::Snapshots,
        QuotaKind::Routes,
    ];

    /// The quota's name in the API, the CLI (`--max-vms`) and the database.
    pub fn name(self) -> &'static str {
        match self {
            QuotaKind::Vms => "max_vms",
            QuotaKind::Vcpus => "max_vcpus",
            QuotaKind::MemMib => "max_mem_mib",
            QuotaKind::Snapshots => "max_snapshots",
            QuotaKind::Routes => "max_routes",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The largest limit accepted: beyond it a quota is a typo, not a limit.
    pub fn max_limit(self) -> u64 {
        match self {
            QuotaKind::Vms | QuotaKind::Snapshots | QuotaKind::Routes => 100_000,
            QuotaKind::Vcpus => 1_000_000,
            // 1 PiB of guest memory.
            QuotaKind::MemMib => 1 << 30,
        }
    }
}

/// Per-key limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub max_vms: Option<u64>,
    pub max_vcpus: Option<u64>,
    pub max_mem_mib: Option<u64>,
    pub max_snapshots: Option<u64>,
    pub max_routes: Option<u64>,
}

impl Quotas {
    pub fn get(&self, kind: QuotaKind) -> Option<u64> {
        match kind {
            QuotaKind::Vms => self.max_vms,
            QuotaKind::Vcpus => self.max_vcpus,
            QuotaKind::MemMib => self.max_mem_mib,
            QuotaKind::Snapshots => self.max_snapshots,
            QuotaKind::Routes => self.max_routes,
        }
    }

    pub fn set(&mut self, kind: QuotaKind, limit: Option<u64>) {
        let slot = match kind {
            QuotaKind::Vms => &mut self.max_vms,
            QuotaKind::Vcpus => &mut self.max_vcpus,
            QuotaKind::MemMib => &mut self.max_mem_mib,
            QuotaKind::Snapshots => &mut self.max_snapshots,
            QuotaKind::Routes => &mut self.max_routes,
        };
        *slot = limit;
    }
}

/// What a key's objects hold now, counted against its quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub vms: u64,
    pub vcpus: u64,
    pub mem_mib: u64,
    pub snapshots: u64,
    pub routes: u64,
}

impl Usage {
    pub fn get(&self, kind: QuotaKind) -> u64 {
        match kind {
            QuotaKind::Vms => self.vms,
            QuotaKind::Vcpus => self.vcpus,
            QuotaKind::MemMib => self.mem_mib,
            QuotaKind::Snapshots => self.snapshots,
            QuotaKind::Routes => self.routes,
        }
    }
}

/// A create refused by a quota: which one, its limit, what is in use and
/// what the create asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub kind: QuotaKind,
    pub limit: u64,
    pub used: u64,
    pub requested: u64,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "quota {} exceeded: limit {}, in use {}, this request needs {}",
            self.kind.name(),
            self.limit,
            self.used,
            self.requested
        )
    }
}

/// Checks that adding `requested` of `kind` to `usage` stays within `quotas`.
pub fn check_quota(quotas: &Quotas, usage: &Usage, kind: QuotaKind, requested: u64) -> Result<(), QuotaExceeded> {
    match quotas.get(kind) {
        Some(limit) if usage.get(kind).saturating_add(requested) > limit => Err(QuotaExceeded {
            kind,
            limit,
            used: usage.get(kind),
            requested,
        }),
        _ => Ok(()),
    }
}
