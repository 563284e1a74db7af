//! The QEMU `microvm` command line for one VM (a pure function, unit-tested).
//! Restore must use the same argv as the launch plus `-S -incoming`, so both go
//! through here.

use std::ffi::OsString;
use std::path::Path;

use super::fds::FdNumbers;
use crate::vmm::{VmLaunch, VmmError};

/// The accelerator QEMU runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware KVM.
    Kvm,
    /// Software emulation. `tsc_khz` is the host TSC frequency, passed to the
    /// guest as `tsc_early_khz` (TCG guests often hang calibrating without it).
    Tcg { tsc_khz: Option<u64> },
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg { .. } => "tcg",
        }
    }
}

/// The QMP socket's file name inside the VM's run directory.
pub const QMP_SOCKET: &str = "qmp.sock";
/// The guest agent's socket inside the VM's run directory: the chardev of
/// its virtio-serial port, which QEMU serves and the daemon connects to.
pub const AGENT_SOCKET: &str = "agent.sock";

/// The kernel command line: console and platform arguments, then the image's.
pub fn kernel_cmdline(accel: Accel, boot_args: &str) -> String {
    let mut cmdline = String::from("console=ttyS0 reboot=k panic=1");
    if let Accel::Tcg { tsc_khz: Some(khz) } = accel {
        cmdline.push_str(&format!(" tsc_early_khz={khz}"));
    }
    if !boot_args.trim().is_empty() {
        cmdline.push(' ');
        cmdline.push_str(boot_args.trim());
    }
    cmdline
}

/// A path as UTF-8 text; Hatch keeps its paths UTF-8 so they can be put in QEMU options.
fn text(path: &Path) -> Result<&str, VmmError> {
    path.to_str()
        .ok_or_else(|| VmmError::InvalidLaunch(format!("path {} is not valid UTF-8", path.display())))
}

/// A path as a value inside a QEMU `key=value,...` option: commas are doubled.
fn opt_path(path: &Path) -> Result<String, VmmError> {
    Ok(text(path)?.replace(',', ",,"))
}

/// QEMU's seccomp sandbox: no obsolete system calls, no set*id (the process
/// already runs as the VMM user), no fork/exec (nothing in Hatch's use of
/// QEMU needs a child: migration goes to a passed descriptor, not `exec:`),
/// no scheduler/affinity changes.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// `-add-fd` for one passed descriptor: its fdset is numbered like the fd,
/// and `opaque` names the file it stands for (for people reading `ps`; the
/// serial log's also identifies the VM's QEMU when adopting it).
fn add_fd(fd: i32, what: &Path) -> Result<[String; 2], VmmError> {
    Ok(["-add-fd".into(), format!("fd={fd},set={fd},opaque={}", opt_path(what)?)])
}

