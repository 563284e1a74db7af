//! Benchmark: time from start to the guest's first serial marker, through
//! Hatch's backend and through the same hypervisor launched directly with the
//! same kernel and initrd, side by side with the ratio. It asserts nothing
//! about timing; run it with
//! `cargo test --release --test integration vmm_bench -- --ignored --nocapture`.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::vmm::*;
use hatch::vmm::firecracker::FirecrackerHypervisor;
use hatch::vmm::{Hypervisor, VmLaunch};

const RUNS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(180);
const QEMU_MARKER: &str = "hatch-minimal: ready";

/// Polls `log` until it contains `marker`; the time since `started`.
async fn time_to_marker(log: &Path, marker: &str, started: Instant) -> Duration {
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        if String::from_utf8_lossy(&text).contains(marker) {
            return started.elapsed();
        }
        assert!(started.elapsed() < TIMEOUT, "no {marker:?} in {}", log.display());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn print_row(what: &str, hatch: Vec<Duration>, direct: Vec<Duration>) {
    let (h, d) = (median(hatch.clone()), median(direct.clone()));
    println!(
        "{what:<34} hatch {:>8.1} ms   direct {:>8.1} ms   ratio {:.2}   (runs: hatch {:?}, direct {:?})",
        h.as_secs_f64() * 1e3,
        d.as_secs_f64() * 1e3,
        h.as_secs_f64() / d.as_secs_f64(),
        hatch.iter().map(|x| x.as_millis()).collect::<Vec<_>>(),
        direct.iter().map(|x| x.as_millis()).collect::<Vec<_>>(),
    );
}

async fn qemu_direct(spec: &VmLaunch, dir: &Path) -> Duration {
    let log = dir.join("direct-serial.log");
    let kernel = spec.kernel.elf.clone().or(spec.kernel.bzimage.clone()).expect("kernel");
    let mut append = String::from("console=ttyS0 reboot=k panic=1");
    if let Some(khz) = hatch::vmm::host::tsc_khz() {
        append.push_str(&format!(" tsc_early_khz={khz}"));
    }
    let started = Instant::now();
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "microvm,accel=tcg,acpi=on",
            "-cpu",
            "max",
            "-m",
            "256M",
            "-smp",
            "1",
        ])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-kernel"])
        .arg(&kernel)
        .arg("-initrd")
        .arg(spec.initrd.as_ref().expect("initrd"))
        .args(["-append", &append, "-serial"])
        .arg(format!("file:{}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("qemu");
    let elapsed = time_to_marker(&log, QEMU_MARKER, started).await;
    kill(child);
    elapsed
}

async fn firecracker_direct(binary: &Path, kernel: &Path, dir: &Path) -> Duration {
    let config = dir.join("direct-config.json");
    let body = serde_json::json!({
        "boot-source": { "kernel_image_path": kernel, "boot_args": "console=ttyS0 reboot=k panic=1" },
        "machine-config": { "vcpu_count": 1, "mem_size_mib": 128 },
        "drives": []
    });
    std::fs::write(&config, body.to_string()).expect("config");
    let log = dir.join("direct-serial.log");
    let started = Instant::now();
    let child = Command::new(binary)
        .args(["--no-api", "--config-file"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("firecracker");
    let elapsed = time_to_marker(&log, TINY_GUEST_MARKER, started).await;
    kill(child);
    elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
async fn start_to_first_serial_marker() {
    let qemu = qemu_tcg();
    let (mut through_hatch, mut direct) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let dir = run_dir();
        let _cleanup = KillLeftovers(dir.path().to_path_buf());
        let spec = minimal_launch(&format!("vm-bench-{run}"), &dir.path().join("run"), "").await;
        // Alternate the order so neither side always runs on a warmer cache.
        if run % 2 == 0 {
            direct.push(qemu_direct(&spec, dir.path()).await);
        }
        let started = Instant::now();
        let vm = qemu.launch(&spec).await.expect("launch");
        through_hatch.push(time_to_marker(&spec.serial_log_path(), QEMU_MARKER, started).await);
        vm.stop(Duration::ZERO).await;
        if run % 2 == 1 {
            direct.push(qemu_direct(&spec, dir.path()).await);
        }
    }
    print_row("QEMU TCG, minimal image", through_hatch, direct);

    let Some(binary) = firecracker_bin_or_skip("start_to_first_serial_marker (Firecracker part)") else {
        return;
    };
    let firecracker = FirecrackerHypervisor::new(binary.clone());
    let (mut through_hatch, mut direct) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let dir = run_dir();
        let _cleanup = KillLeftovers(dir.path().to_path_buf());
        let kernel = dir.path().join("guest.elf");
        std::fs::write(&kernel, marker_guest()).expect("guest");
        direct.push(firecracker_direct(&binary, &kernel, dir.path()).await);
        let mut spec = minimal_launch(&format!("vm-bench-fc-{run}"), &dir.path().join("run"), "").await;
        spec.kernel = hatch::vmm::KernelFiles {
            elf: Some(kernel),
            bzimage: None,
        };
        spec.initrd = None;
        spec.mem_mib = 128;
        let started = Instant::now();
        let vm = firecracker.launch(&spec).await.expect("launch");
        through_hatch.push(time_to_marker(&spec.serial_log_path(), TINY_GUEST_MARKER, started).await);
        vm.wait_exit().await;
    }
    print_row("Firecracker, tiny marker guest", through_hatch, direct);
}
