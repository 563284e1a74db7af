//! Choosing a backend (`HATCH_HYPERVISOR`, `HATCH_QEMU_ACCEL`) and explaining
//! the choice for `hatch doctor`.

mod decide;
mod probe;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;

use self::decide::{decide, Choice};
use self::probe::HostProbe;
use super::firecracker::FirecrackerHypervisor;
use super::privilege::{VmmUser, DEFAULT_VMM_USER};
use super::qemu::QemuHypervisor;
use super::{Hypervisor, VmmError};

/// `HATCH_HYPERVISOR=auto|firecracker|qemu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HypervisorPreference {
    #[default]
    Auto,
    Firecracker,
    Qemu,
}

impl HypervisorPreference {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "firecracker" => Some(Self::Firecracker),
            "qemu" => Some(Self::Qemu),
            _ => None,
        }
    }
}

/// `HATCH_QEMU_ACCEL=auto|kvm|tcg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QemuAccel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl QemuAccel {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "kvm" => Some(Self::Kvm),
            "tcg" => Some(Self::Tcg),
            _ => None,
        }
    }
}

/// Inputs to the choice, from configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HypervisorSettings {
    pub preference: HypervisorPreference,
    pub qemu_accel: QemuAccel,
    /// `HATCH_FIRECRACKER_BIN`; otherwise `firecracker` is looked up on PATH.
    pub firecracker_bin: Option<PathBuf>,
    /// `HATCH_QEMU_BIN`; otherwise `qemu-system-x86_64` on PATH.
    pub qemu_bin: Option<PathBuf>,
    /// `HATCH_VMM_USER`; `None`: [`DEFAULT_VMM_USER`].
    pub vmm_user: Option<String>,
    /// `HATCH_JAILER_BIN`; otherwise `jailer` next to Firecracker or on PATH.
    pub jailer_bin: Option<PathBuf>,
    /// Where jailed Firecrackers get their chroots (`<data dir>/jail`, on
    /// the file system of the VM disks, which are hard-linked into them).
    pub jail_base: Option<PathBuf>,
}

