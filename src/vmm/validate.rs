//! Checks every value of a [`VmLaunch`] before a VMM process is started, so
//! bad input gets a clear error and nothing is left behind. Values checked
//! here end up on VMM command lines, in API bodies and on the guest kernel
//! command line, so they are held to narrow character sets.

use std::path::Path;

use super::kernel;
use super::{VmLaunch, VmmError};

/// Smallest guest memory Hatch accepts.
pub const MIN_MEM_MIB: u32 = 128;
/// Linux's x86 command line limit is 2048 bytes; keep room for the backend's own arguments.
const MAX_BOOT_ARGS_LEN: usize = 1536;
/// The most vCPUs a VM may have: Firecracker's limit (QEMU's is higher).
pub const MAX_VCPUS: u32 = 32;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

fn invalid(reason: impl Into<String>) -> VmmError {
    VmmError::InvalidLaunch(reason.into())
}

/// Validates everything but the kernel (each backend picks the kernel it can boot).
pub fn check_launch(spec: &VmLaunch) -> Result<(), VmmError> {
    check_vm_id(&spec.vm_id)?;
    // vCPUs may outnumber the host's CPUs (they are threads); the bound is
    // what both hypervisors accept.
    if spec.vcpu_count == 0 || spec.vcpu_count > MAX_VCPUS {
        return Err(invalid(format!(
            "vcpu_count {} is outside 1..={MAX_VCPUS}",
            spec.vcpu_count
        )));
    }
    let host_mib = super::host::memory_mib().unwrap_or(u64::MAX);
    if spec.mem_mib < MIN_MEM_MIB || u64::from(spec.mem_mib) > host_mib {
        return Err(invalid(format!(
            "mem_mib {} is outside {MIN_MEM_MIB}..={host_mib} (this host's memory)",
            spec.mem_mib
        )));
    }
    if let Some(initrd) = &spec.initrd {
        kernel::check_initrd(initrd).map_err(|e| invalid(e.to_string()))?;
    }
    check_boot_args(&spec.boot_args)?;
    let mut seen = std::collections::HashSet::new();
    for disk in &spec.disks {
        check_name("disk id", &disk.id, 32)?;
        if !seen.insert(disk.id.as_str()) {
            return Err(invalid(format!("disk id {:?} is used twice", disk.id)));
        }
        check_disk_file(&disk.path, disk.read_only)?;
    }
    if let Some(nic) = &spec.nic {
        // Linux interface names are at most 15 bytes.
        check_name("TAP name", &nic.tap_name, 15)?;
        check_mac(&nic.mac)?;
    }
    // Control sockets live in run_dir and unix socket paths are limited to 107 bytes
    // (the agent's, `agent.sock` and `vsock.sock_1024`, are shorter).
    let longest_socket = spec.run_dir.join("firecracker.sock");
    if longest_socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(invalid(format!(
            "run_dir {} is too long for a unix socket path (at most {} bytes)",
            spec.run_dir.display(),
            MAX_SOCKET_PATH - "/firecracker.sock".len()
        )));
    }
    // Commas would be doubled in QEMU options, and the run_dir must appear
    // verbatim in the VMM's command line for adoption to recognise it.
    let run_dir_text = spec.run_dir.to_str().unwrap_or(",");
    if !spec.run_dir.is_absolute() || run_dir_text.contains(',') {
        return Err(invalid(format!(
            "run_dir {} must be an absolute UTF-8 path without commas",
            spec.run_dir.display()
        )));
    }
    Ok(())
}

/// VM ids become Firecracker `--id` values and file names: letters, digits, '-'.
pub fn check_vm_id(id: &str) -> Result<(), VmmError> {
    let ok = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("vm id {id:?} must be 1-64 letters, digits or '-'")))
    }
}

fn check_name(what: &str, value: &str, max_len: usize) -> Result<(), VmmError> {
    let ok = !value.is_empty()
        && value.len() <= max_len
        && !value.starts_with('-')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} {value:?} must be 1-{max_len} letters, digits, '-' or '_'"
        )))
    }
}

fn check_mac(mac: &str) -> Result<(), VmmError> {
    let parts: Vec<&str> = mac.split(':').collect();
    let well_formed = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    // The low bit of the first octet marks multicast addresses, which a NIC cannot have.
    let unicast = well_formed && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0);
    if unicast {
        Ok(())
    } else {
        Err(invalid(format!(
            "MAC address {mac:?} must be a unicast aa:bb:cc:dd:ee:ff"
        )))
    }
}

