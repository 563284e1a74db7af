//! `POST /vms/{id}/fork`: new VMs restored from one VM's state, each with
//! an identity of its own.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ApiResult;
use super::json::parse_json;
use super::{owner, AppState};
use crate::model::Vm;
use crate::orch::CloneSettings;

/// Body of `POST /vms/{id}/fork`; empty means one clone.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// How many VMs to make (1 to 16; default 1).
    pub count: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Forked {
    pub vms: Vec<Vm>,
}

/// 201 with the new VMs, ready; on any failure none of them exists.
pub async fn fork(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let request: ForkRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ForkRequest::default()
    } else {
        parse_json(&body)?
    };
    owner::vm(&state, &caller, &id).await?;
    let settings = CloneSettings {
        owner: Some(caller.id().to_string()),
        ..CloneSettings::default()
    };
    let vms = state.orch.fork_vm(&id, request.count.unwrap_or(1), settings).await?;
    Ok((StatusCode::CREATED, Json(Forked { vms })).into_response())
}
