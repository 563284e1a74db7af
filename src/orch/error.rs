use crate::cloudinit::SeedError;
use crate::image::ImageError;
use crate::model::VmState;
use crate::net::NetError;
use crate::store::StoreError;
use crate::vmm::VmmError;

/// Orchestration failures, mapped to HTTP statuses by the API layer.
#[derive(Debug, thiserror::Error)]
pub enum OrchError {
    /// 404
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// 400: a request field is invalid.
    #[error("{field}: {message}")]
    InvalidField { field: &'static str, message: String },
    /// 409 `conflict`: a value (IP, MAC, name, subdomain) is taken.
    #[error("{message}")]
    Conflict {
        field: Option<&'static str>,
        message: String,
    },
    /// 409 `invalid_state`: the VM's state does not allow this now.
    #[error("{message}")]
    InvalidState { state: VmState, message: String },
    /// 503 `unavailable`: the daemon is shutting down, or a service it
    /// needs (the snapshot bucket) does not answer.
    #[error("{message}")]
    Unavailable { message: String },
    /// 413
    #[error("{field}: {message}")]
    TooLarge { field: &'static str, message: String },
    /// 507 `insufficient_capacity`: the host cannot hold the VM (memory
    /// past HATCH_MEM_OVERCOMMIT, or disk); `field` is what asked for it.
    #[error("{message}")]
    Insufficient { field: &'static str, message: String },
    /// 503: a host resource is exhausted (ports, addresses).
    #[error("{message}")]
    Exhausted { message: String },
    /// 504: waited too long (e.g. `wait=ready`).
    #[error("{message}")]
    Timeout { message: String },
    /// 422: a stored snapshot failed its integrity check.
    #[error("{message}")]
    Corrupt { message: String },
    /// 409 `agent_unavailable`: the work needs the VM's guest agent, and
    /// it has none (an image without hatch-agent) or it does not answer.
    #[error("{message}")]
    AgentUnavailable { message: String },
    /// 403 `quota_exceeded`: the owner's quota does not allow this create.
    #[error("{0}")]
    QuotaExceeded(crate::model::QuotaExceeded),
    /// 500: a host operation failed.
    #[error("{0}")]
    Internal(String),
}

impl OrchError {
    /// `action` is refused while the VM is in `state`.
    pub fn invalid_state(vm_id: &str, state: VmState, action: &str) -> Self {
        OrchError::InvalidState {
            state,
            message: format!("cannot {action} VM {vm_id} while it is {}", state.as_str()),
        }
    }

    /// The same error, its message led by `context` (e.g. that a VM
    /// exists although the request failed).
    pub fn with_context(self, context: &str) -> Self {
        let lead = |message: String| format!("{context}{message}");
        match self {
            OrchError::Conflict { field, message } => OrchError::Conflict {
                field,
                message: lead(message),
            },
            OrchError::InvalidState { state, message } => OrchError::InvalidState {
                state,
                message: lead(message),
            },
            OrchError::Unavailable { message } => OrchError::Unavailable { message: lead(message) },
            OrchError::Insufficient { field, message } => OrchError::Insufficient {
                field,
                message: lead(message),
            },
            OrchError::Exhausted { message } => OrchError::Exhausted { message: lead(message) },
            OrchError::Timeout { message } => OrchError::Timeout { message: lead(message) },
            OrchError::Corrupt { message } => OrchError::Corrupt { message: lead(message) },
            OrchError::AgentUnavailable { message } => OrchError::AgentUnavailable { message: lead(message) },
            OrchError::Internal(message) => OrchError::Internal(lead(message)),
            other => other,
        }
    }

    pub fn vm_not_found(id: &str) -> Self {
        OrchError::NotFound {
            kind: "VM",
            id: id.to_string(),
        }
    }
}

impl From<NetError> for OrchError {
    fn from(error: NetError) -> Self {
        match error {
            NetError::Invalid { field, message } => OrchError::InvalidField { field, message },
            NetError::Conflict { field, message } => OrchError::Conflict {
                field: Some(field),
                message,
            },
            NetError::Exhausted { .. } => OrchError::Exhausted {
                message: error.to_string(),
            },
            other => OrchError::Internal(format!("networking: {other}")),
        }
    }
}

impl From<StoreError> for OrchError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict { field } => OrchError::Conflict {
                field: Some(field),
                message: format!("{field} is already in use"),
            },
            StoreError::Quota(exceeded) => OrchError::QuotaExceeded(exceeded),
            other => OrchError::Internal(format!("store: {other}")),
        }
    }
}

impl From<VmmError> for OrchError {
    fn from(error: VmmError) -> Self {
        OrchError::Internal(format!("hypervisor: {error}"))
    }
}

impl From<SeedError> for OrchError {
    fn from(error: SeedError) -> Self {
        match error {
            SeedError::Invalid { field, message } => OrchError::InvalidField { field, message },
            SeedError::TooLarge { .. } => OrchError::TooLarge {
                field: "user_data",
                message: error.to_string(),
            },
            other => OrchError::Internal(format!("cloud-init seed: {other}")),
        }
    }
}

impl From<ImageError> for OrchError {
    fn from(error: ImageError) -> Self {
        OrchError::Internal(format!("image: {error}"))
    }
}
