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
use crate::store::{Store, StoreError};

/// The VM, if the caller may see it: from the orchestrator's in-memory
/// view, which every change of a VM refreshes before the change's
/// operation goes on; from the store (a VM written there by something
/// else) when the view does not hold it.
pub async fn vm(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Vm> {
    let found = match state.orch.viewed_vm(id) {
        Some(vm) => Some(vm),
        None => read(state, id, Store::get_vm).await?,
    };
    found
        .filter(|vm| caller.can_see(vm.owner_key_id.as_deref()))
        .map(|vm| state.orch.with_agent(vm))
        .ok_or_else(|| ApiError::not_found("VM", id))
}

/// The (complete) snapshot, if the caller may see it.
pub async fn snapshot(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Snapshot> {
    read(state, id, Store::get_snapshot)
        .await?
        .filter(|s| caller.can_see(s.owner_key_id.as_deref()))
        .ok_or_else(|| ApiError::not_found("snapshot", id))
}

pub async fn route(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Route> {
    read(state, id, Store::get_route)
        .await?
        .filter(|r| caller.can_see(r.owner_key_id.as_deref()))
        .ok_or_else(|| ApiError::not_found("route", id))
}

pub async fn template(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Template> {
    read(state, id, Store::get_template)
        .await?
        .filter(|t| caller.can_see(t.owner_key_id.as_deref()))
        .ok_or_else(|| ApiError::not_found("template", id))
}

/// One row by id, read on a blocking thread.
async fn read<T: Send + 'static>(
    state: &AppState,
    id: &str,
    get: fn(&Store, &str) -> Result<Option<T>, StoreError>,
) -> ApiResult<Option<T>> {
    let id = id.to_string();
    Ok(state.store.run(move |store| get(store, &id)).await?)
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
    let key = read(&state, &req.key_id, Store::get_api_key)
        .await?
        .filter(|k| k.revoked_at.is_none())
        .ok_or_else(|| ApiError::invalid("key_id", format!("no active key {}", req.key_id)))?;
    if !state.orch.set_vm_owner(&id, Some(&key.id)).await? {
        return Err(ApiError::not_found("VM", &id));
    }
    let vm = read(&state, &id, Store::get_vm)
        .await?
        .ok_or_else(|| ApiError::not_found("VM", &id))?;
    Ok(Json(vm))
}
