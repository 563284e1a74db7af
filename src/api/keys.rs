//! API keys: `POST/GET /keys`, `PATCH /keys/{id}` (quotas),
//! `DELETE /keys/{id}` (revoke), all admin-only; `GET /keys/me` for any key.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorKind};
use super::json::ApiJson;
use super::{validate, AppState};
use crate::model::{QuotaKind, Quotas, Role, Usage};
use crate::store::{ApiKeyInfo, Store};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    /// `admin` or `member` (default).
    pub role: Option<Value>,
    /// `{"max_vms": 2, ...}`; absent or null: unlimited.
    pub quotas: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    /// Replaces the key's quotas (a quota absent or null is unlimited).
    pub quotas: Value,
}

/// The one response that contains the key itself.
#[derive(Debug, Serialize)]
pub struct NewKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    pub key: String,
}

/// `GET /keys/me`: the calling key, with what its objects hold now.
#[derive(Debug, Serialize)]
pub struct KeyUsage {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    pub usage: Usage,
}

/// `"admin"` or `"member"`; anything else is a 400 naming `role`.
pub fn parse_role(value: Option<&Value>) -> ApiResult<Role> {
    match value {
        None | Some(Value::Null) => Ok(Role::Member),
        Some(Value::String(text)) => Role::parse(text)
            .ok_or_else(|| ApiError::invalid("role", format!("role must be \"admin\" or \"member\", got {text:?}"))),
        Some(other) => Err(ApiError::invalid(
            "role",
            format!("role must be \"admin\" or \"member\", got {other}"),
        )),
    }
}

/// A quotas object: known names only, each null or a whole number from 0
/// to the quota's ceiling; errors name the field (`quotas.max_vms`).
pub fn parse_quotas(value: Option<&Value>) -> ApiResult<Quotas> {
    let mut quotas = Quotas::default();
    let fields = match value {
        None | Some(Value::Null) => return Ok(quotas),
        Some(Value::Object(fields)) => fields,
        Some(_) => return Err(ApiError::invalid("quotas", "quotas must be an object")),
    };
    for (name, limit) in fields {
        let field = format!("quotas.{name}");
        let kind = QuotaKind::parse(name).ok_or_else(|| {
            let known: Vec<&str> = QuotaKind::ALL.iter().map(|k| k.name()).collect();
            ApiError::invalid(
                field.clone(),
                format!("no quota {name:?}; quotas are {}", known.join(", ")),
            )
        })?;
        let limit = match limit {
            Value::Null => None,
            Value::Number(n) => {
                let max = kind.max_limit();
                match n.as_u64() {
                    Some(l) if l <= max => Some(l),
                    _ => {
                        return Err(ApiError::invalid(
                            field,
                            format!("{name} must be a whole number from 0 to {max} (or null: unlimited), got {n}"),
                        ))
                    }
                }
            }
            other => {
                return Err(ApiError::invalid(
                    field,
                    format!("{name} must be a whole number or null, got {other}"),
                ))
            }
        };
        quotas.set(kind, limit);
    }
    Ok(quotas)
}

pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<NewKey>)> {
    validate::name(&req.name)?;
    let role = parse_role(req.role.as_ref())?;
    let quotas = parse_quotas(req.quotas.as_ref())?;
    let (info, key) = state
        .store
        .run(move |store| store.create_api_key(&req.name, role, quotas))
        .await?;
    Ok((StatusCode::CREATED, Json(NewKey { info, key })))
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    Ok(Json(state.store.run(|store| store.list_api_keys()).await?))
}

pub async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<KeyUsage>> {
    let id = caller.id().to_string();
    let usage = state.store.run(move |store| store.usage_of(&id)).await?;
    Ok(Json(KeyUsage { info: caller.0, usage }))
}

pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateKey>,
) -> ApiResult<Json<ApiKeyInfo>> {
    let quotas = parse_quotas(Some(&req.quotas))?;
    let key = state.store.run(move |store| {
        if !store.set_api_key_quotas(&id, &quotas)? {
            return Err(ApiError::not_found("key", &id));
        }
        store.get_api_key(&id)?.ok_or_else(|| ApiError::not_found("key", &id))
    });
    Ok(Json(key.await?))
}

/// Revokes a key. Its VMs, snapshots, routes and templates stay (an admin
/// can give the VMs to another key). The last active admin key cannot be
/// revoked: nobody could manage keys any more.
pub async fn revoke(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.store.run(move |store| revoke_key(store, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn revoke_key(store: &Store, id: &str) -> ApiResult<()> {
    let key = store
        .get_api_key(id)?
        .filter(|k| k.revoked_at.is_none())
        .ok_or_else(|| ApiError::not_found("active key", id))?;
    if key.role == Role::Admin {
        let active_admins = store
            .list_api_keys()?
            .into_iter()
            .filter(|k| k.role == Role::Admin && k.revoked_at.is_none())
            .count();
        if active_admins <= 1 {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                "this is the last active admin key; create another admin key first",
            ));
        }
    }
    if store.revoke_api_key(id)? {
        Ok(())
    } else {
        Err(ApiError::not_found("active key", id))
    }
}
