//! `GET /vms` latency with 100 VMs while creates and snapshots are being
//! written, read three ways, side by side:
//!
//! - **http (view)**: the real route (`hatch::api::router`: auth, the
//!   handler, JSON) in process, which reads the orchestrator's in-memory view;
//! - **view**: `Orchestrator::list_vms` plus the JSON encoding;
//! - **db**: `Store::list_vms` plus the JSON encoding, the read path
//!   `GET /vms` had before the view.
//!
//! The load is what creates and snapshots write: two writers each record a VM (`creating`, with its event), move it to
//! `running`, `snapshotting`, `snapshotted` (each with its event), record a
//! snapshot, and delete it, about 20 times a second each; every change is announced to the orchestrator
//! as its own operations would, so the view is refreshed as in the daemon.
//!
//! The orchestrator starts for real (QEMU chosen, bridge, dnsmasq and
//! iptables), inside a network namespace the benchmark makes and deletes.
//! Needs root. Prints numbers; asserts nothing.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use hatch::api::{router, AppState};
use hatch::config::Config;
use hatch::model::{random_id, Image, ImageProfile, NetworkIdentity, RestartPolicy, Snapshot, Vm, VmState, VmmLimits};
use hatch::orch::Orchestrator;
use hatch::store::Store;
use tower::ServiceExt;

const VMS: u8 = 100;
const SAMPLES: usize = 3000;
/// Each writer's pause between rounds: two writers then record some 40
/// creates and snapshots a second (240 write transactions), far more than
/// a host boots, so the database is never idle.
const WRITER_PAUSE: Duration = Duration::from_millis(50);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// `hatch-lb-<random>`, deleted (with every process left in it) on drop.
struct Netns(String);

impl Netns {
    fn enter_new() -> Result<Netns, Error> {
        let name = format!("hatch-lb-{:08x}", rand::random::<u32>());
        run("ip", &["netns", "add", &name])?;
        let ns = Netns(name);
        run("ip", &["-n", &ns.0, "link", "set", "dev", "lo", "up"])?;
        let file = std::fs::File::open(format!("/run/netns/{}", ns.0))?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // dnsmasq left by an interrupted run dies with it; not this process,
        // which lives in the namespace too.
        let listed = Command::new("ip").args(["netns", "pids", &self.0]).output();
        let text = listed
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for pid in text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            if pid != std::process::id() as i32 {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), Error> {
    let status = Command::new(program).args(args).status()?;
    if !status.success() {
        return Err(format!("{program} {} failed: {status}", args.join(" ")).into());
    }
    Ok(())
}

fn vm(image_id: &str, state: VmState, n: u8) -> Vm {
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

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<12} p50 {:>7.3} ms   p90 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms",
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(*samples.last().unwrap())
    );
}

fn main() -> Result<(), Error> {
    // Before any thread exists: every thread the runtime starts, and every
    // process Hatch starts, lives in the namespace.
    let _netns = Netns::enter_new()?;
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(dir.path()))
}

async fn bench(data_dir: &std::path::Path) -> Result<(), Error> {
    let config = Arc::new(Config::with_data_dir(data_dir)?);
    let store = hatch::cli::serve::open_state(&config)?;
    let admin_key = std::fs::read_to_string(config.admin_key_path())?.trim().to_string();
    let image = Image {
        id: random_id("img", 10),
        name: "bench".into(),
        profile: ImageProfile::Registered,
        kernel_path: Some(data_dir.join("vmlinux")),
        bzimage_path: None,
        initrd_path: None,
        rootfs_path: None,
        login_user: "root".into(),
        boot_args: String::new(),
        size_bytes: 1,
        created_at: hatch::model::now(),
    };
    store.insert_image(&image)?;
    for n in 0..VMS {
        store.insert_vm(&vm(&image.id, VmState::Stopped, n), Some("created"))?;
    }
    let orch = hatch::cli::serve::start_orchestrator(config.clone(), store.clone()).await?;
    let app = router(AppState::new(store.clone(), orch.clone(), config));

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (store, orch, image_id, stop, written) = (
                store.clone(),
                orch.clone(),
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

    let (mut http, mut view, mut db) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let request = axum::http::Request::get("/vms")
            .header("authorization", format!("Bearer {admin_key}"))
            .body(Body::empty())?;
        let response = app.clone().oneshot(request).await?;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        http.push(t.elapsed());
        if !status.is_success() {
            return Err(format!("GET /vms answered {status}: {}", String::from_utf8_lossy(&body)).into());
        }

        let t = Instant::now();
        let _ = serde_json::to_vec(&orch.list_vms().await?)?;
        view.push(t.elapsed());

        let t = Instant::now();
        let _ = serde_json::to_vec(&store.list_vms()?)?;
        db.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await??;
    }
    orch.shutdown(Duration::from_secs(5)).await;

    let listed = store.list_vms()?.len();
    println!(
        "GET /vms with {listed} VMs; {SAMPLES} samples per path over {:.1} s while {} creates+snapshots were written ({:.0}/s)",
        elapsed.as_secs_f64(),
        written.load(Ordering::SeqCst),
        written.load(Ordering::SeqCst) as f64 / elapsed.as_secs_f64()
    );
    percentiles("http (view)", http);
    percentiles("view", view);
    percentiles("db", db);
    Ok(())
}