/// Kernel arguments: printable ASCII without quotes or backslashes (so one
/// argument can never be split into several or escape into another), bounded length.
pub fn check_boot_args(args: &str) -> Result<(), VmmError> {
    if args.len() > MAX_BOOT_ARGS_LEN {
        return Err(invalid(format!("boot args are longer than {MAX_BOOT_ARGS_LEN} bytes")));
    }
    match args
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' ') || matches!(c, '"' | '\'' | '\\'))
    {
        Some(bad) => Err(invalid(format!("boot args contain the character {bad:?}"))),
        None => Ok(()),
    }
}

fn check_disk_file(path: &Path, read_only: bool) -> Result<(), VmmError> {
    let opened = std::fs::OpenOptions::new().read(true).write(!read_only).open(path);
    match opened {
        Ok(file) => match file.metadata() {
            Ok(meta) if meta.is_file() || is_block_device(&meta) => Ok(()),
            Ok(_) => Err(invalid(format!(
                "disk {} is not a regular file or block device",
                path.display()
            ))),
            Err(e) => Err(invalid(format!("disk {}: {e}", path.display()))),
        },
        Err(e) => Err(invalid(format!("disk {} cannot be opened: {e}", path.display()))),
    }
}

fn is_block_device(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_block_device()
}

/// The TAP device must exist beforehand: QEMU and Firecracker would otherwise
/// create a transient one attached to nothing. Only checkable for TAPs in
/// our own network namespace (`/sys/class/net` shows this namespace's links).
pub fn check_tap_exists(spec: &VmLaunch) -> Result<(), VmmError> {
    match &spec.nic {
        Some(nic)
            if !Path::new("/sys/class/net")
                .join(&nic.tap_name)
                .join("tun_flags")
                .exists() =>
        {
            Err(invalid(format!(
                "TAP device {} does not exist (it must be created before the VM starts)",
                nic.tap_name
            )))
        }
        _ => Ok(()),
    }
}

/// Paths handed to a shell-interpreted QEMU migration URI (`exec:`) must be
/// plain: this refuses anything a shell would treat specially.
pub fn check_shell_safe_path(path: &Path) -> Result<(), VmmError> {
    let text = path.to_str().unwrap_or("");
    let ok = path.is_absolute() && text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "snapshot path {} may only contain letters, digits and / . _ - +",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert!(check_mac("02:ab:cd:00:11:22").is_ok());
        assert!(check_mac("03:ab:cd:00:11:22").is_err(), "multicast");
        assert!(check_mac("02:ab:cd:00:11").is_err());
        assert!(check_mac("02:ab:cd:00:11:2g").is_err());
        assert!(check_mac("02:ab:cd:00:11:22\nx").is_err());
    }

    #[test]
    fn boot_args() {
        assert!(check_boot_args("quiet hatch.heartbeat=1 root=LABEL=rootfs").is_ok());
        assert!(check_boot_args("a\nb").is_err());
        assert!(check_boot_args("init=\"/bin/sh -c x\"").is_err());
        assert!(check_boot_args(&"x".repeat(MAX_BOOT_ARGS_LEN + 1)).is_err());
    }

    #[test]
    fn names_and_ids() {
        assert!(check_vm_id("vm-abc123").is_ok());
        assert!(check_vm_id("vm_abc").is_err());
        assert!(check_vm_id("").is_err());
        assert!(check_name("TAP name", "hatch-tap0", 15).is_ok());
        assert!(check_name("TAP name", "-x", 15).is_err());
        assert!(check_name("TAP name", "a-very-long-tap-name", 15).is_err());
        assert!(check_name("disk id", "root,fs", 32).is_err());
    }

    #[test]
    fn run_dir_must_fit_a_socket_path() {
        let spec = VmLaunch {
            mem_mib: MIN_MEM_MIB,
            run_dir: Path::new("/run").join("d".repeat(100)),
            ..VmLaunch::bare("vm-a", "/run")
        };
        let err = check_launch(&spec).expect_err("too long");
        assert!(err.to_string().contains("too long for a unix socket path"), "{err}");
        let short = VmLaunch {
            run_dir: "/run/hatch/vm-a".into(),
            ..spec
        };
        assert!(check_launch(&short).is_ok());
    }

    #[test]
    fn shell_safe_paths() {
        assert!(check_shell_safe_path(Path::new("/var/lib/hatch/snap-1/vmstate")).is_ok());
        assert!(check_shell_safe_path(Path::new("/tmp/a b")).is_err());
        assert!(check_shell_safe_path(Path::new("/tmp/x;rm")).is_err());
        assert!(check_shell_safe_path(Path::new("relative/x")).is_err());
    }
}
