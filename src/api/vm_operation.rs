//! What every request that changes one VM has in common: the VM must be
//! one the caller may see (404 otherwise), and the client may ask to be
//! answered as soon as the operation is recorded (`?async=true` or
//! `Prefer: respond-async` → 202 with the VM in its transitional state).

use std::future::Future;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::json::ApiQuery;
use super::{owner, AppState};
use crate::model::Vm;
use crate::orch::Operation;

const PREFER: HeaderName = HeaderName::from_static("prefer");
const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// `?async=true` on the operations that change a VM.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncQuery {
    #[serde(rename = "async")]
    pub respond_async: Option<bool>,
}

/// A request to change the VM named in the path.
pub struct VmOperation {
    pub state: AppState,
    pub caller: Caller,
    pub vm_id: String,
    respond_async: bool,
}

impl FromRequestParts<AppState> for VmOperation {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Path(vm_id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid("id", e.body_text()))?;
        let ApiQuery(query) = ApiQuery::<AsyncQuery>::from_request_parts(parts, state).await?;
        owner::vm(state, &caller, &vm_id).await?;
        Ok(VmOperation {
            respond_async: wants_async(&parts.headers, query.respond_async),
            state: state.clone(),
            caller,
            vm_id,
        })
    }
}

impl VmOperation {
    /// Runs `operation` in the server: answers 202 at once when the client
    /// asked for it, else waits for `finish` (the synchronous form).
    pub async fn run<F, Fut>(self, operation: Operation, finish: F) -> ApiResult<Response>
    where
        F: FnOnce(AppState, String) -> Fut,
        Fut: Future<Output = ApiResult<Response>>,
    {
        if self.respond_async {
            return Ok(accepted(self.state.orch.submit(operation).await?));
        }
        finish(self.state, self.vm_id).await
    }
}

/// Whether the client asked not to wait for the operation to finish:
/// `?async=true` or `Prefer: respond-async` (RFC 7240).
pub fn wants_async(headers: &HeaderMap, query: Option<bool>) -> bool {
    query.unwrap_or_else(|| {
        headers.get_all(PREFER).iter().any(|value| {
            value
                .to_str()
                .unwrap_or("")
                .split(',')
                .any(|preference| preference.trim().eq_ignore_ascii_case("respond-async"))
        })
    })
}

/// 202: the operation is recorded and goes on in the server; the body is
/// the VM in its transitional state (poll it, or `GET /vms/{id}?wait=`).
pub fn accepted(vm: Vm) -> Response {
    (StatusCode::ACCEPTED, [(PREFERENCE_APPLIED, "respond-async")], Json(vm)).into_response()
}
