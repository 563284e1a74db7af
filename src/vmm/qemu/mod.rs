//! QEMU `microvm` backend controlled over QMP.
//!
//! KVM where the host has hardware virtualisation, TCG otherwise. Saving
//! state uses migration to a file (QEMU 7.2 has no `file:` URI, so
//! `exec:cat > FILE`); restoring starts the identical command line with
//! `-incoming`, waits for the state to load, then continues.
//!
//! The guest agent's transport here is a virtio-serial port
//! (`org.hatch.agent.0`), not vsock: QEMU's vsock devices are
//! `vhost-vsock`, which needs the host's `/dev/vhost-vsock` (absent on these
//! hosts and wherever the vhost_vsock module is not loaded), and, in QEMU 7.2,
//! `vhost-user-vsock`, which is marked unmigratable and so would make every
//! VM impossible to snapshot. A virtio-serial port migrates with the rest of
//! the machine, works under TCG, and needs nothing from the host kernel. Its
//! chardev is a Unix socket QEMU serves (`<run dir>/agent.sock`, bound by the
//! daemon and passed as a descriptor like the QMP socket) and the daemon
//! connects to; a restored QEMU gets the same port from the same argv.

pub mod args;
pub mod fds;
mod handle;
pub mod qmp;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use self::args::{Accel, AGENT_SOCKET, QMP_SOCKET};
use self::fds::{QemuFds, SocketPaths};
use self::handle::QemuVm;
use self::qmp::Qmp;
use super::kernel::{inspect_kernel, KernelInfo};
use super::privilege::VmmUser;
use super::supervisor::{prepare_run_dir, SpawnSpec, VmmProcess, PID_FILE};
use super::{validate, AgentEndpoint, Hypervisor, HypervisorKind, SnapshotFiles, VmHandle, VmLaunch, VmmError};
use crate::model::KernelFormat;

/// How long QEMU may take to open its QMP socket.
const QMP_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long loading saved state may take (RAM size over disk speed).
const INCOMING_TIMEOUT: Duration = Duration::from_secs(300);

pub struct QemuHypervisor {
    binary: PathBuf,
    accel: Accel,
    netns: Option<PathBuf>,
    /// The unprivileged user QEMU runs as; None: the daemon's own user.
    user: Option<VmmUser>,
}

impl QemuHypervisor {
    pub fn new(binary: PathBuf, accel: Accel) -> Self {
        QemuHypervisor {
            binary,
            accel,
            netns: None,
            user: None,
        }
    }

    /// Runs every QEMU as `user` (see `vmm::privilege`).
    pub fn run_as(mut self, user: Option<VmmUser>) -> Self {
        self.user = user;
        self
    }

    /// Runs every VMM of this backend in a network namespace (name or path),
    /// where their TAP devices live; tests use it to stay off the host network.
    pub fn in_netns(mut self, name_or_path: &str) -> Self {
        self.netns = Some(super::supervisor::netns_path(name_or_path));
        self
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Spawns QEMU for `spec` (optionally loading the state read from
    /// `incoming`) and returns once QMP answers.
    async fn spawn(&self, spec: &VmLaunch, incoming: Option<OwnedFd>) -> Result<(VmmProcess, Qmp), VmmError> {
        validate::check_launch(spec)?;
        if self.netns.is_none() {
            validate::check_tap_exists(spec)?;
        }
        let kernel = pick_kernel(spec)?;
        let qmp_path = spec.run_dir.join(QMP_SOCKET);
        prepare_run_dir(&spec.run_dir, &marker(spec), &[QMP_SOCKET, AGENT_SOCKET, PID_FILE])?;
        restrict_run_dir(&spec.run_dir)?;
        let sockets = SocketPaths {
            qmp: qmp_path.clone(),
            agent: spec.run_dir.join(AGENT_SOCKET),
        };
        let fds = QemuFds::open(spec, &kernel, &sockets, self.netns.as_deref(), incoming)?;
        let argv = args::build(spec, self.accel, &fds.numbers())?;
        tracing::info!(vm = %spec.vm_id, accel = self.accel.name(), kernel = %kernel.display(), user = ?self.user.as_ref().map(|u| &u.name), "starting QEMU");
        let pass_fds = fds.all();
        let process = VmmProcess::spawn(SpawnSpec {
            program: &self.binary,
            args: argv,
            run_dir: &spec.run_dir,
            stdout: spec.run_dir.join(super::supervisor::VMM_LOG),
            netns: self.netns.as_deref(),
            user: self.user.as_ref(),
            pass_fds: &pass_fds,
            cgroup: super::cgroup::for_launch(spec)?,
        })
        .await?;
        // QEMU holds its copies now.
        drop(fds);
        let qmp = process
            .startup(process.wait_until("QEMU's QMP socket", QMP_READY_TIMEOUT, || {
                let path = qmp_path.clone();
                async move { Qmp::connect(&path).await.ok() }
            }))
            .await?;
        Ok((process, qmp))
    }
}

impl QemuHypervisor {
    /// A fresh QEMU with `snapshot`'s state loaded from its file, paused.
    async fn load_saved(&self, spec: &VmLaunch, snapshot: &SnapshotFiles) -> Result<QemuVm, VmmError> {
        let state = std::fs::File::open(&snapshot.state).map_err(|source| VmmError::Io {
            path: snapshot.state.clone(),
            source,
        })?;
        self.load_incoming(spec, state.into()).await
    }

    /// Spawns QEMU loading the state read from `incoming` and returns once
    /// it is loaded, the guest paused (QEMU starts it with `-S`).
    async fn load_incoming(&self, spec: &VmLaunch, incoming: OwnedFd) -> Result<QemuVm, VmmError> {
        let (process, qmp) = self.spawn(spec, Some(incoming)).await?;
        let vm = QemuVm::new(process, spec.run_dir.join(QMP_SOCKET), Some(qmp));
        vm.process().startup(vm.wait_incoming_loaded(INCOMING_TIMEOUT)).await?;
        Ok(vm)
    }
}

/// The text identifying a VM's QEMU in its command line: its serial log
/// path (the `opaque` of its `-add-fd`; earlier versions named it in
/// `logfile=`, so their QEMUs are adopted too).
fn marker(spec: &VmLaunch) -> String {
    spec.serial_log_path().display().to_string()
}

/// The run directory is root's alone (0700): QEMU, running as the VMM user,
/// gets descriptors for what it needs and must not reach other VMs' files.
fn restrict_run_dir(run_dir: &Path) -> Result<(), VmmError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| VmmError::Io {
        path: run_dir.to_path_buf(),
        source,
    })
}

