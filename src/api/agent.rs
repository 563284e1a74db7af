//! The guest agent's side of the API: which VM's agent a request reaches,
//! and how agent failures read to a client.
//!
//! A request for a `snapshotted` VM wakes it first (like a proxied request);
//! any other VM must be `running`. Every call counts as activity for the
//! idle monitor while it lasts.

use std::sync::Arc;

use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorKind};
use super::{owner, AppState};
use crate::agent::proto::ErrorCode;
use crate::agent::{AgentError, Conversation};
use crate::model::VmState;
use crate::proxy::HeldActivity;

/// A VM's live agent conversation, and the activity held while it is used.
pub struct AgentSession {
    pub conversation: Arc<Conversation>,
    _activity: HeldActivity,
}

/// The agent of the caller's VM `id`, waking the VM when it is snapshotted.
pub async fn session(state: &AppState, caller: &Caller, id: &str) -> ApiResult<AgentSession> {
    let mut vm = owner::vm(state, caller, id).await?;
    if vm.state == VmState::Snapshotted {
        vm = state.orch.wake_vm(id).await?;
    }
    if vm.state != VmState::Running {
        return Err(ApiError::new(
            ErrorKind::InvalidState,
            format!(
                "VM {id} is {}: the guest agent is reachable only while the VM runs (POST /vms/{id}/start)",
                vm.state.as_str()
            ),
        ));
    }
    let activity = state.orch.activity().hold(id);
    let conversation = state
        .orch
        .agent_conversation(&vm)
        .await
        .map_err(|e| agent_error(e, "path"))?;
    Ok(AgentSession {
        conversation,
        _activity: activity,
    })
}

/// An agent failure as the client sees it; `field` is the request field a
/// refusal in the guest is about (`cmd` for exec, `path` for files).
pub fn agent_error(error: AgentError, field: &str) -> ApiError {
    let message = error.to_string();
    match error {
        AgentError::Unavailable(_) | AgentError::Lost | AgentError::Protocol(_) => {
            ApiError::new(ErrorKind::AgentUnavailable, message)
        }
        AgentError::Guest { code, .. } => match code {
            ErrorCode::NotFound if field == "path" => ApiError::new(ErrorKind::NotFound, message),
            ErrorCode::NotFound | ErrorCode::Invalid | ErrorCode::SpawnFailed => ApiError::invalid(field, message),
            ErrorCode::PermissionDenied => ApiError::field(ErrorKind::Forbidden, field, message),
            ErrorCode::Io => ApiError::internal(format!("in the guest: {message}")),
        },
    }
}

/// A guest path as a request names it: absolute, without NUL or `..`.
pub fn validate_guest_path(field: &str, path: &str) -> ApiResult<String> {
    if !path.starts_with('/') {
        return Err(ApiError::invalid(
            field,
            "must be an absolute path in the guest (starting with /)",
        ));
    }
    if path.contains('\0') {
        return Err(ApiError::invalid(field, "must not contain a NUL character"));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(ApiError::invalid(field, "must not contain '..' components"));
    }
    if path.len() > 4096 {
        return Err(ApiError::invalid(field, "must be at most 4096 bytes"));
    }
    Ok(path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_must_be_absolute_and_plain() {
        assert_eq!(validate_guest_path("path", "/etc/hostname").unwrap(), "/etc/hostname");
        for bad in ["etc/hostname", "", "/tmp/\0x", "/tmp/../etc/shadow", "/.."] {
            let error = validate_guest_path("path", bad).unwrap_err();
            assert_eq!(error.field.as_deref(), Some("path"), "{bad:?}");
        }
    }
}