/// Builds the argv (without the program name). Every file is a descriptor
/// the daemon opened (`fds`, see `vmm::privilege`); `fds.incoming` is the
/// saved state to load, for a restore.
pub fn build(spec: &VmLaunch, accel: Accel, fds: &FdNumbers) -> Result<Vec<OsString>, VmmError> {
    let mut args: Vec<String> = vec![
        "-name".into(),
        spec.vm_id.clone(),
        "-M".into(),
        // acpi=on: the guest kernel finds virtio-mmio devices only through ACPI.
        format!("microvm,accel={},acpi=on", accel.name()),
        "-cpu".into(),
        match accel {
            Accel::Kvm => "host".into(),
            Accel::Tcg { .. } => "max".into(),
        },
        "-smp".into(),
        spec.vcpu_count.to_string(),
        "-m".into(),
        format!("{}M", spec.mem_mib),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-nographic".into(),
        // A guest reboot ends the process, which the supervisor reports.
        "-no-reboot".into(),
        "-sandbox".into(),
        SANDBOX.into(),
        // Opened by QEMU as the VMM user through its own descriptor:
        // the image directories need not be reachable by it.
        "-kernel".into(),
        format!("/proc/self/fd/{}", fds.kernel),
        "-append".into(),
        kernel_cmdline(accel, &spec.boot_args),
    ];
    if let (Some(_), Some(fd)) = (&spec.initrd, fds.initrd) {
        args.extend(["-initrd".into(), format!("/proc/self/fd/{fd}")]);
    }
    args.extend(add_fd(fds.serial_log, &spec.serial_log_path())?);
    args.extend([
        // The serial console is a pty (an interactive console: QMP
        // `query-chardev` names it) that also logs everything to serial.log.
        // Not a socket chardev: with no client connected QEMU retries every
        // byte, which slowed a TCG boot by about a third.
        "-chardev".into(),
        format!("pty,id=serial0,logfile=/dev/fdset/{},logappend=on", fds.serial_log),
        "-serial".into(),
        "chardev:serial0".into(),
        // QMP on a socket the daemon bound and listens on (run_dir/qmp.sock).
        "-chardev".into(),
        format!("socket,id=qmp,fd={},server=on,wait=off", fds.qmp),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
        // The guest agent's port (see `super::agent`): microvm has
        // virtio-mmio, not PCI, hence the `-device` variant of the bus.
        "-chardev".into(),
        format!("socket,id=agent,fd={},server=on,wait=off", fds.agent),
        "-device".into(),
        "virtio-serial-device".into(),
        "-device".into(),
        format!(
            "virtserialport,chardev=agent,name={}",
            hatch_agent_proto::SERIAL_PORT_NAME
        ),
    ]);
    if fds.disks.len() != spec.disks.len() {
        return Err(VmmError::InvalidLaunch("one descriptor per disk is needed".into()));
    }
    for (index, (disk, fd)) in spec.disks.iter().zip(&fds.disks).enumerate() {
        // QEMU ids must start with a letter; disk ids are validated to [A-Za-z0-9_-].
        let id = format!("disk-{}", disk.id);
        args.extend(add_fd(*fd, &disk.path)?);
        if let Some(Some(reader)) = fds.disk_readers.get(index) {
            args.extend([
                "-add-fd".into(),
                format!("fd={reader},set={fd},opaque={}", opt_path(&disk.path)?),
            ]);
        }
        args.extend([
            "-drive".into(),
            format!(
                "id={id},file=/dev/fdset/{fd},format=raw,if=none,readonly={}",
                if disk.read_only { "on" } else { "off" }
            ),
            "-device".into(),
            format!("virtio-blk-device,drive={id}"),
        ]);
    }
    if let (Some(nic), Some(fd)) = (&spec.nic, fds.tap) {
        // Never vhost=on: these hosts have no vhost-net. The TAP is a
        // descriptor the daemon attached (QEMU as the VMM user may not).
        args.extend([
            "-netdev".into(),
            format!("tap,id=net0,fd={fd}"),
            "-device".into(),
            format!("virtio-net-device,netdev=net0,mac={}", nic.mac),
        ]);
    }
    if let Some(fd) = fds.incoming {
        // Paused after the load, whatever the saved run state: a streamed
        // state may run only once the daemon has verified all of it.
        args.extend(["-S".into(), "-incoming".into(), format!("fd:{fd}")]);
    }
    Ok(args.into_iter().map(OsString::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::{DiskSpec, KernelFiles, NicSpec};
    use std::path::PathBuf;

    fn spec() -> VmLaunch {
        VmLaunch {
            vm_id: "vm-abc".into(),
            vcpu_count: 2,
            mem_mib: 256,
            kernel: KernelFiles {
                elf: Some("/img/vmlinux".into()),
                bzimage: None,
            },
            initrd: Some("/img/initrd.gz".into()),
            disks: vec![
                DiskSpec {
                    id: "rootfs".into(),
                    path: "/vms/a,b/root.img".into(),
                    read_only: false,
                },
                DiskSpec {
                    id: "seed".into(),
                    path: "/vms/seed.img".into(),
                    read_only: true,
                },
            ],
            nic: Some(NicSpec {
                tap_name: "htap0".into(),
                mac: "02:00:00:00:00:01".into(),
            }),
            boot_args: "quiet".into(),
            run_dir: PathBuf::from("/run/hatch/vm-abc"),
        }
    }

    fn fds(incoming: Option<i32>) -> FdNumbers {
        FdNumbers {
            qmp: 3,
            agent: 11,
            serial_log: 4,
            kernel: 5,
            initrd: Some(6),
            tap: Some(7),
            disks: vec![8, 9],
            disk_readers: vec![Some(10), None],
            incoming,
        }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().expect("utf8")).collect()
    }

    #[test]
    fn tcg_command_line() {
        let args = strings(
            build(
                &spec(),
                Accel::Tcg {
                    tsc_khz: Some(2_100_000),
                },
                &fds(None),
            )
            .expect("args"),
        );
        let joined = args.join(" ");
        assert!(joined.contains("-M microvm,accel=tcg,acpi=on -cpu max -smp 2 -m 256M"));
        assert!(args.contains(&"console=ttyS0 reboot=k panic=1 tsc_early_khz=2100000 quiet".to_string()));
        assert!(joined.contains("-add-fd fd=8,set=8,opaque=/vms/a,,b/root.img"));
        // The writable disk's set also holds a read-only descriptor.
        assert!(joined.contains("-add-fd fd=10,set=8,opaque=/vms/a,,b/root.img"));
        assert_eq!(
            joined.matches("set=9,").count(),
            1,
            "a read-only disk needs one descriptor"
        );
        assert!(joined.contains("id=disk-rootfs,file=/dev/fdset/8,format=raw,if=none,readonly=off"));
        assert!(joined.contains("id=disk-seed,file=/dev/fdset/9,format=raw,if=none,readonly=on"));
        assert!(joined.contains("tap,id=net0,fd=7"));
        assert!(!joined.contains("vhost"));
        assert!(joined.contains("-chardev socket,id=qmp,fd=3,server=on,wait=off -mon chardev=qmp,mode=control"));
        assert!(joined.contains("-kernel /proc/self/fd/5"));
        assert!(joined.contains("-initrd /proc/self/fd/6"));
        assert!(joined.contains("opaque=/run/hatch/vm-abc/serial.log"));
        assert!(joined.contains(&format!("-sandbox {SANDBOX}")));
        assert!(!joined.contains("-incoming"));
    }

    #[test]
    fn restore_is_launch_plus_incoming() {
        let launch = build(&spec(), Accel::Kvm, &fds(None)).expect("args");
        let restore = build(&spec(), Accel::Kvm, &fds(Some(10))).expect("args");
        assert_eq!(&restore[..launch.len()], &launch[..]);
        assert_eq!(
            strings(restore[launch.len()..].to_vec()),
            vec!["-S", "-incoming", "fd:10"]
        );
        assert!(strings(launch).contains(&"host".to_string()));
    }

    #[test]
    fn every_vm_has_the_agent_port_on_a_passed_socket() {
        let joined = strings(build(&spec(), Accel::Kvm, &fds(None)).expect("args")).join(" ");
        assert!(joined.contains("-chardev socket,id=agent,fd=11,server=on,wait=off"));
        assert!(joined.contains("-device virtio-serial-device"));
        assert!(joined.contains("-device virtserialport,chardev=agent,name=org.hatch.agent.0"));
        assert!(!joined.contains("virtio-serial-pci") && !joined.contains("vsock"));
    }

    #[test]
    fn kvm_cmdline_has_no_tsc_hint() {
        assert_eq!(kernel_cmdline(Accel::Kvm, ""), "console=ttyS0 reboot=k panic=1");
    }
}
