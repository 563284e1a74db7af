//! Firecracker backend controlled over its API socket.
//!
//! One process per VM with its API socket in the VM's run directory; the
//! guest's serial console is Firecracker's stdout, which goes to serial.log.
//! Snapshots are Full snapshots; a restore loads one into a fresh process.
//! Every VM has a vsock device for its guest agent (see [`vsock`]).

pub mod api;
pub mod api_client;
mod handle;
pub mod jail;
pub mod vsock;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use self::api::*;
use self::handle::FirecrackerVm;
use self::jail::{Jailer, JAILED_API_SOCKET};
use self::vsock::{GUEST_CID, VSOCK_SOCKET};
use super::kernel::inspect_kernel;
use super::supervisor::{prepare_run_dir, SpawnSpec, VmmProcess, PID_FILE};
use super::{validate, AgentEndpoint, Hypervisor, HypervisorKind, SnapshotFiles, VmHandle, VmLaunch, VmmError};
use crate::model::KernelFormat;

pub const API_SOCKET: &str = "firecracker.sock";
/// Firecracker's own log (it rewrites the file from the start, so each process gets a fresh one).
pub const FIRECRACKER_LOG: &str = "firecracker.log";
/// Firecracker's limit on vCPUs.
const MAX_VCPUS: u32 = 32;
const API_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The start of every guest command line: Firecracker's default would
/// disable the serial console, and `boot_args` replaces it entirely.
const BASE_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1";

pub struct FirecrackerHypervisor {
    binary: PathBuf,
    netns: Option<PathBuf>,
    jailer: Option<Jailer>,
}

/// Where a launch's files are, as the Firecracker process sees them.
struct Placed {
    spec: VmLaunch,
    kernel: Option<PathBuf>,
    snapshot: Option<SnapshotFiles>,
    /// The jail's root on the host, when jailed.
    root: Option<PathBuf>,
    /// The vsock device's `uds_path`.
    vsock_uds: PathBuf,
}

impl FirecrackerHypervisor {
    pub fn new(binary: PathBuf) -> Self {
        FirecrackerHypervisor {
            binary,
            netns: None,
            jailer: None,
        }
    }

    /// Runs every Firecracker under its jailer (see [`jail`]).
    pub fn jailed(mut self, jailer: Option<Jailer>) -> Self {
        self.jailer = jailer;
        self
    }

    /// Puts the launch's files into the jail (a no-op when not jailed).
    fn place(
        &self,
        spec: &VmLaunch,
        kernel: Option<&Path>,
        snapshot: Option<&SnapshotFiles>,
    ) -> Result<Placed, VmmError> {
        let Some(jailer) = &self.jailer else {
            return Ok(Placed {
                spec: spec.clone(),
                kernel: kernel.map(Path::to_path_buf),
                snapshot: snapshot.cloned(),
                root: None,
                vsock_uds: spec.run_dir.join(VSOCK_SOCKET),
            });
        };
        let root = jailer.prepare(&spec.vm_id, &self.binary)?;
        let mut placed = spec.clone();
        let kernel = kernel.map(|k| jailer.place(&root, k, "vmlinux", false)).transpose()?;
        placed.initrd = spec
            .initrd
            .as_deref()
            .map(|i| jailer.place(&root, i, "initrd", false))
            .transpose()?;
        for disk in &mut placed.disks {
            disk.path = jailer.place(&root, &disk.path, &format!("disk-{}", disk.id), !disk.read_only)?;
        }
        let snapshot = match snapshot {
            Some(files) => Some(SnapshotFiles {
                state: jailer.place(&root, &files.state, "restore.vmstate", false)?,
                memory: files
                    .memory
                    .as_deref()
                    .map(|m| jailer.place(&root, m, "restore.memory", false))
                    .transpose()?,
            }),
            None => None,
        };
        Ok(Placed {
            spec: placed,
            kernel,
            snapshot,
            root: Some(root),
            vsock_uds: PathBuf::from("/").join(VSOCK_SOCKET),
        })
    }

