//! Ownership at the API edge. Every VM, snapshot, route and template
//! records the key that owns it; a member key sees only its own (another
//! owner's object answers 404, as if it did not exist), an admin key sees
//! everything. Orchestration itself stays owner-agnostic.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::json::ApiJson;
use super::AppState;
use crate::model::{Route, Snapshot, Template, Vm};

/// The VM, if the caller may see it.
pub fn vm(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Vm> {
    state
        .store
        .get_vm(id)?
        .filter(|vm| caller.can_see(vm.owner_key_id.as_deref()))
        .map(|vm| state.orch.with_agent(vm))
        .ok_or_else(|| ApiError::not_found("VM", id))
}

/// The (complete) snapshot, if the caller may see it.
pub fn snapshot(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Snapshot> {
    state
        .store
        .get_snapshot(id)?
        .filter(|s| caller.can_see(s.owner_key_id.as_deref()))
        .ok_or_else(|| ApiError::not_found("snapshot", id))
}

pub fn route(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Route> {
    state
        .store
        .get_route(id)?
        .filter(|r| caller.can_see(r.owner_key_id.as_deref()))
        .ok_or_else(|| ApiError::not_found("route", id))
}

pub fn template(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Template> {
    state
        .store
        .get_template(id)?
        .filter(|t| caller.can_see(t.owner_key_id.as_deref()))
        .ok_or_else(|| ApiError::not_found("template", id))
}

/// Body of `POST /vms/{id}/owner`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reassign {
    /// The key that will own the VM, its snapshots and its routes: an
    /// active key (quotas are not checked: an admin decides).
    pub key_id: String,
}

/// `POST /vms/{id}/owner` (admin): gives a VM, with its snapshots and
/// routes, to another key, e.g. when the key that made it was revoked.
pub async fn reassign(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<Reassign>,
) -> ApiResult<Json<Vm>> {
    let key = state
        .store
        .get_api_key(&req.key_id)?
        .filter(|k| k.revoked_at.is_none())
        .ok_or_else(|| ApiError::invalid("key_id", format!("no active key {}", req.key_id)))?;
    if !state.orch.set_vm_owner(&id, Some(&key.id)).await? {
        return Err(ApiError::not_found("VM", &id));
    }
    let vm = state.store.get_vm(&id)?.ok_or_else(|| ApiError::not_found("VM", &id))?;
    Ok(Json(vm))
}
