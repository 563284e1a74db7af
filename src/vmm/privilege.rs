//! The unprivileged user VMMs run as (`HATCH_VMM_USER`, default `hatch-vmm`).
//!
//! How a QEMU process is confined (decided here, for both the daemon and
//! tests): the daemon opens every file the VM needs itself, as root, and
//! hands QEMU the open descriptors (disks and the serial log through
//! `-add-fd`/`/dev/fdset`, the QMP socket as an already listening socket, the
//! TAP as an attached tun descriptor, kernel and initrd as `/proc/self/fd/N`,
//! the snapshot stream as `fd:` migration). Then it switches to the VMM user
//! and starts QEMU under QEMU's seccomp sandbox. The VMM user owns no file
//! and no directory of Hatch's (the data and run directories stay root's,
//! 0700), so a compromised QEMU can reach only the descriptors it was given:
//! its own VM's disks, console and TAP, never another VM's. The only paths
//! QEMU opens itself are the image's kernel and initrd, shared read-only
//! files (0444) reached through its own descriptors. This needs no chroot
//! (QEMU 7.2's `-chroot` runs after seccomp forbids the privilege drop that
//! would have to follow it) and no per-VM user.

use std::os::unix::fs::MetadataExt;

/// The default VMM user, created by `scripts/install-deps` or at first start.
pub const DEFAULT_VMM_USER: &str = "hatch-vmm";

/// A resolved unprivileged user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: only the group owning `/dev/kvm`, when present,
    /// so QEMU can use hardware virtualisation.
    pub groups: Vec<u32>,
}

impl VmmUser {
    /// Looks the user up; `Ok(None)` if there is no such user.
    pub fn lookup(name: &str) -> Result<Option<VmmUser>, String> {
        let user = nix::unistd::User::from_name(name).map_err(|e| format!("cannot look up user {name:?}: {e}"))?;
        let Some(user) = user else {
            return Ok(None);
        };
        if user.uid.is_root() {
            return Err(format!("{name:?} is root; VMMs must run as an unprivileged user"));
        }
        let groups = std::fs::metadata("/dev/kvm")
            .map(|m| vec![m.gid()])
            .unwrap_or_default()
            .into_iter()
            .filter(|gid| *gid != 0)
            .collect();
        Ok(Some(VmmUser {
            name: name.to_string(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        }))
    }

    /// Looks the user up and, if it does not exist, creates it as a system
    /// user without home or login shell (only when running as root).
    pub fn ensure(name: &str) -> Result<VmmUser, String> {
        if let Some(user) = Self::lookup(name)? {
            return Ok(user);
        }
        let output = crate::sys::cmd::std_command("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                name,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run useradd to create VMM user {name:?}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "useradd {name} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        tracing::info!(user = name, "created the VMM system user");
        Self::lookup(name)?.ok_or_else(|| format!("user {name:?} still missing after useradd"))
    }

    /// The user VMMs run as on this host: the configured one when the daemon
    /// is root (created if missing); `None` when the daemon is not root (it
    /// cannot switch users, so VMMs run as the daemon's own user). The text
    /// is a line for `hatch doctor`.
    pub fn for_daemon(name: &str) -> (Result<Option<VmmUser>, String>, String) {
        if !nix::unistd::geteuid().is_root() {
            return (
                Ok(None),
                "the daemon is not root: VMMs run as the daemon's own user".to_string(),
            );
        }
        match Self::ensure(name) {
            Ok(user) => {
                let detail = format!(
                    "VMMs run as {} (uid {}, gid {}) under QEMU's seccomp sandbox",
                    user.name, user.uid, user.gid
                );
                (Ok(Some(user)), detail)
            }
            Err(e) => (Err(e.clone()), e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_refused_and_missing_users_are_none() {
        assert!(VmmUser::lookup("root").is_err());
        assert_eq!(VmmUser::lookup("no-such-user-hatch-test").unwrap(), None);
        let nobody = VmmUser::lookup("nobody").unwrap().expect("nobody exists");
        assert_ne!(nobody.uid, 0);
    }
}