    /// Runs every VMM of this backend in a network namespace (name or path),
    /// where their TAP devices live; tests use it to stay off the host network.
    pub fn in_netns(mut self, name_or_path: &str) -> Self {
        self.netns = Some(super::supervisor::netns_path(name_or_path));
        self
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The host path of the vsock device's `uds_path` for `spec`.
    fn host_vsock_uds(&self, spec: &VmLaunch) -> PathBuf {
        match &self.jailer {
            Some(jailer) => jailer.root(&spec.vm_id, &self.binary).join(VSOCK_SOCKET),
            None => spec.run_dir.join(VSOCK_SOCKET),
        }
    }

    /// Starts a jailed Firecracker: runs the jailer, which leaves
    /// Firecracker running in a new PID namespace, then supervises that.
    async fn spawn_jailed(
        &self,
        jailer: &Jailer,
        spec: &VmLaunch,
        root: &Path,
    ) -> Result<(VmmProcess, FirecrackerApi), VmmError> {
        if self.netns.is_none() {
            validate::check_tap_exists(spec)?;
        }
        prepare_run_dir(&spec.run_dir, &jailed_marker(spec), &[PID_FILE])?;
        tracing::info!(vm = %spec.vm_id, jail = %root.display(), user = %jailer.user.name, "starting Firecracker under its jailer");
        let launcher = VmmProcess::spawn(SpawnSpec {
            program: &jailer.binary,
            args: jailer.args(spec, &self.binary),
            run_dir: &spec.run_dir,
            stdout: spec.serial_log_path(),
            netns: self.netns.as_deref(),
            user: None,
            pass_fds: &[],
            cgroup: None,
        })
        .await?;
        let report = launcher
            .wait_exit_timeout(API_READY_TIMEOUT)
            .await
            .ok_or_else(|| VmmError::Timeout {
                what: "the jailer to start Firecracker".into(),
            })?;
        if report.code != Some(0) {
            return Err(with_firecracker_log(launcher.early_exit_error(report), root));
        }
        let pid_file = root.join("firecracker.pid");
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| VmmError::Control(format!("the jailer left no pid in {}", pid_file.display())))?;
        let process = VmmProcess::adopt(pid, &spec.run_dir, &jailed_marker(spec))?;
        let pid_path = spec.run_dir.join(PID_FILE);
        if let Err(source) = std::fs::write(&pid_path, format!("{pid}\n")) {
            process.kill_and_reap().await;
            return Err(VmmError::Io { path: pid_path, source });
        }
        let api = FirecrackerApi::new(root.join(JAILED_API_SOCKET.trim_start_matches('/')));
        wait_for_api(process, api, root).await
    }

    /// Starts Firecracker (jailed when configured) for the placed launch.
    async fn start(&self, placed: &Placed) -> Result<(VmmProcess, FirecrackerApi), VmmError> {
        match (&self.jailer, &placed.root) {
            (Some(jailer), Some(root)) => self.spawn_jailed(jailer, &placed.spec, root).await,
            _ => self.spawn(&placed.spec).await,
        }
    }

    /// Starts a Firecracker process for `spec` and waits for its API.
    async fn spawn(&self, spec: &VmLaunch) -> Result<(VmmProcess, FirecrackerApi), VmmError> {
        if self.netns.is_none() {
            validate::check_tap_exists(spec)?;
        }
        let socket = spec.run_dir.join(API_SOCKET);
        prepare_run_dir(
            &spec.run_dir,
            &marker(&socket),
            // A stale vsock socket would make the device (or a restore) fail to bind.
            &[API_SOCKET, PID_FILE, FIRECRACKER_LOG, VSOCK_SOCKET],
        )?;
        let args: Vec<OsString> = vec![
            "--api-sock".into(),
            socket.clone().into(),
            "--id".into(),
            spec.vm_id.clone().into(),
            "--log-path".into(),
            spec.run_dir.join(FIRECRACKER_LOG).into(),
            "--level".into(),
            "Warning".into(),
        ];
        tracing::info!(vm = %spec.vm_id, "starting Firecracker");
        let process = VmmProcess::spawn(SpawnSpec {
            program: &self.binary,
            args,
            run_dir: &spec.run_dir,
            stdout: spec.serial_log_path(),
            netns: self.netns.as_deref(),
            user: None,
            pass_fds: &[],
            cgroup: super::cgroup::for_launch(spec)?,
        })
        .await?;
        wait_for_api(process, FirecrackerApi::new(socket), &spec.run_dir).await
    }

