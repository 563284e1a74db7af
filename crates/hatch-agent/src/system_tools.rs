//! The guest's own tools (`ip`, `networkctl`, DHCP clients) as the agent
//! runs them: found in the system directories only (never an inherited
//! PATH), with an empty environment but that PATH, and no stdin.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The directories searched, in order; also the tools' own PATH.
pub const SEARCH_PATH: &str = "/sbin:/usr/sbin:/bin:/usr/bin";

/// `name` in the first of the [`SEARCH_PATH`] directories that has it.
pub fn find_program(name: &str) -> Option<PathBuf> {
    SEARCH_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// A command for `program` with the clean environment described above.
pub fn command(program: &Path) -> Command {
    let mut command = Command::new(program);
    command.env_clear().env("PATH", SEARCH_PATH).stdin(Stdio::null());
    command
}

/// Runs `program` with `args` to its end; Err describes a failure, with
/// the tool's stderr.
pub fn run(program: &Path, args: &[&str]) -> Result<(), String> {
    let described = || format!("{} {}", program.display(), args.join(" "));
    let output = command(program)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", described()))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("{} failed ({}): {}", described(), output.status, stderr.trim()))
}
