//! `create_ssh_minimal` / `create_ssh_debian`: create → SSH-ready through
//! Hatch's API next to the same QEMU launch started by hand.
//!
//! Hatch: `POST /vms?wait=ready` through the real router, timed until the
//! answer (Hatch answers once the guest accepts TCP connections on port
//! 22). Baseline: a Hatch VM's launch with that VM stopped (so its TAP,
//! neighbour entry and DHCP reservation stay): a fresh `cp --sparse=always`
//! of the image's root filesystem and a copy of the VM's seed disk, then
//! `qemu-system-x86_64` started directly with the same machine, kernel,
//! initrd, kernel command line, disks, TAP and MAC as Hatch's launch, timed
//! until a TCP connect to the guest's port 22 succeeds, probed the way
//! Hatch probes (every 25 ms, 250 ms connect timeout). The order alternates:
//! odd rounds create through Hatch first and boot that VM's launch by hand
//! right after; even rounds boot the last round's VM's launch first, delete
//! it, then create. One untimed create before the rounds fills the page
//! cache for both. What differs: the
//! hand-started QEMU runs as root with its files opened by itself (Hatch
//! passes descriptors to QEMU running as the VMM user) and logs the serial
//! console to a file (Hatch: a pty with a log file), and has no QMP socket.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::json;

use hatch::model::{Image, ImageProfile};
use hatch::vmm::qemu::args::{kernel_cmdline, Accel, SANDBOX};
use hatch::vmm::VmLaunch;

use crate::guest::BOOT_TIMEOUT;
use crate::hatchd::Hatchd;
use crate::rows::Ctx;
use crate::stats::{millis, Comparison};
use crate::BenchError;

/// Hatch's own readiness probe settings (src/orch/supervise.rs).
const PROBE_INTERVAL: Duration = Duration::from_millis(25);
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

pub async fn run(image: &Image, mem_mib: u32, ctx: &Ctx) -> Result<Vec<Comparison>, BenchError> {
    let hatchd = Hatchd::start(ctx, &[image], |_| {}).await?;
    let result = rounds(&hatchd, image, mem_mib, ctx).await;
    hatchd.shutdown().await;
    result
}

async fn rounds(hatchd: &Hatchd, image: &Image, mem_mib: u32, ctx: &Ctx) -> Result<Vec<Comparison>, BenchError> {
    let key = match image.profile {
        ImageProfile::Debian => "create_ssh_ratio_debian",
        _ => "create_ssh_ratio_minimal",
    };
    let mut line = Comparison::new(
        Some(key),
        format!("create -> SSH-ready, {} image, {mem_mib} MiB", image.profile.as_str()),
        "ms",
        "qemu started by hand",
    );
    let body = json!({
        "image_id": image.id,
        "vcpu_count": 1,
        "mem_mib": mem_mib,
        "enable_network": true,
    });
    // One create untimed: whichever column goes first in a round then finds
    // kernel, initrd and image in the page cache, as the other one does.
    let warm_up = create(hatchd, &body).await?.1;
    hatchd.delete_vm(&warm_up).await;
    // A stopped VM of Hatch's whose launch the next round boots by hand first.
    let mut stopped: Option<String> = None;
    for round in 1..=ctx.rounds {
        let (hatch, baseline) = match stopped.take() {
            // Even rounds: the baseline first, from the last round's VM.
            Some(previous) => {
                let baseline = by_hand(hatchd, &previous, image, ctx).await;
                hatchd.delete_vm(&previous).await;
                let baseline = baseline?;
                let (hatch, vm_id) = create(hatchd, &body).await?;
                hatchd.delete_vm(&vm_id).await;
                (hatch, baseline)
            }
            None => {
                let (hatch, vm_id) = create(hatchd, &body).await?;
                let baseline = match hatchd.orch.stop_vm(&vm_id).await {
                    Ok(_) => by_hand(hatchd, &vm_id, image, ctx).await,
                    Err(error) => Err(BenchError::hatch(error)),
                };
                match baseline {
                    Ok(baseline) if round < ctx.rounds => {
                        stopped = Some(vm_id);
                        (hatch, baseline)
                    }
                    other => {
                        hatchd.delete_vm(&vm_id).await;
                        (hatch, other?)
                    }
                }
            }
        };
        eprintln!(
            "round {round}: hatch {:.0} ms, qemu by hand {:.0} ms",
            millis(hatch),
            millis(baseline)
        );
        line.push(millis(hatch), millis(baseline));
    }
    Ok(vec![line])
}

/// `POST /vms?wait=ready`, timed until the answer; the new VM's id.
async fn create(hatchd: &Hatchd, body: &serde_json::Value) -> Result<(Duration, String), BenchError> {
    let started = Instant::now();
    let (status, vm) = hatchd
        .request(Method::POST, "/vms?wait=ready&timeout=300", Some(body))
        .await?;
    let elapsed = started.elapsed();
    if !status.is_success() {
        return Err(BenchError::Http(format!("POST /vms answered {status}: {vm}")));
    }
    Ok((elapsed, vm["id"].as_str().unwrap_or_default().to_string()))
}

