//! API keys: `POST/GET /keys`, `DELETE /keys/{id}` (revoke).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::json::ApiJson;
use super::{validate, AppState};
use crate::store::ApiKeyInfo;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
}

/// The one response that contains the key itself.
#[derive(Debug, Serialize)]
pub struct NewKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    pub key: String,
}

pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<NewKey>)> {
    validate::name(&req.name)?;
    let (info, key) = state.store.create_api_key(&req.name)?;
    Ok((StatusCode::CREATED, Json(NewKey { info, key })))
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    Ok(Json(state.store.list_api_keys()?))
}

pub async fn revoke(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if state.store.revoke_api_key(&id)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("active key", &id))
    }
}
