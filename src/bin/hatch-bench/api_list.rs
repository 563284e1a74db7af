//! `api_list`: `GET /vms` p99 with 100 VMs while creates and snapshots
//! are being written (issue #13's target is absolute: at most 2 ms).
//!
//! A real orchestrator (QEMU chosen; bridge, dnsmasq and iptables in the
//! benchmark's namespace) over a database holding 100 networked VMs; each
//! round sends 1000 `GET /vms` through the real router in process (bearer
//! key auth, the handler, JSON from the orchestrator's in-memory view),
//! each timed until the answer's last byte (the client's own decoding of
//! the JSON is not the API's latency),
//! and the same number of reads of the database itself plus the JSON
//! encoding (the read path before the view), interleaved, as context.
//!
//! Meanwhile two writers record what creates and snapshots write, about 20
//! times a second each: a VM `creating` with its event, `running`,
//! `snapshotting`, `snapshotted` (each with its event), a snapshot row,
//! then the delete; each change is announced to the orchestrator so the
//! view is refreshed as in the daemon.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use hatch::model::{random_id, Image, ImageProfile, NetworkIdentity, RestartPolicy, Snapshot, Vm, VmState, VmmLimits};
use hatch::orch::Orchestrator;
use hatch::store::Store;

use crate::hatchd::Hatchd;
use crate::rows::Ctx;
use crate::stats::{quantile_ms, Comparison};
use crate::BenchError;

const VMS: u8 = 100;
const SAMPLES_PER_ROUND: usize = 1000;
/// Each writer's pause between rounds: two writers then record some 40
/// creates and snapshots a second (240 write transactions), far more than
/// a host boots, so the database is never idle.
const WRITER_PAUSE: Duration = Duration::from_millis(50);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A VM as the store records it; `n` below 100 makes it networked (its own
/// address, MAC and TAP name).
pub fn vm(image_id: &str, state: VmState, n: u8) -> Vm {
    let id = random_id("vm", 6);
    let now = hatch::model::now();
    Vm {
        agent: Default::default(),
        network: (n < VMS).then(|| NetworkIdentity {
            guest_ip: std::net::Ipv4Addr::new(192, 168, 241, 10 + n),
            guest_mac: format!("02:fc:00:00:00:{n:02x}"),
            tap_name: format!("fctap-{}", &id[3..]),
            ssh_port: 2200 + u16::from(n),
            egress: Default::default(),
        }),
        id,
        state,
        image_id: image_id.to_string(),
        vcpu_count: 1,
        mem_mib: 256,
        limits: VmmLimits::for_vm(1, 256),
        enable_network: n < VMS,
        user_data: None,
        ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBench bench@hatch".into()],
        hypervisor: "qemu".into(),
        pid: None,
        state_reason: Some("stopped by request".into()),
        ready_at: None,
        created_at: now,
        updated_at: now,
        last_activity_at: None,
        idle_status: None,
        restart_policy: RestartPolicy::Never,
        snapshot_id: None,
        owner_key_id: None,
        pool_template_id: None,
        lifetime: Default::default(),
        expires_at: None,
    }
}

/// One create and snapshot as the orchestrator writes them, then a delete.
fn churn_once(store: &Store, orch: &Orchestrator, image_id: &str) -> Result<(), Error> {
    let mut vm = vm(image_id, VmState::Creating, VMS);
    store.insert_vm(&vm, Some("created"))?;
    orch.vm_written_elsewhere(&vm.id);
    for to in [VmState::Running, VmState::Snapshotting, VmState::Snapshotted] {
        let from = vm.state;
        vm.state = to;
        store.update_vm_with_transition(&vm, Some(from), None)?;
        orch.vm_written_elsewhere(&vm.id);
    }
    let snapshot = Snapshot {
        id: random_id("snap", 10),
        vm_id: vm.id.clone(),
        created_at: hatch::model::now(),
        hypervisor: "qemu".into(),
        artefacts: vec![],
        total_bytes: 1 << 20,
        complete: true,
        durable: true,
        hot_checksums: Default::default(),
        owner_key_id: None,
    };
    store.upsert_snapshot(&snapshot)?;
    store.delete_vm(&vm.id)?;
    orch.vm_written_elsewhere(&vm.id);
    Ok(())
}

/// An image record for VMs that are never booted.
pub fn registered_image(dir: &std::path::Path) -> Image {
    Image {
        id: random_id("img", 10),
        name: "bench".into(),
        profile: ImageProfile::Registered,
        kernel_path: Some(dir.join("vmlinux")),
        bzimage_path: None,
        initrd_path: None,
        rootfs_path: None,
        login_user: "root".into(),
        boot_args: String::new(),
        size_bytes: 1,
        created_at: hatch::model::now(),
    }
}

pub async fn run(ctx: &Ctx) -> Result<Vec<Comparison>, BenchError> {
    let scratch = ctx.scratch("hatch-bench-api-")?;
    let image = registered_image(scratch.path());
    let hatchd = Hatchd::start(ctx, &[&image], |_| {}).await?;
    let result = measure(ctx, &hatchd, &image).await;
    hatchd.shutdown().await;
    result
}

async fn measure(ctx: &Ctx, hatchd: &Hatchd, image: &Image) -> Result<Vec<Comparison>, BenchError> {
    for n in 0..VMS {
        hatchd
            .store
            .insert_vm(&vm(&image.id, VmState::Stopped, n), Some("created"))
            .map_err(BenchError::hatch)?;
    }
    for vm in hatchd.store.list_vms().map_err(BenchError::hatch)? {
        hatchd.orch.vm_written_elsewhere(&vm.id);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (store, orch, image_id, stop, written) = (
                hatchd.store.clone(),
                hatchd.orch.clone(),
                image.id.clone(),
                stop.clone(),
                written.clone(),
            );
            tokio::task::spawn_blocking(move || -> Result<(), Error> {
                while !stop.load(Ordering::SeqCst) {
                    churn_once(&store, &orch, &image_id)?;
                    written.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(WRITER_PAUSE);
                }
                Ok(())
            })
        })
        .collect();
    let measured = rounds(ctx, hatchd).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.map_err(BenchError::hatch)?.map_err(BenchError::hatch)?;
    }
    let (elapsed, lines) = measured?;
    let listed = hatchd.store.list_vms().map_err(BenchError::hatch)?.len();
    let count = written.load(Ordering::SeqCst);
    eprintln!(
        "api_list: {listed} VMs; {count} creates+snapshots written in {:.1} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    Ok(lines)
}

