//! The QEMU `microvm` command line for one VM (a pure function, unit-tested).
//! Restore must use the same argv as the launch plus `-incoming`, so both go
//! through here.

use std::ffi::OsString;
use std::path::Path;

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

/// Builds the argv (without the program name). `incoming` is the saved state
/// to load, for a restore; `exec:` URIs go through a shell, so the caller
/// must have checked that path with `validate::check_shell_safe_path`.
pub fn build(spec: &VmLaunch, kernel: &Path, accel: Accel, incoming: Option<&Path>) -> Result<Vec<OsString>, VmmError> {
    let run_dir = &spec.run_dir;
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
        "-kernel".into(),
        text(kernel)?.to_string(),
        "-append".into(),
        kernel_cmdline(accel, &spec.boot_args),
    ];
    if let Some(initrd) = &spec.initrd {
        args.extend(["-initrd".into(), text(initrd)?.to_string()]);
    }
    args.extend([
        // The serial console is a pty (an interactive console: QMP
        // `query-chardev` names it) that also logs everything to serial.log.
        // Not a socket chardev: with no client connected QEMU retries every
        // byte, which slowed a TCG boot by about a third.
        "-chardev".into(),
        format!(
            "pty,id=serial0,logfile={},logappend=on",
            opt_path(&spec.serial_log_path())?
        ),
        "-serial".into(),
        "chardev:serial0".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", opt_path(&run_dir.join(QMP_SOCKET))?),
    ]);
    for disk in &spec.disks {
        // QEMU ids must start with a letter; disk ids are validated to [A-Za-z0-9_-].
        let id = format!("disk-{}", disk.id);
        args.extend([
            "-drive".into(),
            format!(
                "id={id},file={},format=raw,if=none,readonly={}",
                opt_path(&disk.path)?,
                if disk.read_only { "on" } else { "off" }
            ),
            "-device".into(),
            format!("virtio-blk-device,drive={id}"),
        ]);
    }
    if let Some(nic) = &spec.nic {
        // Never vhost=on: these hosts have no vhost-net.
        args.extend([
            "-netdev".into(),
            format!("tap,id=net0,ifname={},script=no,downscript=no", nic.tap_name),
            "-device".into(),
            format!("virtio-net-device,netdev=net0,mac={}", nic.mac),
        ]);
    }
    if let Some(state) = incoming {
        args.extend(["-incoming".into(), format!("exec:cat {}", text(state)?)]);
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

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().expect("utf8")).collect()
    }

    #[test]
    fn tcg_command_line() {
        let args = strings(
            build(
                &spec(),
                Path::new("/img/vmlinux"),
                Accel::Tcg {
                    tsc_khz: Some(2_100_000),
                },
                None,
            )
            .expect("args"),
        );
        let joined = args.join(" ");
        assert!(joined.contains("-M microvm,accel=tcg,acpi=on -cpu max -smp 2 -m 256M"));
        assert!(args.contains(&"console=ttyS0 reboot=k panic=1 tsc_early_khz=2100000 quiet".to_string()));
        assert!(joined.contains("id=disk-rootfs,file=/vms/a,,b/root.img,format=raw,if=none,readonly=off"));
        assert!(joined.contains("id=disk-seed,file=/vms/seed.img,format=raw,if=none,readonly=on"));
        assert!(joined.contains("tap,id=net0,ifname=htap0,script=no,downscript=no"));
        assert!(!joined.contains("vhost"));
        assert!(joined.contains("-qmp unix:/run/hatch/vm-abc/qmp.sock,server=on,wait=off"));
        assert!(!joined.contains("-incoming"));
    }

    #[test]
    fn restore_is_launch_plus_incoming() {
        let launch = build(&spec(), Path::new("/img/vmlinux"), Accel::Kvm, None).expect("args");
        let restore = build(
            &spec(),
            Path::new("/img/vmlinux"),
            Accel::Kvm,
            Some(Path::new("/snap/vmstate")),
        )
        .expect("args");
        assert_eq!(&restore[..launch.len()], &launch[..]);
        assert_eq!(
            strings(restore[launch.len()..].to_vec()),
            vec!["-incoming", "exec:cat /snap/vmstate"]
        );
        assert!(strings(launch).contains(&"host".to_string()));
    }

    #[test]
    fn kvm_cmdline_has_no_tsc_hint() {
        assert_eq!(kernel_cmdline(Accel::Kvm, ""), "console=ttyS0 reboot=k panic=1");
    }
}
