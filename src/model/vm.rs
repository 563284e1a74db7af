use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{Timestamp, UserData};

/// The lifecycle of a VM. Transitions are decided by `orch::transitions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    Snapshotting,
    Snapshotted,
    Restoring,
    Error,
    Deleting,
}

impl VmState {
    pub const ALL: [VmState; 10] = [
        VmState::Creating,
        VmState::Starting,
        VmState::Running,
        VmState::Stopping,
        VmState::Stopped,
        VmState::Snapshotting,
        VmState::Snapshotted,
        VmState::Restoring,
        VmState::Error,
        VmState::Deleting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Snapshotting => "snapshotting",
            VmState::Snapshotted => "snapshotted",
            VmState::Restoring => "restoring",
            VmState::Error => "error",
            VmState::Deleting => "deleting",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// States in which a VMM process is expected to exist.
    pub fn has_process(self) -> bool {
        matches!(
            self,
            VmState::Starting | VmState::Running | VmState::Stopping | VmState::Snapshotting | VmState::Restoring
        )
    }

    /// States that only last while an operation runs. One found at start-up
    /// (the daemon died mid-operation) is finished or rolled back.
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            VmState::Creating
                | VmState::Starting
                | VmState::Stopping
                | VmState::Snapshotting
                | VmState::Restoring
                | VmState::Deleting
        )
    }
}

/// What Hatch does when a VM's VMM dies without being asked to stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// The VM stays `error`, with the reason.
    #[default]
    Never,
    /// The VM is started again from its disk.
    OnFailure,
}

impl RestartPolicy {
    pub const ALL: [RestartPolicy; 2] = [RestartPolicy::Never, RestartPolicy::OnFailure];

    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|policy| policy.as_str() == s)
    }
}

/// What a networked VM holds on the host. Kept across stop; released on delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkIdentity {
    pub guest_ip: Ipv4Addr,
    pub guest_mac: String,
    pub tap_name: String,
    pub ssh_port: u16,
    /// Where the guest may send traffic beyond the host (its firewall
    /// policy travels with its identity to the host network).
    #[serde(default)]
    pub egress: Egress,
}

/// Most networks one `egress` list may name.
pub const MAX_EGRESS_CIDRS: usize = 64;

/// A guest's egress policy, on top of the host-wide HATCH_EGRESS_DENY_CIDRS.
/// In JSON: `"internet"`, `"none"` or a list of `a.b.c.d/len` networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Egress {
    /// Everywhere except the host-wide deny list.
    #[default]
    Internet,
    /// Nothing beyond DHCP and DNS on the gateway.
    None,
    /// Only these networks (normalised `a.b.c.d/len`, no host bits).
    Allow(Vec<String>),
}

impl Egress {
    /// Parses the JSON form; the error says what is wrong (for a 400
    /// naming `egress`).
    pub fn from_json(value: &serde_json::Value) -> Result<Egress, String> {
        use serde_json::Value;
        match value {
            Value::String(word) => Egress::from_word(word)
                .ok_or_else(|| format!("must be \"internet\", \"none\" or a list of CIDRs, got {word:?}")),
            Value::Array(items) => {
                if items.len() > MAX_EGRESS_CIDRS {
                    return Err(format!("{} networks given; at most {MAX_EGRESS_CIDRS}", items.len()));
                }
                let mut cidrs: Vec<String> = Vec::new();
                for item in items {
                    let Some(text) = item.as_str() else {
                        return Err(format!("{item} is not a CIDR string"));
                    };
                    let cidr = crate::net::cidr::Ipv4Cidr::parse(text)?;
                    if cidr.addr != cidr.network() {
                        return Err(format!(
                            "{text} has host bits set; did you mean {}?",
                            cidr.network_cidr()
                        ));
                    }
                    let text = cidr.to_string();
                    if !cidrs.contains(&text) {
                        cidrs.push(text);
                    }
                }
                Ok(Egress::Allow(cidrs))
            }
            other => Err(format!(
                "must be \"internet\", \"none\" or a list of CIDRs, got {other}"
            )),
        }
    }

    fn from_word(word: &str) -> Option<Egress> {
        match word {
            "internet" => Some(Egress::Internet),
            "none" => Some(Egress::None),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Egress::Internet => "internet".into(),
            Egress::None => "none".into(),
            Egress::Allow(cidrs) => cidrs.clone().into(),
        }
    }

    /// The database form: the word, or the list as JSON.
    pub fn to_column(&self) -> String {
        match self {
            Egress::Allow(_) => self.to_json().to_string(),
            _ => self.to_json().as_str().unwrap_or_default().to_string(),
        }
    }

    pub fn from_column(text: &str) -> Result<Egress, String> {
        if let Some(egress) = Egress::from_word(text) {
            return Ok(egress);
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Egress::from_json(&value)
    }
}

impl Serialize for Egress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Egress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Egress::from_json(&value).map_err(serde::de::Error::custom)
    }
}

