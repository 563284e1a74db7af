//! Hypervisor backends: one trait, two real implementations (Firecracker and
//! QEMU `microvm`), each spawning and supervising one process per VM.
//!
//! A backend never touches the database; orchestration tells it what to run
//! (`VmLaunch`) and keeps the returned handle for the VM's lifetime.
//!
//! - `qemu`, `firecracker`: the two backends (QMP; HTTP API over a unix socket).
//! - `supervisor`: the VMM process shared by both: own session, pid file,
//!   reaping, exit reports, adoption after a daemon restart.
//! - `validate`, `kernel`: checks of a launch before any process starts.
//! - `host`, `select`: host facts (KVM kind, TSC) and the backend choice with
//!   its `hatch doctor` checks.
//!
//! Every VM also gets a device for its guest agent (one byte stream, see
//! `crates/agent-proto`); [`Hypervisor::agent_endpoint`] says where the
//! daemon meets it on the host.

pub mod cgroup;
pub mod firecracker;
pub mod host;
pub mod kernel;
pub mod privilege;
pub mod qemu;
pub mod select;
pub mod supervisor;
pub mod validate;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorKind {
    Firecracker,
    Qemu,
}

impl HypervisorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HypervisorKind::Firecracker => "firecracker",
            HypervisorKind::Qemu => "qemu",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "firecracker" => Some(HypervisorKind::Firecracker),
            "qemu" => Some(HypervisorKind::Qemu),
            _ => None,
        }
    }
}

/// The kernel files an image offers; each backend picks the one it can boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFiles {
    /// ELF vmlinux (Firecracker needs this on x86_64; QEMU boots it via PVH).
    pub elf: Option<PathBuf>,
    /// bzImage (QEMU only).
    pub bzimage: Option<PathBuf>,
}

/// A disk attached to the guest as virtio-blk, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Stable id (Firecracker `drive_id`, QEMU device id), e.g. `rootfs`, `seed`.
    pub id: String,
    pub path: PathBuf,
    pub read_only: bool,
}

/// One network interface backed by a TAP device that already exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub tap_name: String,
    pub mac: String,
}

/// Everything a backend needs to run one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmLaunch {
    pub vm_id: String,
    pub vcpu_count: u32,
    pub mem_mib: u32,
    pub kernel: KernelFiles,
    pub initrd: Option<PathBuf>,
    /// Disks in attachment order; the first is the root disk when the image has one.
    pub disks: Vec<DiskSpec>,
    pub nic: Option<NicSpec>,
    /// Extra kernel command line from the image (already validated);
    /// the backend adds console and platform arguments itself.
    pub boot_args: String,
    /// Per-VM runtime directory: API/QMP socket, serial log, pid file.
    pub run_dir: PathBuf,
}

impl VmLaunch {
    pub fn serial_log_path(&self) -> PathBuf {
        self.run_dir.join("serial.log")
    }

    /// A launch with no kernel, disks or network, for unit tests of what
    /// depends only on the VM's id and run directory.
    #[cfg(test)]
    pub fn bare(vm_id: &str, run_dir: &str) -> Self {
        VmLaunch {
            vm_id: vm_id.into(),
            vcpu_count: 1,
            mem_mib: 128,
            kernel: KernelFiles {
                elf: None,
                bzimage: None,
            },
            initrd: None,
            disks: Vec::new(),
            nic: None,
            boot_args: String::new(),
            run_dir: run_dir.into(),
        }
    }
}

/// Where the daemon meets a VM's guest agent (see crates/agent-proto).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// The daemon listens on this Unix socket and the guest's connections arrive on it (Firecracker vsock: `<uds_path>_1024`).
    Listen(PathBuf),
    /// The VMM serves this Unix socket and the daemon connects to it (QEMU virtio-serial chardev).
    Connect(PathBuf),
}

/// Files produced by saving a paused VM; restore needs all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFiles {
    /// Device/VM state (Firecracker `snapshot_path`; QEMU migration stream incl. RAM).
    pub state: PathBuf,
    /// Guest memory (Firecracker only).
    pub memory: Option<PathBuf>,
}

/// How a VMM process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    /// Exit code when known (unknown for a process adopted after a daemon restart).
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The last lines of the serial console.
    pub serial_tail: String,
}

