//! Orchestration: one VM's state machine and lock, creation as a ledger with
//! rollback, supervision of VMM processes, and reconcilers that derive host
//! state from the database.
//!
//! (Interface only for now; the implementation lands with the VM lifecycle.)

use std::sync::Arc;
use std::time::Duration;

use crate::model::Vm;

/// What `POST /vms` asks for, after the API layer parsed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateVm {
    pub image_id: Option<String>,
    pub template_id: Option<String>,
    pub vcpu_count: Option<u32>,
    pub mem_mib: Option<u32>,
    pub enable_network: Option<bool>,
    pub guest_ip: Option<String>,
    pub guest_mac: Option<String>,
    pub user_data: Option<String>,
    pub ssh_authorized_keys: Option<Vec<String>>,
}

/// Orchestration failures, mapped to HTTP statuses by the API layer.
#[derive(Debug, thiserror::Error)]
pub enum OrchError {
    /// 404
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// 400 (422-like): a request field is invalid.
    #[error("{field}: {message}")]
    InvalidField { field: &'static str, message: String },
    /// 409: the value is taken or the transition is not allowed now.
    #[error("{message}")]
    Conflict { field: Option<&'static str>, message: String },
    /// 413
    #[error("{field}: {message}")]
    TooLarge { field: &'static str, message: String },
    /// 503: a host resource is exhausted (ports, addresses).
    #[error("{message}")]
    Exhausted { message: String },
    /// 504: waited too long (e.g. `wait=ready`).
    #[error("{message}")]
    Timeout { message: String },
    /// 500: a host operation failed.
    #[error("{0}")]
    Internal(String),
}

/// The VM manager the API talks to.
pub struct Orchestrator {
    _private: (),
}

impl Orchestrator {
    pub async fn create_vm(self: &Arc<Self>, _req: CreateVm) -> Result<Vm, OrchError> {
        Err(OrchError::Internal("not implemented yet".into()))
    }
    pub async fn get_vm(&self, _id: &str) -> Result<Vm, OrchError> {
        Err(OrchError::Internal("not implemented yet".into()))
    }
    pub async fn list_vms(&self) -> Result<Vec<Vm>, OrchError> {
        Err(OrchError::Internal("not implemented yet".into()))
    }
    pub async fn stop_vm(self: &Arc<Self>, _id: &str) -> Result<Vm, OrchError> {
        Err(OrchError::Internal("not implemented yet".into()))
    }
    pub async fn start_vm(self: &Arc<Self>, _id: &str) -> Result<Vm, OrchError> {
        Err(OrchError::Internal("not implemented yet".into()))
    }
    pub async fn delete_vm(self: &Arc<Self>, _id: &str) -> Result<(), OrchError> {
        Err(OrchError::Internal("not implemented yet".into()))
    }
    /// Waits until the VM's `ready_at` is set (guest accepted TCP on port 22).
    pub async fn wait_ready(&self, _id: &str, _timeout: Duration) -> Result<Vm, OrchError> {
        Err(OrchError::Internal("not implemented yet".into()))
    }
    /// The tail of the VM's serial console.
    pub async fn logs(&self, _id: &str, _max_bytes: usize) -> Result<String, OrchError> {
        Err(OrchError::Internal("not implemented yet".into()))
    }
}