async fn rounds(ctx: &Ctx, hatchd: &Hatchd) -> Result<(Duration, Vec<Comparison>), BenchError> {
    let mut http = Comparison::new(
        Some("api_list_p99_ms"),
        format!("GET /vms p99, {VMS} VMs, creates+snapshots written meanwhile"),
        "ms",
        "- (target <= 2 ms)",
    );
    http.baseline = None;
    let mut db = Comparison::new(
        None,
        "p99 of the database read + JSON (the path before the view)",
        "ms",
        "-",
    );
    db.baseline = None;
    let started = Instant::now();
    for round in 1..=ctx.rounds {
        let (mut through_api, mut from_db) = (Vec::new(), Vec::new());
        for _ in 0..SAMPLES_PER_ROUND {
            let t = Instant::now();
            let (status, body) = hatchd.request_bytes(Method::GET, "/vms", None).await?;
            through_api.push(t.elapsed());
            if !status.is_success() {
                let body = String::from_utf8_lossy(&body);
                return Err(BenchError::Http(format!("GET /vms answered {status}: {body}")));
            }
            let t = Instant::now();
            let vms = hatchd.store.list_vms().map_err(BenchError::hatch)?;
            let _ = serde_json::to_vec(&vms).map_err(BenchError::hatch)?;
            from_db.push(t.elapsed());
        }
        let (api_p99, db_p99) = (quantile_ms(&through_api, 0.99), quantile_ms(&from_db, 0.99));
        eprintln!(
            "round {round}: GET /vms p50 {:.3} ms p99 {api_p99:.3} ms max {:.3} ms; database read p99 {db_p99:.3} ms",
            quantile_ms(&through_api, 0.5),
            quantile_ms(&through_api, 1.0)
        );
        http.push(api_p99, 0.0);
        db.push(db_p99, 0.0);
    }
    Ok((started.elapsed(), vec![http, db]))
}