    /// A fresh Firecracker with `snapshot` loaded (its memory file mapped),
    /// the guest resumed only when `resume` says so.
    async fn load_snapshot(
        &self,
        spec: &VmLaunch,
        snapshot: &SnapshotFiles,
        resume: bool,
    ) -> Result<Box<dyn VmHandle>, VmmError> {
        check_spec(spec)?;
        let Some(memory) = snapshot.memory.clone() else {
            return Err(VmmError::InvalidLaunch(
                "a Firecracker snapshot needs its memory file".into(),
            ));
        };
        for path in [&snapshot.state, &memory] {
            std::fs::metadata(path).map_err(|source| VmmError::Io {
                path: path.clone(),
                source,
            })?;
        }
        let placed = self.place(spec, None, Some(snapshot))?;
        let (state, memory) = match &placed.snapshot {
            Some(SnapshotFiles {
                state,
                memory: Some(memory),
            }) => (state.clone(), memory.clone()),
            _ => (snapshot.state.clone(), memory),
        };
        let (process, api) = self.start(&placed).await?;
        let load = SnapshotLoad {
            snapshot_path: state,
            mem_backend: MemBackend {
                backend_type: MemBackendType::File,
                backend_path: memory,
            },
            resume_vm: resume,
            network_overrides: spec
                .nic
                .iter()
                .map(|nic| NetworkOverride {
                    iface_id: IFACE_ID.into(),
                    host_dev_name: nic.tap_name.clone(),
                })
                .collect(),
            vsock_override: VsockOverride {
                uds_path: placed.vsock_uds.clone(),
            },
        };
        process.startup(api.put_snapshot("/snapshot/load", &load)).await?;
        Ok(Box::new(FirecrackerVm::new(process, api).jailed(placed.root)))
    }
}

/// A jailed Firecracker's command line is `/firecracker --id <vm id> ...`
/// (no host path appears in it).
fn jailed_marker(spec: &VmLaunch) -> String {
    spec.vm_id.clone()
}

/// Text identifying a VM's Firecracker in its command line: its API socket path.
fn marker(socket: &Path) -> String {
    socket.display().to_string()
}

/// Firecracker reports start-up problems in its own log (in `dir`, the run
/// directory or the jail's root): add them to the error.
/// Waits until a just-started Firecracker answers on its API socket; on
/// failure the error carries the tail of its log (in `log_dir`).
async fn wait_for_api(
    process: VmmProcess,
    api: FirecrackerApi,
    log_dir: &Path,
) -> Result<(VmmProcess, FirecrackerApi), VmmError> {
    let probe = api.clone();
    process
        .startup(process.wait_until("Firecracker's API socket", API_READY_TIMEOUT, || {
            let probe = probe.clone();
            async move { probe.instance_info().await.ok() }
        }))
        .await
        .map_err(|e| with_firecracker_log(e, log_dir))?;
    Ok((process, api))
}

fn with_firecracker_log(error: VmmError, dir: &Path) -> VmmError {
    match error {
        VmmError::EarlyExit { code, serial_tail } => {
            let log = crate::sys::process::tail(&dir.join(FIRECRACKER_LOG), 1024);
            VmmError::EarlyExit {
                code,
                serial_tail: format!("{}\n{serial_tail}", log.trim()).trim().to_string(),
            }
        }
        other => other,
    }
}

/// Validates `spec` for Firecracker: on x86_64 it boots an ELF vmlinux only.
fn check_spec(spec: &VmLaunch) -> Result<PathBuf, VmmError> {
    validate::check_launch(spec)?;
    if spec.vcpu_count > MAX_VCPUS {
        return Err(VmmError::InvalidLaunch(format!(
            "Firecracker supports at most {MAX_VCPUS} vCPUs"
        )));
    }
    let unsupported = |detail: String| VmmError::UnsupportedKernel {
        hypervisor: "firecracker",
        detail,
    };
    let Some(elf) = &spec.kernel.elf else {
        return Err(unsupported(
            "it boots only an ELF vmlinux and the image has none".into(),
        ));
    };
    match inspect_kernel(elf) {
        Ok(info) if info.format == KernelFormat::Elf => Ok(elf.clone()),
        Ok(_) => Err(unsupported(format!(
            "{} is a bzImage, not an ELF vmlinux",
            elf.display()
        ))),
        Err(e) => Err(unsupported(e.to_string())),
    }
}

