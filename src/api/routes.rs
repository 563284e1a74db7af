//! Proxy routes: `POST/GET /vms/{id}/routes`, `DELETE /routes/{id}`.
//! A route sends `<subdomain>.<HATCH_PROXY_BASE_DOMAIN>` to a VM's port.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::json::ApiJson;
use super::{owner, AppState};
use crate::model::Route;
use crate::orch;

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
    caller: Caller,
    Path(vm_id): Path<String>,
    ApiJson(req): ApiJson<CreateRoute>,
) -> ApiResult<(StatusCode, Json<Route>)> {
    owner::vm(&state, &caller, &vm_id).await?;
    let target_port = u16::try_from(req.target_port)
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| ApiError::invalid("target_port", "must be between 1 and 65535"))?;
    let subdomain = req.subdomain.as_deref().map(validate_subdomain).transpose()?;
    let request = orch::CreateRoute {
        subdomain,
        target_port,
        auto_wake: req.auto_wake.unwrap_or(true),
    };
    let route = state
        .orch
        .create_route(&vm_id, request, |candidate| validate_subdomain(candidate).ok())
        .await?;
    Ok((StatusCode::CREATED, Json(route)))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(vm_id): Path<String>,
) -> ApiResult<Json<Vec<Route>>> {
    owner::vm(&state, &caller, &vm_id).await?;
    Ok(Json(state.orch.list_routes(&vm_id).await?))
}

pub async fn delete(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    owner::route(&state, &caller, &id).await?;
    state.orch.delete_route(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
