//! The guest agent (`hatch-agent`) that built images carry: finding the
//! binary on the host, checking that it can run in a guest, and what the
//! profiles install beside it (module lists, the systemd unit).
//!
//! The guest's C library is not the host's, so only a static binary (no
//! program interpreter) is accepted. Its SHA-256 goes into the build cache
//! key: a new agent makes new images.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::elf::{Elf, EM_X86_64};
use super::ImageError;

/// The setting (environment variable; `--agent-bin` on the command line).
pub const AGENT_BIN_VAR: &str = "HATCH_AGENT_BIN";
/// The file looked for beside the running `hatch` when the setting is unset.
pub const AGENT_FILE_NAME: &str = "hatch-agent";
/// How to build a binary the images accept (from the repository root).
pub const AGENT_BUILD_COMMAND: &str = "RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build -p hatch-agent \
     --release --target x86_64-unknown-linux-gnu --target-dir target/agent \
     (output: target/agent/x86_64-unknown-linux-gnu/release/hatch-agent)";

/// Modules the agent's transports need: QEMU's virtio-serial port and
/// Firecracker's vsock (modprobe brings their dependencies along).
pub const TRANSPORT_MODULES: [&str; 4] = [
    "virtio_console",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

/// Where the `minimal` image's /init finds the agent.
pub const MINIMAL_GUEST_PATH: &str = "/usr/sbin/hatch-agent";
/// Where the `debian` image's systemd unit finds the agent.
pub const DEBIAN_GUEST_PATH: &str = "/usr/local/sbin/hatch-agent";

/// The `debian` image's unit. Ordered after ssh so that the agent's hello
/// (the VM's readiness) still means SSH is up when the VM has a network;
/// not after network-online.target, which a VM without one would wait
/// for until it times out. No start limit: a crashing agent keeps being
/// restarted, once a second.
pub const SYSTEMD_UNIT: &str = "[Unit]\n\
Description=Hatch guest agent (exec, files and clock for the host)\n\
After=systemd-modules-load.service ssh.service\n\
StartLimitIntervalSec=0\n\
\n\
[Service]\n\
Type=simple\n\
ExecStart=/usr/local/sbin/hatch-agent\n\
Restart=always\n\
RestartSec=1\n\
StandardOutput=journal+console\n\
StandardError=journal+console\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n";

/// `/etc/modules-load.d/hatch-agent.conf` of the `debian` image:
/// [`TRANSPORT_MODULES`], a line each.
pub const MODULES_LOAD_CONF: &str = "# hatch-agent's transports: virtio-serial (QEMU) and vsock (Firecracker).\n\
virtio_console\n\
vsock\n\
vmw_vsock_virtio_transport_common\n\
vmw_vsock_virtio_transport\n";

/// A checked agent binary, read once: what is installed is what was
/// checked and hashed, even if the file changes during the build.
#[derive(Clone, PartialEq, Eq)]
pub struct GuestAgent {
    pub path: PathBuf,
    /// Hex SHA-256 of `bytes`, for the build cache key.
    pub sha256: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for GuestAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAgent")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl GuestAgent {
    /// The agent named by `explicit` (HATCH_AGENT_BIN or `--agent-bin`),
    /// else a `hatch-agent` beside the running executable.
    pub fn locate(explicit: Option<&Path>) -> Result<GuestAgent, ImageError> {
        if let Some(path) = explicit {
            return GuestAgent::check(path);
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join(AGENT_FILE_NAME)));
        match beside {
            Some(path) if path.is_file() => GuestAgent::check(&path),
            _ => Err(invalid(format!(
                "no hatch-agent binary to put into the image: set {AGENT_BIN_VAR} (or --agent-bin) to one, \
                 or place it beside the hatch executable{}; build it with {AGENT_BUILD_COMMAND}",
                beside
                    .as_deref()
                    .map(|p| format!(" ({})", p.display()))
                    .unwrap_or_default()
            ))),
        }
    }

    /// Reads `path` and refuses anything but a static x86_64 ELF program.
    pub fn check(path: &Path) -> Result<GuestAgent, ImageError> {
        let data = std::fs::read(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let problem = match Elf::parse(&data) {
            None => Some("is not an ELF program".to_string()),
            Some(elf) if elf.machine != EM_X86_64 => Some("is not an x86_64 program".to_string()),
            Some(elf) => elf.interpreter().map(|interpreter| {
                format!(
                    "is dynamically linked (interpreter {interpreter}); guests have their own libraries, \
                     so hatch-agent must be built statically"
                )
            }),
        };
        if let Some(problem) = problem {
            return Err(invalid(format!(
                "{} {problem}; build it with {AGENT_BUILD_COMMAND}",
                path.display()
            )));
        }
        Ok(GuestAgent {
            path: path.to_path_buf(),
            sha256: hex::encode(Sha256::digest(&data)),
            bytes: data,
        })
    }
}

fn invalid(message: String) -> ImageError {
    ImageError::Invalid {
        field: AGENT_BIN_VAR,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_program_is_refused_naming_the_setting() {
        // The test binary itself is linked against the host's libc.
        let exe = std::env::current_exe().unwrap();
        let error = GuestAgent::check(&exe).expect_err("dynamic");
        let text = error.to_string();
        assert!(text.starts_with("HATCH_AGENT_BIN: "), "{text}");
        assert!(
            text.contains("dynamically linked") && text.contains("statically"),
            "{text}"
        );
        assert!(text.contains("crt-static"), "the message says how to build it: {text}");
    }

    #[test]
    fn a_file_that_is_not_elf_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("hatch-agent");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let text = GuestAgent::check(&script).expect_err("script").to_string();
        assert!(text.contains("is not an ELF program"), "{text}");
        let missing = GuestAgent::check(&dir.path().join("absent")).expect_err("missing");
        assert!(
            missing.to_string().starts_with("HATCH_AGENT_BIN: cannot read"),
            "{missing}"
        );
    }

    #[test]
    fn the_debian_image_loads_every_transport_module() {
        let listed: Vec<&str> = MODULES_LOAD_CONF.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(listed, TRANSPORT_MODULES);
    }

    #[test]
    fn the_unit_is_enabled_for_multi_user_and_restarts_forever() {
        for line in [
            "After=systemd-modules-load.service ssh.service",
            "StartLimitIntervalSec=0",
            "Type=simple",
            "Restart=always",
            "RestartSec=1",
            "WantedBy=multi-user.target",
        ] {
            assert!(SYSTEMD_UNIT.lines().any(|l| l == line), "{line} missing");
        }
        assert!(SYSTEMD_UNIT.contains(&format!("ExecStart={DEBIAN_GUEST_PATH}\n")));
        assert!(!SYSTEMD_UNIT.contains("network-online"));
    }
}