/// QEMU boots an ELF vmlinux only through its PVH entry note; otherwise the bzImage.
fn pick_kernel(spec: &VmLaunch) -> Result<PathBuf, VmmError> {
    let mut reasons = Vec::new();
    for path in [&spec.kernel.elf, &spec.kernel.bzimage].into_iter().flatten() {
        match inspect_kernel(path) {
            Ok(KernelInfo {
                format: KernelFormat::Bzimage,
                ..
            })
            | Ok(KernelInfo { pvh_entry: true, .. }) => return Ok(path.clone()),
            Ok(_) => reasons.push(format!("{} is an ELF without a PVH entry note", path.display())),
            Err(e) => reasons.push(e.to_string()),
        }
    }
    if reasons.is_empty() {
        reasons.push("no kernel file given".into());
    }
    Err(VmmError::UnsupportedKernel {
        hypervisor: "qemu",
        detail: reasons.join("; "),
    })
}

#[async_trait]
impl Hypervisor for QemuHypervisor {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Qemu
    }

    async fn launch(&self, spec: &VmLaunch) -> Result<Box<dyn VmHandle>, VmmError> {
        let (process, qmp) = self.spawn(spec, None).await?;
        Ok(Box::new(QemuVm::new(process, spec.run_dir.join(QMP_SOCKET), Some(qmp))))
    }

    async fn restore(&self, spec: &VmLaunch, snapshot: &SnapshotFiles) -> Result<Box<dyn VmHandle>, VmmError> {
        let vm = self.load_saved(spec, snapshot).await?;
        vm.process().startup(vm.resume()).await?;
        Ok(Box::new(vm))
    }

    async fn restore_paused(&self, spec: &VmLaunch, snapshot: &SnapshotFiles) -> Result<Box<dyn VmHandle>, VmmError> {
        Ok(Box::new(self.load_saved(spec, snapshot).await?))
    }

    fn loads_streamed_state(&self) -> bool {
        true
    }

    async fn restore_paused_from_stream(
        &self,
        spec: &VmLaunch,
        incoming: OwnedFd,
    ) -> Result<Box<dyn VmHandle>, VmmError> {
        Ok(Box::new(self.load_incoming(spec, incoming).await?))
    }

    async fn adopt(&self, spec: &VmLaunch, pid: u32) -> Result<Box<dyn VmHandle>, VmmError> {
        let qmp_path = spec.run_dir.join(QMP_SOCKET);
        let process = VmmProcess::adopt(pid, &spec.run_dir, &marker(spec))?;
        // The previous daemon's QMP connection closed with it; QEMU accepts a new one.
        let qmp = Qmp::connect(&qmp_path).await?;
        Ok(Box::new(QemuVm::new(process, qmp_path, Some(qmp))))
    }

    /// QEMU keeps serving the socket it was given, across daemon restarts.
    fn agent_endpoint(&self, spec: &VmLaunch) -> AgentEndpoint {
        AgentEndpoint::Connect(spec.run_dir.join(AGENT_SOCKET))
    }

    fn agent_transport(&self) -> &'static str {
        AGENT_TRANSPORT
    }
}

/// The agent transport's name (see the module comment for why not vsock).
pub const AGENT_TRANSPORT: &str = "virtio-serial";

/// Why QEMU VMs get a virtio-serial port and not vsock, for `hatch doctor`.
pub const AGENT_TRANSPORT_WHY: &str =
    "QEMU 7.2's vhost-user-vsock is unmigratable (no VM could be snapshotted) and vhost-vsock needs /dev/vhost-vsock";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_connects_to_the_agent_socket_in_the_run_dir() {
        let spec = VmLaunch::bare("vm-a", "/run/hatch/vms/vm-a");
        let qemu = QemuHypervisor::new("/usr/bin/qemu-system-x86_64".into(), Accel::Kvm);
        assert_eq!(
            qemu.agent_endpoint(&spec),
            AgentEndpoint::Connect("/run/hatch/vms/vm-a/agent.sock".into())
        );
        assert_eq!(qemu.agent_transport(), "virtio-serial");
    }
}
