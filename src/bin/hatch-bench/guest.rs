//! The benchmark's guests: the `minimal` image booted under QEMU TCG with
//! no NIC and no disk, the heartbeat watched on the serial log, and a
//! registry of live VMM handles so that every QEMU is stopped on exit,
//! on error and on Ctrl-C.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use hatch::model::Image;
use hatch::vmm::qemu::args::Accel;
use hatch::vmm::qemu::QemuHypervisor;
use hatch::vmm::{host, KernelFiles, VmHandle, VmLaunch};

use crate::BenchError;

/// What the minimal image prints once its init has finished booting.
const READY_MARKER: &str = "hatch-minimal: ready";
/// What it prints every second when booted with `hatch.heartbeat=1`.
const HEARTBEAT_PREFIX: &str = "hatch-heartbeat ";
/// Serial polling interval: well below the heartbeat's one second.
const POLL: Duration = Duration::from_millis(10);
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);

/// QEMU with software emulation (this benchmark's stated setting).
pub fn qemu_tcg() -> Result<QemuHypervisor, BenchError> {
    let binary = hatch::sys::cmd::find_on_path("qemu-system-x86_64").ok_or(BenchError::QemuMissing)?;
    Ok(QemuHypervisor::new(
        binary,
        Accel::Tcg {
            tsc_khz: host::tsc_khz(),
        },
    ))
}

/// A 256 MiB, one-vCPU launch of `image` with no disks and no network.
pub fn launch_spec(image: &Image, vm_id: &str, run_dir: &Path, mem_mib: u32) -> VmLaunch {
    let boot_args = format!("{} hatch.heartbeat=1", image.boot_args).trim().to_string();
    VmLaunch {
        vm_id: vm_id.to_string(),
        vcpu_count: 1,
        mem_mib,
        kernel: KernelFiles {
            elf: image.kernel_path.clone(),
            bzimage: image.bzimage_path.clone(),
        },
        initrd: image.initrd_path.clone(),
        disks: Vec::new(),
        nic: None,
        boot_args,
        run_dir: run_dir.to_path_buf(),
    }
}

/// The serial log's current length, where "new output" starts.
pub fn serial_len(spec: &VmLaunch) -> usize {
    std::fs::metadata(spec.serial_log_path())
        .map(|m| m.len() as usize)
        .unwrap_or(0)
}

fn serial_since(path: &Path, from: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(bytes.get(from..).unwrap_or_default()).into_owned()
}

/// Waits until the serial log, from byte `from` on, contains `marker`
/// followed by the end of its line.
pub async fn wait_for_line(spec: &VmLaunch, from: usize, marker: &str, timeout: Duration) -> Result<(), BenchError> {
    let path: PathBuf = spec.serial_log_path();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = serial_since(&path, from);
        let complete = text.find(marker).is_some_and(|at| text[at..].contains('\n'));
        if complete {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let tail_start = text.len().saturating_sub(1500);
            return Err(BenchError::Timeout {
                what: format!("{marker:?} on the serial console"),
                serial_tail: text.get(tail_start..).unwrap_or("").to_string(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits for the next heartbeat line printed after byte `from`.
pub async fn wait_for_heartbeat(spec: &VmLaunch, from: usize) -> Result<(), BenchError> {
    wait_for_line(spec, from, HEARTBEAT_PREFIX, HEARTBEAT_TIMEOUT).await
}

/// Waits until a freshly launched guest has booted and is beating.
pub async fn wait_until_booted(spec: &VmLaunch) -> Result<(), BenchError> {
    wait_for_line(spec, 0, READY_MARKER, BOOT_TIMEOUT).await?;
    let from = serial_len(spec);
    wait_for_heartbeat(spec, from).await
}

/// Every VMM handle that is alive, so none outlives the benchmark.
#[derive(Default, Clone)]
pub struct Guests {
    live: Arc<Mutex<HashMap<u64, Arc<dyn VmHandle>>>>,
    next: Arc<AtomicU64>,
}

/// A registered VMM; hand it back to [`Guests::stop`].
pub struct Guest {
    key: u64,
    pub handle: Arc<dyn VmHandle>,
}

impl Guests {
    pub async fn register(&self, handle: Box<dyn VmHandle>) -> Guest {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let handle: Arc<dyn VmHandle> = Arc::from(handle);
        self.live.lock().await.insert(key, handle.clone());
        Guest { key, handle }
    }

    /// Kills the VMM at once (the benchmark never needs a graceful stop).
    pub async fn stop(&self, guest: Guest) {
        self.live.lock().await.remove(&guest.key);
        guest.handle.stop(Duration::ZERO).await;
    }

    /// Kills every VMM still registered.
    pub async fn stop_all(&self) {
        let handles: Vec<_> = self.live.lock().await.drain().map(|(_, h)| h).collect();
        for handle in handles {
            handle.stop(Duration::ZERO).await;
        }
    }
}
