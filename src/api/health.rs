//! `GET /healthz`: liveness plus counts, without authentication.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::error::ApiResult;
use super::AppState;
use crate::model::VmState;

#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub vms: VmCounts,
    pub images: usize,
}

#[derive(Debug, Serialize)]
pub struct VmCounts {
    pub total: usize,
    /// Every state, including those with no VMs.
    pub by_state: BTreeMap<&'static str, usize>,
}

pub async fn healthz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    let vms = state.store.list_vms()?;
    let mut by_state: BTreeMap<&'static str, usize> = VmState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for vm in &vms {
        *by_state.entry(vm.state.as_str()).or_default() += 1;
    }
    Ok(Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        vms: VmCounts {
            total: vms.len(),
            by_state,
        },
        images: state.store.list_images()?.len(),
    }))
}
