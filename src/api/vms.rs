//! VMs: parsing and validation here; every effect goes through `Orchestrator`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorKind};
use super::json::{ApiJson, ApiQuery};
use super::vm_operation::{accepted, wants_async, VmOperation};
use super::{owner, validate, AppState};
use crate::model::Vm;
use crate::orch::{CreateVm, Operation, OrchError};
use crate::store::{HostEvent, VmEvent};

/// The body of `POST /vms` is orchestration's own request type.
pub type CreateVmRequest = CreateVm;

/// Checks what can be checked without orchestration.
pub fn validate_create(req: &CreateVm) -> Result<(), ApiError> {
    if req.image_id.is_some() && req.template_id.is_some() {
        return Err(ApiError::invalid(
            "template_id",
            "give image_id or template_id, not both",
        ));
    }
    req.vcpu_count.map(validate::vcpu_count).transpose()?;
    req.mem_mib.map(validate::mem_mib).transpose()?;
    validate::user_data(&req.user_data, &req.user_data_base64)?;
    if let Some(keys) = &req.ssh_authorized_keys {
        validate::ssh_authorized_keys(keys)?;
    }
    if let Some(policy) = &req.restart_policy {
        if crate::model::RestartPolicy::parse(policy).is_none() {
            return Err(ApiError::invalid(
                "restart_policy",
                format!("restart_policy must be \"never\" or \"on-failure\", got {policy:?}"),
            ));
        }
    }
    if let Some(egress) = &req.egress {
        validate::egress(egress)?;
    }
    if req.enable_network == Some(false) {
        for (field, value) in [
            ("guest_ip", req.guest_ip.is_some()),
            ("guest_mac", req.guest_mac.is_some()),
            ("egress", req.egress.is_some()),
        ] {
            if value {
                return Err(ApiError::invalid(field, format!("{field} needs enable_network")));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateQuery {
    /// `ready`: answer once the guest accepts SSH connections.
    pub wait: Option<String>,
    /// Seconds (or 90s, 5m) to wait; default 120.
    pub timeout: Option<String>,
    /// `true`: answer 202 once the VM is recorded (`creating`).
    #[serde(rename = "async")]
    pub respond_async: Option<bool>,
}

pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);
const MAX_WAIT: Duration = Duration::from_secs(3600);

impl CreateQuery {
    /// The readiness wait asked for, if any.
    fn wait_for(&self) -> Result<Option<Duration>, ApiError> {
        match self.wait.as_deref() {
            None => {
                if self.timeout.is_some() {
                    return Err(ApiError::invalid("timeout", "timeout needs wait=ready"));
                }
                Ok(None)
            }
            Some("ready") => {
                let Some(text) = &self.timeout else {
                    return Ok(Some(DEFAULT_WAIT));
                };
                let timeout = crate::config::values::duration(text).map_err(|e| ApiError::invalid("timeout", e))?;
                if timeout > MAX_WAIT {
                    return Err(ApiError::invalid("timeout", "timeout is at most 3600 seconds"));
                }
                Ok(Some(timeout))
            }
            Some(other) => Err(ApiError::invalid(
                "wait",
                format!("wait must be \"ready\", got {other:?}"),
            )),
        }
    }
}

/// Orchestration names the missing object; in a create request that is a field.
fn create_error(err: OrchError) -> ApiError {
    let field = match &err {
        OrchError::NotFound { kind: "image", .. } => Some("image_id"),
        OrchError::NotFound { kind: "template", .. } => Some("template_id"),
        _ => None,
    };
    let mut api: ApiError = err.into();
    if api.field.is_none() {
        api.field = field.map(Into::into);
    }
    api
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<CreateQuery>,
    ApiJson(mut req): ApiJson<CreateVmRequest>,
) -> ApiResult<Response> {
    let wait = query.wait_for()?;
    validate_create(&req)?;
    if let Some(template_id) = &req.template_id {
        // Another owner's template does not exist for this key.
        if owner::template(&state, &caller, template_id).await.is_err() {
            return Err(ApiError::invalid("template_id", format!("no template {template_id}")));
        }
    }
    if let Some(snapshot_id) = &req.snapshot_id {
        // Another owner's snapshot does not exist for this key.
        if owner::snapshot(&state, &caller, snapshot_id).await.is_err() {
            return Err(ApiError::invalid("snapshot_id", format!("no snapshot {snapshot_id}")));
        }
    }
    req.owner = Some(caller.id().to_string());
    if wants_async(&headers, query.respond_async) {
        if wait.is_some() {
            return Err(ApiError::invalid(
                "wait",
                "wait=ready cannot be combined with an asynchronous answer",
            ));
        }
        let vm = state
            .orch
            .submit(Operation::Create(Box::new(req)))
            .await
            .map_err(create_error)?;
        return Ok(accepted(vm));
    }
    let vm = state.orch.create_vm(req).await.map_err(create_error)?;
    let vm = match wait {
        Some(timeout) => state.orch.wait_ready(&vm.id, timeout).await.map_err(|err| {
            // The VM exists now; say so, so the caller does not create another.
            let mut api = ApiError::from(err);
            api.message = format!("{} was created, but {}", vm.id, api.message);
            api
        })?,
        None => vm,
    };
    Ok((StatusCode::CREATED, Json(vm)).into_response())
}

/// Admins see every VM; members their own. The JSON is kept ready in
/// memory, so this only joins bytes.
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let owner = (!caller.is_admin()).then(|| caller.id());
    let json = state.orch.list_vms_json(owner)?;
    Ok(([(CONTENT_TYPE, "application/json")], json).into_response())
}

pub async fn show(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Vm>> {
    Ok(Json(owner::vm(&state, &caller, &id).await?))
}

pub async fn stop(op: VmOperation) -> ApiResult<Response> {
    let operation = Operation::Stop(op.vm_id.clone());
    op.run(operation, |state, id| async move {
        Ok(Json(state.orch.stop_vm(&id).await?).into_response())
    })
    .await
}

pub async fn start(op: VmOperation) -> ApiResult<Response> {
    let operation = Operation::Start(op.vm_id.clone());
    op.run(operation, |state, id| async move {
        Ok(Json(state.orch.start_vm(&id).await?).into_response())
    })
    .await
}

pub async fn delete(op: VmOperation) -> ApiResult<Response> {
    let operation = Operation::Delete(op.vm_id.clone());
    op.run(operation, |state, id| async move {
        state.orch.delete_vm(&id).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// How much of the end of the console to return (default 64 KiB, at most 1 MiB).
    pub bytes: Option<String>,
    /// `true`: keep the answer open and stream what the guest prints next.
    pub follow: Option<bool>,
}

const DEFAULT_LOG_BYTES: u64 = 64 * 1024;
const MAX_LOG_BYTES: u64 = 1024 * 1024;

pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> ApiResult<Response> {
    let bytes = match &query.bytes {
        None => DEFAULT_LOG_BYTES,
        Some(text) => crate::config::values::number(text, 1, MAX_LOG_BYTES)
            .map_err(|e| ApiError::field(ErrorKind::InvalidField, "bytes", format!("bytes: {e}")))?,
    };
    owner::vm(&state, &caller, &id).await?;
    let content_type = [(CONTENT_TYPE, "text/plain; charset=utf-8")];
    if query.follow == Some(true) {
        let stream = state.orch.follow_logs(&id, bytes).await?;
        return Ok((content_type, axum::body::Body::from_stream(stream)).into_response());
    }
    let text = state.orch.logs(&id, bytes).await?;
    Ok((content_type, text).into_response())
}

/// The VM's recorded state changes and repairs, oldest first.
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<VmEvent>>> {
    owner::vm(&state, &caller, &id).await?;
    Ok(Json(state.store.run(move |store| store.list_transitions(&id)).await?))
}

/// How many host-wide events `GET /host/events` shows.
const HOST_EVENTS_SHOWN: u32 = 1000;

/// Host-wide repairs (firewall chains, dnsmasq, stray TAPs, processes and
/// directories), the newest thousand, oldest first.
pub async fn host_events(State(state): State<AppState>) -> ApiResult<Json<Vec<HostEvent>>> {
    Ok(Json(
        state
            .store
            .run(|store| store.list_host_events(HOST_EVENTS_SHOWN))
            .await?,
    ))
}
