//! Templates: saved VM defaults, and their warm pools.
//! `POST/GET /templates`, `GET/DELETE /templates/{id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorKind};
use super::json::ApiJson;
use super::{owner, validate, AppState};
use crate::model::QuotaKind;
use crate::model::{now, random_id, Lifetime, LifetimeSeconds, OnIdle, Template};
use crate::orch::PoolStatus;
use crate::store::StoreError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    pub name: String,
    /// Image id or name.
    pub image_id: String,
    pub vcpu_count: Option<u32>,
    pub mem_mib: Option<u32>,
    /// cloud-init user data as text; or, for any bytes, `user_data_base64`.
    pub user_data: Option<String>,
    pub user_data_base64: Option<String>,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// `internet`, `none` or a list of CIDRs (see `POST /vms`).
    pub egress: Option<serde_json::Value>,
    /// Lifetime settings for VMs made from it (see `POST /vms`).
    pub ttl_seconds: Option<LifetimeSeconds>,
    pub idle_timeout_seconds: Option<LifetimeSeconds>,
    pub on_idle: Option<OnIdle>,
    /// VMs kept booted and snapshotted for creates that take one (0 to
    /// MAX_WARM_POOL; default 0).
    pub warm_pool_size: Option<u32>,
}

/// A template as the API shows it: with how full its warm pool is.
#[derive(Debug, Serialize, Deserialize)]
pub struct TemplateView {
    #[serde(flatten)]
    pub template: Template,
    pub warm_pool: PoolStatus,
}

fn view(state: &AppState, template: Template) -> TemplateView {
    TemplateView {
        warm_pool: state.orch.pool_status(&template),
        template,
    }
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateTemplate>,
) -> ApiResult<(StatusCode, Json<TemplateView>)> {
    validate::name(&req.name)?;
    let warm_pool_size = validate::warm_pool_size(req.warm_pool_size.unwrap_or(0))?;

    let vcpu_count = validate::vcpu_count(req.vcpu_count.unwrap_or(state.config.default_vcpu_count))?;
    let mem_mib = validate::mem_mib(req.mem_mib.unwrap_or(state.config.default_mem_mib))?;
    let user_data = validate::user_data(&req.user_data, &req.user_data_base64)?;
    validate::ssh_authorized_keys(&req.ssh_authorized_keys)?;
    let egress = req.egress.as_ref().map(validate::egress).transpose()?;
    let lifetime = Lifetime {
        ttl_seconds: req.ttl_seconds,
        idle_timeout_seconds: req.idle_timeout_seconds,
        on_idle: req.on_idle,
    };
    lifetime
        .check()
        .map_err(|(field, message)| ApiError::invalid(field, message))?;
    let image_id = req.image_id.clone();
    let image = state.store.run(move |store| store.find_image(&image_id)).await?;
    let image = image.ok_or_else(|| {
        ApiError::field(
            ErrorKind::NotFound,
            "image_id",
            format!("image {} not found", req.image_id),
        )
    })?;
    check_pool_quota(&state, &caller, warm_pool_size, vcpu_count, mem_mib).await?;
    let template = Template {
        id: random_id("tpl", 10),
        name: req.name,
        image_id: image.id,
        vcpu_count,
        mem_mib,
        user_data,
        ssh_authorized_keys: req.ssh_authorized_keys,
        egress,
        lifetime,
        created_at: now(),
        owner_key_id: Some(caller.id().to_string()),
        warm_pool_size,
    };
    let row = template.clone();
    state.store.run(move |store| store.insert_template(&row)).await?;
    if warm_pool_size > 0 {
        state.orch.wake_pool_filler();
    }
    Ok((StatusCode::CREATED, Json(view(&state, template))))
}

/// Admins see every template; members their own.
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<TemplateView>>> {
    let mut templates = state.store.run(|store| store.list_templates()).await?;
    templates.retain(|t| caller.can_see(t.owner_key_id.as_deref()));
    Ok(Json(templates.into_iter().map(|t| view(&state, t)).collect()))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TemplateView>> {
    Ok(Json(view(&state, owner::template(&state, &caller, &id).await?)))
}

/// Deletes the template and its warm pool (its VMs and their snapshots).
pub async fn delete(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    owner::template(&state, &caller, &id).await?;
    if state.orch.delete_template(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("template", &id))
    }
}

/// Pool VMs count against no quota until they are taken, yet they hold the
/// host's addresses, ports and disk: a member's pools together may hold at
/// most what its quotas would let it run (keys without quotas are trusted).
async fn check_pool_quota(
    state: &AppState,
    caller: &Caller,
    warm_pool_size: u32,
    vcpu_count: u32,
    mem_mib: u32,
) -> ApiResult<()> {
    if warm_pool_size == 0 || caller.is_admin() {
        return Ok(());
    }
    let owner = caller.id().to_string();
    let (quotas, theirs) = state
        .store
        .run(move |store| {
            let theirs: Vec<_> = store
                .list_templates()?
                .into_iter()
                .filter(|t| t.owner_key_id.as_deref() == Some(owner.as_str()))
                .collect();
            Ok::<_, StoreError>((store.quotas_of(Some(&owner))?, theirs))
        })
        .await?;
    let pooled = |per_vm: &dyn Fn(&Template) -> u64| -> u64 {
        theirs.iter().map(|t| u64::from(t.warm_pool_size) * per_vm(t)).sum()
    };
    let size = u64::from(warm_pool_size);
    for (kind, used, wanted) in [
        (QuotaKind::Vms, pooled(&|_| 1), size),
        (
            QuotaKind::Vcpus,
            pooled(&|t| u64::from(t.vcpu_count)),
            size * u64::from(vcpu_count),
        ),
        (
            QuotaKind::MemMib,
            pooled(&|t| u64::from(t.mem_mib)),
            size * u64::from(mem_mib),
        ),
    ] {
        if let Some(limit) = quotas.get(kind) {
            if used + wanted > limit {
                return Err(ApiError::field(
                    ErrorKind::QuotaExceeded,
                    "warm_pool_size",
                    format!(
                        "this key's warm pools would hold {} against {} = {limit} (its pools hold {used} already)",
                        used + wanted,
                        kind.name(),
                    ),
                ));
            }
        }
    }
    Ok(())
}
