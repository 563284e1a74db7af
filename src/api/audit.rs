//! `GET /audit` (admin): the newest mutating requests, newest first.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::json::ApiQuery;
use super::AppState;
use crate::store::AuditEntry;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 10_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// How many entries (default 100, at most 10000).
    pub limit: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let limit = match &query.limit {
        None => DEFAULT_LIMIT,
        Some(text) => crate::config::values::number(text, 1, MAX_LIMIT)
            .map_err(|e| ApiError::invalid("limit", format!("limit: {e}")))?,
    };
    Ok(Json(state.store.run(move |store| store.list_audit(limit)).await?))
}
