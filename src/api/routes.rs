//! Proxy routes: `POST/GET /vms/{id}/routes`, `DELETE /routes/{id}`.
//! A route sends `<subdomain>.<HATCH_PROXY_BASE_DOMAIN>` to a VM's port.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::json::ApiJson;
use super::AppState;
use crate::model::{now, random_id, Route};

/// Names kept for the operator's own services on the same domain.
pub const RESERVED_SUBDOMAINS: &[&str] = &[
    "api",
    "www",
    "admin",
    "hatch",
    "proxy",
    "dashboard",
    "console",
    "mail",
    "ftp",
    "ns1",
    "ns2",
    "localhost",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoute {
    /// One DNS label; generated from the VM id when absent.
    pub subdomain: Option<String>,
    pub target_port: u32,
    pub auto_wake: Option<bool>,
}

/// A subdomain must be one lowercase DNS label that is not reserved.
pub fn validate_subdomain(raw: &str) -> Result<String, ApiError> {
    let label = raw.to_ascii_lowercase();
    let valid_chars = label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if label.is_empty() || label.len() > 63 || !valid_chars || label.starts_with('-') || label.ends_with('-') {
        return Err(ApiError::invalid(
            "subdomain",
            "must be one DNS label: 1-63 letters, digits or '-', not starting or ending with '-'",
        ));
    }
    if RESERVED_SUBDOMAINS.contains(&label.as_str()) {
        return Err(ApiError::invalid("subdomain", format!("{label} is reserved")));
    }
    Ok(label)
}

pub async fn create(
    State(state): State<AppState>,
    Path(vm_id): Path<String>,
    ApiJson(req): ApiJson<CreateRoute>,
) -> ApiResult<(StatusCode, Json<Route>)> {
    let vm = state
        .store
        .get_vm(&vm_id)?
        .ok_or_else(|| ApiError::not_found("VM", &vm_id))?;
    if !vm.enable_network {
        return Err(ApiError::invalid("vm_id", "the VM has no network; a route needs one"));
    }
    let target_port = u16::try_from(req.target_port)
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| ApiError::invalid("target_port", "must be between 1 and 65535"))?;
    let subdomain = match &req.subdomain {
        Some(raw) => validate_subdomain(raw)?,
        None => generated_subdomain(&state, &vm_id)?,
    };
    let route = Route {
        id: random_id("rt", 10),
        vm_id,
        subdomain,
        target_port,
        auto_wake: req.auto_wake.unwrap_or(true),
        created_at: now(),
    };
    state.store.insert_route(&route)?;
    Ok((StatusCode::CREATED, Json(route)))
}

/// The VM id itself when free (easy to remember), else the id with a suffix.
fn generated_subdomain(state: &AppState, vm_id: &str) -> Result<String, ApiError> {
    let base = validate_subdomain(vm_id)?;
    if state.store.route_by_subdomain(&base)?.is_none() {
        return Ok(base);
    }
    for _ in 0..16 {
        let candidate = random_id(&base, 4);
        if state.store.route_by_subdomain(&candidate)?.is_none() {
            return Ok(candidate);
        }
    }
    Err(ApiError::internal("could not generate a free subdomain"))
}

pub async fn list(State(state): State<AppState>, Path(vm_id): Path<String>) -> ApiResult<Json<Vec<Route>>> {
    state
        .store
        .get_vm(&vm_id)?
        .ok_or_else(|| ApiError::not_found("VM", &vm_id))?;
    Ok(Json(state.store.list_routes(&vm_id)?))
}

pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if state.store.delete_route(&id)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("route", &id))
    }
}
