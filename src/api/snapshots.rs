//! Snapshots: `POST /vms/{id}/snapshot`, `POST /vms/{id}/restore`,
//! `GET /vms/{id}/snapshots`, `DELETE /snapshots/{id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::json::parse_json;
use super::vm_operation::VmOperation;
use super::{owner, AppState};
use crate::model::{Snapshot, VmState};
use crate::orch::Operation;

/// Body of `POST /vms/{id}/restore`; empty means the newest snapshot.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub snapshot_id: Option<String>,
}

/// 201 with the new snapshot; on a VM already `snapshotted`, 200 with the
/// snapshot it was suspended with.
pub async fn create(op: VmOperation) -> ApiResult<Response> {
    let operation = Operation::Snapshot(op.vm_id.clone());
    op.run(operation, |state, id| async move {
        let before = state.orch.get_vm(&id).await?.state;
        let snapshot = state.orch.snapshot_vm(&id).await?;
        let status = if before == VmState::Snapshotted {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok((status, Json(snapshot)).into_response())
    })
    .await
}

pub async fn restore(op: VmOperation, body: axum::body::Bytes) -> ApiResult<Response> {
    let request: RestoreRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RestoreRequest::default()
    } else {
        parse_json(&body)?
    };
    if let Some(snapshot_id) = &request.snapshot_id {
        // Another owner's snapshot is answered like a missing one.
        if owner::snapshot(&op.state, &op.caller, snapshot_id).await.is_err() {
            return Err(ApiError::invalid(
                "snapshot_id",
                format!("VM {} has no snapshot {snapshot_id}", op.vm_id),
            ));
        }
    }
    let operation = Operation::Restore {
        vm_id: op.vm_id.clone(),
        snapshot_id: request.snapshot_id.clone(),
    };
    op.run(operation, |state, id| async move {
        let vm = state.orch.restore_vm(&id, request.snapshot_id.as_deref()).await?;
        Ok(Json(vm).into_response())
    })
    .await
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Snapshot>>> {
    owner::vm(&state, &caller, &id).await?;
    Ok(Json(state.orch.list_snapshots(&id).await?))
}

pub async fn delete(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    owner::snapshot(&state, &caller, &id).await?;
    state.orch.delete_snapshot(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
