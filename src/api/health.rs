//! `GET /healthz`: liveness plus counts and snapshot storage, without
//! authentication. It answers 200 while the daemon runs; `status` is
//! `degraded` when snapshot storage cannot be used (e.g. an unreachable S3
//! bucket: snapshots and restores answer 503 until it answers).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::error::ApiResult;
use super::AppState;
use crate::model::VmState;
use crate::snapshot::StorageHealth;
use crate::store::StoreError;

#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok`, or `degraded` when a part (snapshot storage) does not work.
    pub status: &'static str,
    pub version: &'static str,
    pub vms: VmCounts,
    pub images: usize,
    pub snapshot_storage: StorageHealth,
}

#[derive(Debug, Serialize)]
pub struct VmCounts {
    pub total: usize,
    /// Every state, including those with no VMs.
    pub by_state: BTreeMap<&'static str, usize>,
}

pub async fn healthz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    let (vms, images) = state
        .store
        .run(|store| Ok::<_, StoreError>((store.list_vms()?, store.list_images()?.len())))
        .await?;
    let mut by_state: BTreeMap<&'static str, usize> = VmState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for vm in &vms {
        *by_state.entry(vm.state.as_str()).or_default() += 1;
    }
    let snapshot_storage = state.orch.snapshot_storage_health().await;
    Ok(Json(Health {
        status: if snapshot_storage.ok { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        vms: VmCounts {
            total: vms.len(),
            by_state,
        },
        images,
        snapshot_storage,
    }))
}
