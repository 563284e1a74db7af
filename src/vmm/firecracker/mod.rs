//! Firecracker backend controlled over its API socket.
//!
//! One process per VM with its API socket in the VM's run directory; the
//! guest's serial console is Firecracker's stdout, which goes to serial.log.
//! Snapshots are Full snapshots; a restore loads one into a fresh process.

pub mod api;
pub mod api_client;
mod handle;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use self::api::*;
use self::handle::FirecrackerVm;
use super::kernel::inspect_kernel;
use super::supervisor::{prepare_run_dir, SpawnSpec, VmmProcess, PID_FILE};
use super::{validate, Hypervisor, HypervisorKind, SnapshotFiles, VmHandle, VmLaunch, VmmError};
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
}

impl FirecrackerHypervisor {
    pub fn new(binary: PathBuf) -> Self {
        FirecrackerHypervisor { binary, netns: None }
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

    /// Starts a Firecracker process for `spec` and waits for its API.
    async fn spawn(&self, spec: &VmLaunch) -> Result<(VmmProcess, FirecrackerApi), VmmError> {
        if self.netns.is_none() {
            validate::check_tap_exists(spec)?;
        }
        let socket = spec.run_dir.join(API_SOCKET);
        prepare_run_dir(
            &spec.run_dir,
            &marker(&socket),
            &[API_SOCKET, PID_FILE, FIRECRACKER_LOG],
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
        let api = FirecrackerApi::new(socket);
        let probe = api.clone();
        process
            .startup(process.wait_until("Firecracker's API socket", API_READY_TIMEOUT, || {
                let probe = probe.clone();
                async move { probe.instance_info().await.ok() }
            }))
            .await
            .map_err(|e| with_firecracker_log(e, &spec.run_dir))?;
        Ok((process, api))
    }
}

/// Text identifying a VM's Firecracker in its command line: its API socket path.
fn marker(socket: &Path) -> String {
    socket.display().to_string()
}

/// Firecracker reports start-up problems in its own log: add them to the error.
fn with_firecracker_log(error: VmmError, run_dir: &Path) -> VmmError {
    match error {
        VmmError::EarlyExit { code, serial_tail } => {
            let log = crate::sys::process::tail(&run_dir.join(FIRECRACKER_LOG), 1024);
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

/// Configures devices and boots: machine, boot source, drives, network, start.
async fn configure_and_start(api: &FirecrackerApi, spec: &VmLaunch, kernel: PathBuf) -> Result<(), VmmError> {
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
        let (process, api) = self.spawn(spec).await?;
        process.startup(configure_and_start(&api, spec, kernel)).await?;
        Ok(Box::new(FirecrackerVm::new(process, api)))
    }

    async fn restore(&self, spec: &VmLaunch, snapshot: &SnapshotFiles) -> Result<Box<dyn VmHandle>, VmmError> {
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
        let (process, api) = self.spawn(spec).await?;
        let load = SnapshotLoad {
            snapshot_path: snapshot.state.clone(),
            mem_backend: MemBackend {
                backend_type: MemBackendType::File,
                backend_path: memory,
            },
            resume_vm: true,
            network_overrides: spec
                .nic
                .iter()
                .map(|nic| NetworkOverride {
                    iface_id: IFACE_ID.into(),
                    host_dev_name: nic.tap_name.clone(),
                })
                .collect(),
        };
        process.startup(api.put_snapshot("/snapshot/load", &load)).await?;
        Ok(Box::new(FirecrackerVm::new(process, api)))
    }

    async fn adopt(&self, spec: &VmLaunch, pid: u32) -> Result<Box<dyn VmHandle>, VmmError> {
        let socket = spec.run_dir.join(API_SOCKET);
        let process = VmmProcess::adopt(pid, &spec.run_dir, &marker(&socket))?;
        let api = FirecrackerApi::new(socket);
        api.instance_info().await?;
        Ok(Box::new(FirecrackerVm::new(process, api)))
    }
}
