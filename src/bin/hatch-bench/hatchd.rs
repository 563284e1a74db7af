//! Hatch under test: the daemon's own parts (database with its admin key,
//! orchestrator with bridge, dnsmasq and iptables, the API router) in a
//! fresh data directory, started the way `hatch serve` starts them. The
//! benchmark already runs inside its network namespace, so everything the
//! orchestrator makes is made there.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use hatch::api::{router, AppState};
use hatch::config::Config;
use hatch::model::{Image, Snapshot, Vm};
use hatch::orch::{CreateVm, Orchestrator};
use hatch::store::Store;
use hatch::vmm::Hypervisor;

use crate::BenchError;

pub struct Hatchd {
    pub config: Arc<Config>,
    pub store: Store,
    pub orch: Arc<Orchestrator>,
    app: axum::Router,
    admin_key: String,
    data: tempfile::TempDir,
    pool_filler: tokio::task::JoinHandle<()>,
}

impl Hatchd {
    /// Starts Hatch with `images` registered; `tune` may change settings
    /// first (a row that must not be disturbed by the reconciler).
    pub async fn start(
        ctx: &crate::rows::Ctx,
        images: &[&Image],
        tune: impl FnOnce(&mut Config),
    ) -> Result<Hatchd, BenchError> {
        let data = ctx.scratch("hatch-bench-data-")?;
        let mut config = Config::with_data_dir(data.path()).map_err(BenchError::hatch)?;
        // The images stay in the build cache's directory (as the tests'
        // do), so Hatch must be allowed to boot files from there.
        for image in images {
            let files = [
                &image.kernel_path,
                &image.bzimage_path,
                &image.initrd_path,
                &image.rootfs_path,
            ];
            for dir in files.into_iter().flatten().filter_map(|file| file.parent()) {
                if !config.image_import_dirs.iter().any(|known| known == dir) {
                    config.image_import_dirs.push(dir.to_path_buf());
                }
            }
        }
        tune(&mut config);
        let config = Arc::new(config);
        let store = hatch::cli::serve::open_state(&config).map_err(BenchError::hatch)?;
        for image in images {
            store.insert_image(image).map_err(BenchError::hatch)?;
        }
        let admin_key = std::fs::read_to_string(config.admin_key_path())
            .map_err(BenchError::io("reading the admin key"))?
            .trim()
            .to_string();
        let orch = hatch::cli::serve::start_orchestrator(config.clone(), store.clone())
            .await
            .map_err(BenchError::hatch)?;
        // Templates' warm pools are filled as the daemon fills them.
        let pool_filler = orch.spawn_pool_filler();
        let app = router(AppState::new(store.clone(), orch.clone(), config.clone()));
        Ok(Hatchd {
            pool_filler,
            config,
            store,
            orch,
            app,
            admin_key,
            data,
        })
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    /// The hypervisor Hatch chose, for a baseline that runs the same QEMU
    /// launch without orchestration.
    pub fn hypervisor(&self) -> Result<Arc<dyn Hypervisor>, BenchError> {
        Ok(hatch::vmm::select::choose(&self.config.hypervisor)?.0)
    }

    /// One API request through the real router (authentication, handler,
    /// JSON) with the admin key; returns the status and the JSON body.
    pub async fn request(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), BenchError> {
        let (status, bytes) = self.request_bytes(method, uri, body).await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// [`request`](Self::request) until the last byte of the answer,
    /// before the client decodes it (what a latency measures).
    pub async fn request_bytes(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, axum::body::Bytes), BenchError> {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.admin_key));
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|e| BenchError::Http(e.to_string()))?;
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?;
        Ok((status, bytes))
    }

    /// Creates a networked one-vCPU VM through orchestration (not timed:
    /// rows that time creation go through the API).
    pub async fn create_vm(&self, image: &Image, mem_mib: u32, user_data: Option<&str>) -> Result<Vm, BenchError> {
        let request = CreateVm {
            image_id: Some(image.id.clone()),
            vcpu_count: Some(1),
            mem_mib: Some(mem_mib),
            enable_network: Some(true),
            user_data: user_data.map(str::to_string),
            ..CreateVm::default()
        };
        self.orch.create_vm(request).await.map_err(BenchError::hatch)
    }

    /// Starts Hatch with `image`, creates one `mem_mib` VM of it, waits
    /// (untimed) until it is ready and runs `body` with it; afterwards (also after an error) every QEMU is
    /// stopped, the VM deleted and Hatch shut down.
    pub async fn with_ready_vm<T>(
        ctx: &crate::rows::Ctx,
        image: &Image,
        mem_mib: u32,
        body: impl AsyncFnOnce(&Hatchd, &str) -> Result<T, BenchError>,
    ) -> Result<T, BenchError> {
        let hatchd = Hatchd::start(ctx, &[image], |_| {}).await?;
        let result = match hatchd.create_vm(image, mem_mib, None).await {
            Ok(vm) => {
                let result = match hatchd.orch.wait_ready(&vm.id, crate::guest::BOOT_TIMEOUT).await {
                    Ok(_) => body(&hatchd, &vm.id).await,
                    Err(error) => Err(BenchError::hatch(error)),
                };
                ctx.guests.stop_all().await;
                hatchd.delete_vm(&vm.id).await;
                result
            }
            Err(error) => Err(error),
        };
        hatchd.shutdown().await;
        result
    }

    /// Deletes `vm_id` (a row's own VM), saying so if that fails.
    pub async fn delete_vm(&self, vm_id: &str) {
        if let Err(error) = self.orch.delete_vm(vm_id).await {
            eprintln!("hatch-bench: deleting {vm_id}: {error}");
        }
    }

    /// Stops orchestration; the data directory goes with `self`, and what
    /// is left in the network namespace goes with the namespace.
    pub async fn shutdown(self) {
        self.pool_filler.abort();
        self.orch.shutdown(Duration::from_secs(60)).await;
    }
}

/// How long Hatch's background pass may take to make a snapshot durable.
const DURABLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Waits (untimed) until Hatch's background pass has compressed and
/// checksummed `snapshot_id` into its store, so that its CPU and disk
/// work does not land in the next measurement of either column. Returns
/// the snapshot as stored (with its artefacts).
pub async fn wait_durable(orch: &Orchestrator, vm_id: &str, snapshot_id: &str) -> Result<Snapshot, BenchError> {
    let deadline = tokio::time::Instant::now() + DURABLE_TIMEOUT;
    loop {
        let snapshots = orch.list_snapshots(vm_id).await.map_err(BenchError::hatch)?;
        if let Some(durable) = snapshots.into_iter().find(|s| s.id == snapshot_id && s.durable) {
            return Ok(durable);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BenchError::Timeout {
                what: format!("snapshot {snapshot_id} to become durable"),
                serial_tail: String::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
