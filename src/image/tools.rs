//! Host programs the builders run, each with the Debian package that
//! provides it, so a missing one is reported with what to install.
use std::ffi::OsStr;
use std::path::Path;

use super::ImageError;
use crate::sys::cmd::{find_on_path, CmdError};

#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

pub const APT_GET: Tool = Tool {
    name: "apt-get",
    package: "apt",
};
pub const APT_CACHE: Tool = Tool {
    name: "apt-cache",
    package: "apt",
};
pub const DPKG_DEB: Tool = Tool {
    name: "dpkg-deb",
    package: "dpkg",
};
pub const DEPMOD: Tool = Tool {
    name: "depmod",
    package: "kmod",
};
pub const MMDEBSTRAP: Tool = Tool {
    name: "mmdebstrap",
    package: "mmdebstrap",
};
pub const MKFS_EXT4: Tool = Tool {
    name: "mkfs.ext4",
    package: "e2fsprogs",
};
pub const CP: Tool = Tool {
    name: "cp",
    package: "coreutils",
};

/// Directories searched besides PATH: sbin tools are often not on a
/// non-login PATH.
const SBIN_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The tool's full path, or [`ImageError::MissingTool`].
pub fn locate(tool: Tool) -> Result<String, ImageError> {
    find_on_path(tool.name)
        .or_else(|| {
            SBIN_DIRS
                .iter()
                .map(|d| Path::new(d).join(tool.name))
                .find(|p| p.is_file())
        })
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or(ImageError::MissingTool {
            tool: tool.name,
            package: tool.package,
        })
}

/// Checks that all `tools` exist before a build starts doing anything.
pub fn require(tools: &[Tool]) -> Result<(), ImageError> {
    tools.iter().try_for_each(|tool| locate(*tool).map(|_| ()))
}

/// Runs `tool` with `args` (no shell), optionally in `cwd`, returning stdout.
pub async fn run<I, S>(tool: Tool, args: I, cwd: Option<&Path>) -> Result<Vec<u8>, CmdError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let program = locate(tool).map_err(|e| CmdError::Spawn {
        program: tool.name.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
    })?;
    run_program(Path::new(&program), args, cwd).await
}

/// Runs the program at `program` with `args` (no shell), optionally in `cwd`.
pub async fn run_program<I, S>(program: &Path, args: I, cwd: Option<&Path>) -> Result<Vec<u8>, CmdError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    let mut command = crate::sys::cmd::command(program);
    command
        .args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let described = || {
        let mut text = program.display().to_string();
        for arg in &args {
            text.push(' ');
            text.push_str(&arg.to_string_lossy());
        }
        text
    };
    let output = command.output().await.map_err(|source| CmdError::Spawn {
        program: program.display().to_string(),
        source,
    })?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(CmdError::Failed {
        command: described(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_reported_with_its_package() {
        let tool = Tool {
            name: "hatch-no-such-program",
            package: "hatch-some-package",
        };
        let error = require(&[DPKG_DEB, tool]).expect_err("missing");
        assert!(matches!(
            error,
            ImageError::MissingTool {
                tool: "hatch-no-such-program",
                package: "hatch-some-package"
            }
        ));
        assert_eq!(
            error.to_string(),
            "`hatch-no-such-program` is not installed; install the Debian package `hatch-some-package`"
        );
    }

    #[test]
    fn sbin_tools_are_found_without_sbin_on_path() {
        // depmod lives in /usr/sbin or /sbin, which a user's PATH may lack.
        assert!(locate(DEPMOD).expect("depmod").ends_with("/depmod"));
    }
}