/// One line of `hatch doctor`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DoctorCheck {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl HypervisorSettings {
    /// Reads `HATCH_HYPERVISOR`, `HATCH_QEMU_ACCEL`, `HATCH_FIRECRACKER_BIN`
    /// and `HATCH_QEMU_BIN`; unknown values are an error, not a silent default.
    pub fn from_env() -> Result<Self, VmmError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`HypervisorSettings::from_env`] with the variables looked up by `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, VmmError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let invalid = |name: &str, value: &str, allowed: &str| {
            VmmError::InvalidLaunch(format!("{name}={value:?} is not one of {allowed}"))
        };
        let preference = match var("HATCH_HYPERVISOR") {
            Some(v) => HypervisorPreference::parse(v.trim())
                .ok_or_else(|| invalid("HATCH_HYPERVISOR", &v, "auto, firecracker, qemu"))?,
            None => HypervisorPreference::Auto,
        };
        let qemu_accel = match var("HATCH_QEMU_ACCEL") {
            Some(v) => QemuAccel::parse(v.trim()).ok_or_else(|| invalid("HATCH_QEMU_ACCEL", &v, "auto, kvm, tcg"))?,
            None => QemuAccel::Auto,
        };
        Ok(HypervisorSettings {
            preference,
            qemu_accel,
            firecracker_bin: var("HATCH_FIRECRACKER_BIN").map(PathBuf::from),
            qemu_bin: var("HATCH_QEMU_BIN").map(PathBuf::from),
            vmm_user: var("HATCH_VMM_USER").map(|v| v.trim().to_string()),
            jailer_bin: var("HATCH_JAILER_BIN").map(PathBuf::from),
            jail_base: None,
        })
    }
}

/// The jailer Firecracker runs under, with a `hatch doctor` line: found via
/// `HATCH_JAILER_BIN`, next to the Firecracker binary, or on PATH, and used
/// when the daemon is root (the jailer needs root to build the jail).
fn jailer_for(
    settings: &HypervisorSettings,
    firecracker: &std::path::Path,
    user: Option<VmmUser>,
    checks: &mut Vec<DoctorCheck>,
) -> Option<super::firecracker::jail::Jailer> {
    let binary = settings
        .jailer_bin
        .clone()
        .or_else(|| {
            firecracker
                .parent()
                .map(|dir| dir.join("jailer"))
                .filter(|p| p.is_file())
        })
        .or_else(|| crate::sys::cmd::find_on_path("jailer"));
    let (jailer, detail) = match (binary.filter(|b| b.is_file()), user, &settings.jail_base) {
        (Some(binary), Some(user), Some(base)) => {
            let detail = format!(
                "Firecracker runs under {} in chroots under {} as {}",
                binary.display(),
                base.display(),
                user.name
            );
            (
                Some(super::firecracker::jail::Jailer {
                    binary,
                    chroot_base: base.clone(),
                    user,
                }),
                detail,
            )
        }
        (None, _, _) => (
            None,
            "no jailer binary (HATCH_JAILER_BIN): Firecracker runs unjailed".to_string(),
        ),
        (Some(_), None, _) => (None, "the daemon is not root: Firecracker runs unjailed".to_string()),
        (Some(_), Some(_), None) => (
            None,
            "no data directory for jails: Firecracker runs unjailed".to_string(),
        ),
    };
    checks.push(DoctorCheck {
        name: "Firecracker jailer".into(),
        ok: jailer.is_some(),
        detail,
    });
    jailer
}

/// Picks the backend for these settings on this host, with the checks that
/// explain the choice. Runs the binaries' `--version` (blocking, quick).
pub fn choose(settings: &HypervisorSettings) -> Result<(Arc<dyn Hypervisor>, Vec<DoctorCheck>), VmmError> {
    let probe = HostProbe::detect(settings);
    let mut checks = probe.checks();
    let choice = decide(settings, &probe);
    checks.push(choice.check());
    let choice = choice.result?;
    let user_name = settings.vmm_user.as_deref().unwrap_or(DEFAULT_VMM_USER);
    let (user, detail) = VmmUser::for_daemon(user_name);
    checks.push(DoctorCheck {
        name: "VMM user".into(),
        ok: user.is_ok(),
        detail,
    });
    let (limits_ok, limits_detail) = super::cgroup::doctor_detail();
    checks.push(DoctorCheck {
        name: "VMM cgroup limits".into(),
        ok: limits_ok,
        detail: limits_detail,
    });
    let user = user.map_err(|reason| VmmError::HypervisorUnavailable {
        hypervisor: "qemu",
        reason: format!("HATCH_VMM_USER: {reason}"),
    });
    let backend: Arc<dyn Hypervisor> = match choice {
        Choice::Firecracker { binary } => {
            let jailer = jailer_for(settings, &binary, user.as_ref().ok().cloned().flatten(), &mut checks);
            Arc::new(FirecrackerHypervisor::new(binary).jailed(jailer))
        }
        Choice::Qemu { binary, accel } => Arc::new(QemuHypervisor::new(binary, accel).run_as(user?)),
    };
    Ok((backend, checks))
}

/// Every prerequisite checked and the resulting choice, for `hatch doctor`.
pub fn doctor_checks(settings: &HypervisorSettings) -> Vec<DoctorCheck> {
    let probe = HostProbe::detect(settings);
    let mut checks = probe.checks();
    checks.extend(isolation_checks(settings));
    checks.extend(transport::agent_transport_checks(&probe));
    checks.push(decide(settings, &probe).check());
    checks
}

/// How VMMs are confined on this host, for `hatch doctor` (looks only:
/// creating the user is left to `hatch serve`).
fn isolation_checks(settings: &HypervisorSettings) -> Vec<DoctorCheck> {
    let name = settings.vmm_user.as_deref().unwrap_or(DEFAULT_VMM_USER);
    let (ok, detail) = if !nix::unistd::geteuid().is_root() {
        (true, "not run as root: a root daemon runs VMMs as ".to_string() + name)
    } else {
        match VmmUser::lookup(name) {
            Ok(Some(user)) => (
                true,
                format!(
                    "VMMs run as {} (uid {}) under QEMU's seccomp sandbox",
                    user.name, user.uid
                ),
            ),
            Ok(None) => (
                true,
                format!("user {name} does not exist yet; `hatch serve` creates it"),
            ),
            Err(e) => (false, format!("HATCH_VMM_USER: {e}")),
        }
    };
    let (limits_ok, limits_detail) = super::cgroup::doctor_detail();
    let jailer = settings
        .jailer_bin
        .clone()
        .or_else(|| crate::sys::cmd::find_on_path("jailer"))
        .filter(|p| p.is_file());
    vec![
        DoctorCheck {
            name: "VMM user".into(),
            ok,
            detail,
        },
        DoctorCheck {
            name: "VMM cgroup limits".into(),
            ok: limits_ok,
            detail: limits_detail,
        },
        DoctorCheck {
            name: "Firecracker jailer".into(),
            ok: jailer.is_some(),
            detail: match jailer {
                Some(path) => format!("{} (Firecracker runs jailed)", path.display()),
                None => "no jailer (HATCH_JAILER_BIN or PATH): Firecracker would run unjailed".into(),
            },
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_variables() {
        let vars = |name: &str| match name {
            "HATCH_HYPERVISOR" => Some("qemu".to_string()),
            "HATCH_QEMU_ACCEL" => Some("tcg".to_string()),
            "HATCH_FIRECRACKER_BIN" => Some("/opt/fc".to_string()),
            _ => None,
        };
        let settings = HypervisorSettings::from_lookup(vars).expect("valid");
        assert_eq!(settings.preference, HypervisorPreference::Qemu);
        assert_eq!(settings.qemu_accel, QemuAccel::Tcg);
        assert_eq!(settings.firecracker_bin, Some(PathBuf::from("/opt/fc")));
        assert_eq!(settings.qemu_bin, None);
        assert_eq!(
            HypervisorSettings::from_lookup(|_| None).expect("defaults"),
            HypervisorSettings::default()
        );
    }

    #[test]
    fn unknown_values_are_refused() {
        let err = HypervisorSettings::from_lookup(|n| (n == "HATCH_HYPERVISOR").then(|| "kvm".to_string()))
            .expect_err("invalid");
        assert!(err.to_string().contains("HATCH_HYPERVISOR=\"kvm\""), "{err}");
    }
}
