//! Snapshots: `POST /vms/{id}/snapshot`, `POST /vms/{id}/restore`,
//! `GET /vms/{id}/snapshots`, `DELETE /snapshots/{id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::ApiResult;
use super::json::parse_json;
use super::AppState;
use crate::model::{Snapshot, Vm};

/// Body of `POST /vms/{id}/restore`; empty means the newest snapshot.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub snapshot_id: Option<String>,
}

pub async fn create(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<Snapshot>)> {
    Ok((StatusCode::CREATED, Json(state.orch.snapshot_vm(&id).await?)))
}

pub async fn restore(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Vm>> {
    let request: RestoreRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RestoreRequest::default()
    } else {
        parse_json(&body)?
    };
    Ok(Json(state.orch.restore_vm(&id, request.snapshot_id.as_deref()).await?))
}

pub async fn list(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Vec<Snapshot>>> {
    Ok(Json(state.orch.list_snapshots(&id).await?))
}

pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.orch.delete_snapshot(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