/// Boots a stopped VM's launch by hand from fresh disks.
async fn by_hand(hatchd: &Hatchd, vm_id: &str, image: &Image, ctx: &Ctx) -> Result<Duration, BenchError> {
    let vm = hatchd.orch.get_vm(vm_id).await.map_err(BenchError::hatch)?;
    let spec = hatchd.orch.launch_spec_of(&vm).await.map_err(BenchError::hatch)?;
    let guest_ip = vm
        .network
        .as_ref()
        .map(|n| n.guest_ip)
        .ok_or_else(|| BenchError::Hatch("the VM has no network".into()))?;
    let work = ctx.scratch("hatch-bench-byhand-")?;

    let started = Instant::now();
    let mut disks = Vec::new();
    for disk in &spec.disks {
        let copy = work.path().join(format!("{}.img", disk.id));
        // The root disk starts from the image, as Hatch's did.
        let source = match (&image.rootfs_path, disk.id.as_str()) {
            (Some(rootfs), "rootfs") => rootfs.as_path(),
            _ => disk.path.as_path(),
        };
        crate::copy::cp_sparse(source, &copy).await?;
        disks.push((disk.id.clone(), copy, disk.read_only));
    }
    let qemu = KillOnDrop(launch(&spec, &disks, work.path())?);
    let ready = wait_ssh_port(guest_ip).await;
    let elapsed = started.elapsed();
    drop(qemu);
    ready.map(|()| elapsed)
}

/// The accelerator Hatch would choose here: KVM only with a hardware KVM
/// module (`/dev/kvm` alone may be the nested PVM module).
fn accel() -> Accel {
    let host = hatch::vmm::host::HostFacts::probe();
    if host.dev_kvm_usable && (host.kvm_intel || host.kvm_amd) {
        Accel::Kvm
    } else {
        Accel::Tcg {
            tsc_khz: hatch::vmm::host::tsc_khz(),
        }
    }
}

/// `qemu-system-x86_64` with the options and devices of Hatch's launch,
/// files named directly; the serial log and the guest agent's socket in `dir`.
fn launch(spec: &VmLaunch, disks: &[(String, std::path::PathBuf, bool)], dir: &Path) -> Result<Child, BenchError> {
    let accel = accel();
    let kernel = spec
        .kernel
        .elf
        .as_ref()
        .or(spec.kernel.bzimage.as_ref())
        .ok_or_else(|| BenchError::Hatch("the image has no kernel".into()))?;
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-name", &spec.vm_id, "-M"])
        .arg(format!("microvm,accel={},acpi=on", accel.name()))
        .args(["-cpu", if matches!(accel, Accel::Kvm) { "host" } else { "max" }])
        .args([
            "-smp",
            &spec.vcpu_count.to_string(),
            "-m",
            &format!("{}M", spec.mem_mib),
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-sandbox",
            SANDBOX,
        ])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", &kernel_cmdline(accel, &spec.boot_args)]);
    if let Some(initrd) = &spec.initrd {
        qemu.arg("-initrd").arg(initrd);
    }
    qemu.arg("-serial")
        .arg(format!("file:{}", dir.join("serial.log").display()));
    // The guest agent's port, as Hatch gives every VM (nobody answers on
    // the socket: the guest's agent waits there, as before a daemon's hello).
    qemu.args([
        "-chardev",
        &format!(
            "socket,id=agent,path={},server=on,wait=off",
            dir.join("agent.sock").display()
        ),
        "-device",
        "virtio-serial-device",
        "-device",
        &format!(
            "virtserialport,chardev=agent,name={}",
            hatch_agent_proto::SERIAL_PORT_NAME
        ),
    ]);
    for (id, path, read_only) in disks {
        qemu.arg("-drive")
            .arg(format!(
                "id=disk-{id},file={},format=raw,if=none,readonly={}",
                path.display(),
                if *read_only { "on" } else { "off" }
            ))
            .args(["-device", &format!("virtio-blk-device,drive=disk-{id}")]);
    }
    if let Some(nic) = &spec.nic {
        qemu.args([
            "-netdev",
            &format!("tap,id=net0,ifname={},script=no,downscript=no", nic.tap_name),
            "-device",
            &format!("virtio-net-device,netdev=net0,mac={}", nic.mac),
        ]);
    }
    qemu.stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(BenchError::io("starting qemu-system-x86_64"))
}

/// A hand-started QEMU, killed when the round ends however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Hatch's readiness: a TCP connection to port 22 is accepted.
async fn wait_ssh_port(guest_ip: Ipv4Addr) -> Result<(), BenchError> {
    let target = SocketAddr::from((guest_ip, 22));
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let connected = tokio::time::timeout(PROBE_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await;
        if matches!(connected, Ok(Ok(_))) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout {
                what: format!("{target} to accept connections (QEMU started by hand)"),
                serial_tail: String::new(),
            });
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}