/// Configures devices and boots: machine, boot source, drives, network,
/// the agent's vsock, start.
async fn configure_and_start(api: &FirecrackerApi, placed: &Placed, kernel: PathBuf) -> Result<(), VmmError> {
    let spec = &placed.spec;
    api.put(
        "/machine-config",
        &MachineConfig {
            vcpu_count: spec.vcpu_count,
            mem_size_mib: spec.mem_mib,
            smt: false,
        },
    )
    .await?;
    let boot_args = format!("{BASE_BOOT_ARGS} {}", spec.boot_args.trim())
        .trim_end()
        .to_string();
    api.put(
        "/boot-source",
        &BootSource {
            kernel_image_path: kernel,
            boot_args,
            initrd_path: spec.initrd.clone(),
        },
    )
    .await?;
    for disk in &spec.disks {
        let drive = Drive {
            drive_id: disk.id.clone(),
            path_on_host: disk.path.clone(),
            is_root_device: false,
            is_read_only: disk.read_only,
        };
        api.put(&format!("/drives/{}", disk.id), &drive).await?;
    }
    if let Some(nic) = &spec.nic {
        let iface = NetworkInterface {
            iface_id: IFACE_ID.into(),
            host_dev_name: nic.tap_name.clone(),
            guest_mac: nic.mac.clone(),
        };
        api.put(&format!("/network-interfaces/{IFACE_ID}"), &iface).await?;
    }
    api.put(
        "/vsock",
        &Vsock {
            guest_cid: GUEST_CID,
            uds_path: placed.vsock_uds.clone(),
        },
    )
    .await?;
    api.put(
        "/actions",
        &Action {
            action_type: ActionType::InstanceStart,
        },
    )
    .await
}

#[async_trait]
impl Hypervisor for FirecrackerHypervisor {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Firecracker
    }

    async fn launch(&self, spec: &VmLaunch) -> Result<Box<dyn VmHandle>, VmmError> {
        let kernel = check_spec(spec)?;
        let placed = self.place(spec, Some(&kernel), None)?;
        let (process, api) = self.start(&placed).await?;
        let kernel = placed.kernel.clone().unwrap_or(kernel);
        process.startup(configure_and_start(&api, &placed, kernel)).await?;
        Ok(Box::new(FirecrackerVm::new(process, api).jailed(placed.root)))
    }

    async fn restore(&self, spec: &VmLaunch, snapshot: &SnapshotFiles) -> Result<Box<dyn VmHandle>, VmmError> {
        self.load_snapshot(spec, snapshot, true).await
    }

    async fn restore_paused(&self, spec: &VmLaunch, snapshot: &SnapshotFiles) -> Result<Box<dyn VmHandle>, VmmError> {
        self.load_snapshot(spec, snapshot, false).await
    }

    async fn adopt(&self, spec: &VmLaunch, pid: u32) -> Result<Box<dyn VmHandle>, VmmError> {
        if let Some(jailer) = &self.jailer {
            let root = jailer.root(&spec.vm_id, &self.binary);
            let process = VmmProcess::adopt(pid, &spec.run_dir, &jailed_marker(spec))?;
            let api = FirecrackerApi::new(root.join(JAILED_API_SOCKET.trim_start_matches('/')));
            api.instance_info().await?;
            return Ok(Box::new(FirecrackerVm::new(process, api).jailed(Some(root))));
        }
        let socket = spec.run_dir.join(API_SOCKET);
        let process = VmmProcess::adopt(pid, &spec.run_dir, &marker(&socket))?;
        let api = FirecrackerApi::new(socket);
        api.instance_info().await?;
        Ok(Box::new(FirecrackerVm::new(process, api)))
    }

    fn agent_endpoint(&self, spec: &VmLaunch) -> AgentEndpoint {
        AgentEndpoint::Listen(vsock::listen_path(&self.host_vsock_uds(spec)))
    }

    fn agent_transport(&self) -> &'static str {
        vsock::AGENT_TRANSPORT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::privilege::VmmUser;

    fn spec() -> VmLaunch {
        VmLaunch::bare("vm-a", "/run/hatch/vms/vm-a")
    }

    #[test]
    fn the_agent_listens_next_to_the_vsock_socket() {
        let plain = FirecrackerHypervisor::new("/opt/fc/firecracker".into());
        assert_eq!(
            plain.agent_endpoint(&spec()),
            AgentEndpoint::Listen("/run/hatch/vms/vm-a/vsock.sock_1024".into())
        );
        assert_eq!(plain.agent_transport(), "vsock");
    }

    #[test]
    fn a_jailed_agent_socket_is_in_the_jail() {
        let jailed = FirecrackerHypervisor::new("/opt/fc/firecracker".into()).jailed(Some(Jailer {
            binary: "/opt/fc/jailer".into(),
            chroot_base: "/var/lib/hatch/jail".into(),
            user: VmmUser {
                name: "hatch-vmm".into(),
                uid: 990,
                gid: 990,
                groups: Vec::new(),
            },
        }));
        assert_eq!(
            jailed.agent_endpoint(&spec()),
            AgentEndpoint::Listen("/var/lib/hatch/jail/firecracker/vm-a/root/vsock.sock_1024".into())
        );
    }
}