/// Memory a VMM may use beyond the guest's RAM (device emulation, QEMU's TCG
/// translation cache, I/O buffers), in MiB.
pub const VMM_MEMORY_OVERHEAD_MIB: u64 = 256;
/// The period of `cpu.max` (the cgroup default): 100 ms.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The guest agent as the daemon sees it now (not stored: it is a fact of
/// the running VM's connection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Whether a conversation with the agent is up.
    pub connected: bool,
    /// The agent's version, while connected.
    pub version: Option<String>,
}

/// The cgroup v2 limits the VM's VMM runs under (computed from its size;
/// applied when the host's cgroup v2 hierarchy allows it, see `hatch doctor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmLimits {
    /// `memory.max`: guest memory plus [`VMM_MEMORY_OVERHEAD_MIB`].
    pub memory_max_bytes: u64,
    /// `cpu.max`: `vcpu_count` whole CPUs per period, as the file holds it.
    pub cpu_max: String,
    /// `pids.max`: QEMU's vCPU, I/O worker and helper threads.
    pub pids_max: u64,
}

impl VmmLimits {
    pub fn for_vm(vcpu_count: u32, mem_mib: u32) -> VmmLimits {
        VmmLimits {
            memory_max_bytes: (u64::from(mem_mib) + VMM_MEMORY_OVERHEAD_MIB) << 20,
            cpu_max: format!("{} {CPU_PERIOD_US}", u64::from(vcpu_count) * CPU_PERIOD_US),
            // QEMU's block layer alone may run 64 worker threads.
            pids_max: 128 + 2 * u64::from(vcpu_count),
        }
    }
}

/// A VM as users see it. Network fields are absent when networking is off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    pub id: String,
    pub state: VmState,
    pub image_id: String,
    pub vcpu_count: u32,
    pub mem_mib: u32,
    /// The cgroup limits of its VMM (computed from `vcpu_count` and `mem_mib`).
    pub limits: VmmLimits,
    pub enable_network: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkIdentity>,
    /// `user_data` when UTF-8 text, else `user_data_base64` (see [`UserData`]).
    #[serde(flatten, with = "super::user_data_fields")]
    pub user_data: Option<UserData>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// The hypervisor that runs (or last ran) this VM: `qemu` or `firecracker`.
    pub hypervisor: String,
    /// PID of the VMM process while one exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Why the VM is in its state (exit code, crash reason, error message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// When the guest was first seen ready since its VMM started: its agent
    /// said hello, or (networked guests) it accepted a TCP connection on port 22.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Last traffic through the proxy, as the idle monitor last saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<Timestamp>,
    /// The idle monitor's last decision and why (e.g. kept: SSH session open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_status: Option<String>,
    /// What happens when the VMM dies unasked: `never` or `on-failure`.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// The snapshot a `snapshotted` VM was suspended with: what restore
    /// (and wake) loads unless another is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// `ttl_seconds`, `idle_timeout_seconds` and `on_idle`, as given.
    #[serde(flatten)]
    pub lifetime: super::Lifetime,
    /// `created_at` + `ttl_seconds`: when the VM is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// The API key that owns this object (null: admin-owned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_key_id: Option<String>,
    /// Set while the VM waits in the warm pool of this template (admin-owned,
    /// never listed); cleared when a create takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_template_id: Option<String>,
    /// The guest agent's connection (filled from the live link, never stored).
    #[serde(default)]
    pub agent: AgentStatus,
}

#[cfg(test)]
mod egress_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn egress_parses_normalises_and_round_trips() {
        assert_eq!(Egress::from_json(&json!("internet")), Ok(Egress::Internet));
        assert_eq!(Egress::from_json(&json!("none")), Ok(Egress::None));
        let list = Egress::from_json(&json!(["10.0.0.0/8", "10.0.0.0/8", "203.0.113.7/32"])).unwrap();
        assert_eq!(list, Egress::Allow(vec!["10.0.0.0/8".into(), "203.0.113.7/32".into()]));
        for egress in [Egress::Internet, Egress::None, list] {
            assert_eq!(Egress::from_column(&egress.to_column()), Ok(egress.clone()));
            let text = serde_json::to_string(&egress).unwrap();
            assert_eq!(serde_json::from_str::<Egress>(&text).unwrap(), egress);
        }
        let many: Vec<String> = (0..=MAX_EGRESS_CIDRS).map(|i| format!("10.{i}.0.0/16")).collect();
        for bad in [
            json!("all"),
            json!(["10.0.0.1/8"]),
            json!(["x"]),
            json!([null]),
            json!(many),
            json!({}),
        ] {
            assert!(Egress::from_json(&bad).is_err(), "{bad}");
        }
    }
}