impl ExitReport {
    /// A clean guest-initiated shutdown (exit code 0).
    pub fn is_clean(&self) -> bool {
        self.code == Some(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("{binary} not found: {hint}")]
    BinaryMissing { binary: String, hint: String },
    #[error("the image has no kernel that {hypervisor} can boot ({detail})")]
    UnsupportedKernel { hypervisor: &'static str, detail: String },
    #[error("failed to start the VMM process: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the VMM exited during start-up (code {code:?}): {serial_tail}")]
    EarlyExit { code: Option<i32>, serial_tail: String },
    #[error("timed out waiting for {what}")]
    Timeout { what: String },
    #[error("VMM control channel error: {0}")]
    Control(String),
    #[error("the VMM rejected {request}: {message}")]
    Rejected { request: String, message: String },
    #[error("process {pid} is not a live VMM for this VM")]
    NotAdoptable { pid: u32 },
    #[error("invalid VM launch: {0}")]
    InvalidLaunch(String),
    #[error("a VMM (pid {pid}) is already running for this VM")]
    AlreadyRunning { pid: u32 },
    #[error("{hypervisor} cannot run on this host: {reason}")]
    HypervisorUnavailable { hypervisor: &'static str, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A hypervisor backend.
#[async_trait]
pub trait Hypervisor: Send + Sync {
    fn kind(&self) -> HypervisorKind;

    /// Spawns a VMM process, configures it and boots the guest.
    /// The process must survive the daemon's own exit (it is adopted again
    /// on restart) and must not be left behind if launch fails.
    async fn launch(&self, spec: &VmLaunch) -> Result<Box<dyn VmHandle>, VmmError>;

    /// Spawns a fresh VMM process and loads a saved snapshot into it, then resumes.
    /// `spec` must describe the same devices (disk paths, TAP name) as when saved.
    async fn restore(&self, spec: &VmLaunch, snapshot: &SnapshotFiles) -> Result<Box<dyn VmHandle>, VmmError>;

    /// Like [`Self::restore`] but returns with the guest still paused, so
    /// that the caller can verify the files while the VMM loads them and
    /// resume only once they match. The process is not left behind if
    /// loading fails.
    async fn restore_paused(&self, spec: &VmLaunch, snapshot: &SnapshotFiles) -> Result<Box<dyn VmHandle>, VmmError>;

    /// Whether [`Self::restore_paused_from_stream`] works: the VMM reads
    /// its saved state as a stream (QEMU's incoming migration), not as
    /// files it maps (Firecracker's memory file).
    fn loads_streamed_state(&self) -> bool {
        false
    }

    /// Spawns a fresh VMM that loads its saved state from `incoming` (the
    /// read end of a pipe the caller fills while it loads) and returns once
    /// all of it is loaded, the guest paused: the caller resumes it only
    /// after it has verified what it wrote. The process is not left behind
    /// if loading fails.
    async fn restore_paused_from_stream(
        &self,
        spec: &VmLaunch,
        incoming: OwnedFd,
    ) -> Result<Box<dyn VmHandle>, VmmError> {
        let _ = (spec, incoming);
        Err(VmmError::InvalidLaunch(format!(
            "{} cannot load a streamed state",
            self.kind().as_str()
        )))
    }

    /// Takes over a VMM process started earlier (possibly by a previous daemon).
    async fn adopt(&self, spec: &VmLaunch, pid: u32) -> Result<Box<dyn VmHandle>, VmmError>;

    /// Where the daemon meets the guest agent of the VM `spec` describes
    /// (derived from the spec alone; the same for launch, restore and adopt).
    fn agent_endpoint(&self, spec: &VmLaunch) -> AgentEndpoint;

    /// The agent transport's name for people (`vsock`, `virtio-serial`).
    fn agent_transport(&self) -> &'static str;
}

/// A running VMM process.
#[async_trait]
pub trait VmHandle: Send + Sync {
    fn pid(&self) -> u32;
    async fn pause(&self) -> Result<(), VmmError>;
    async fn resume(&self) -> Result<(), VmmError>;
    /// Saves the paused VM's full state into `dir`. The VM stays paused.
    async fn save_snapshot(&self, dir: &Path) -> Result<SnapshotFiles, VmmError>;
    /// Asks the guest to shut down, kills the process after `grace`, and
    /// returns once it is gone (reaped when it is our child).
    async fn stop(&self, grace: Duration) -> ExitReport;
    /// Resolves when the process exits (within a second of it exiting).
    /// May be awaited concurrently with the other methods.
    async fn wait_exit(&self) -> ExitReport;
}

/// Common helper: the serial log tail used in exit reports.
pub fn serial_tail(run_dir: &Path) -> String {
    crate::sys::process::tail(&run_dir.join("serial.log"), 2048)
}

/// The default grace period between asking the guest to stop and killing it.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
