//! Checking an exec request and working out what exactly to run: the
//! program, the account, the environment and the directory.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hatch_agent_proto::{ErrorCode, ExecRequest, Reply, WindowSize};

use crate::channel::{error, io_error};
use crate::users::{self, Account};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Prepared {
    pub program: PathBuf,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: CString,
    pub account: Account,
    /// Whether the agent switches to the account (it runs as root).
    pub switch_user: bool,
    pub tty: Option<WindowSize>,
}

pub fn prepare(request: &ExecRequest) -> Result<Prepared, Reply> {
    let invalid = |message: String| error(ErrorCode::Invalid, message);
    match request.cmd.first() {
        None => return Err(invalid("cmd is empty".into())),
        Some(program) if program.is_empty() => return Err(invalid("cmd[0] is empty".into())),
        Some(_) => {}
    }
    if let Some(index) = request.cmd.iter().position(|arg| arg.contains('\0')) {
        return Err(invalid(format!("cmd[{index}] contains a NUL byte")));
    }
    for (key, value) in &request.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid(format!("env key {key:?} is empty or contains '=' or NUL")));
        }
        if value.contains('\0') {
            return Err(invalid(format!("env {key} contains a NUL byte")));
        }
    }
    if request.timeout_ms == Some(0) {
        return Err(invalid("timeout_ms must be positive".into()));
    }
    let account = users::lookup(request.user.as_deref(), Path::new("/etc")).map_err(invalid)?;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && account.uid != euid {
        return Err(error(
            ErrorCode::PermissionDenied,
            format!(
                "the agent does not run as root and cannot run commands as {}",
                account.name
            ),
        ));
    }
    let mut env = base_env(&account, request.tty.is_some());
    env.extend(request.env.clone());
    let cwd = working_directory(request.cwd.as_deref(), &account)?;
    let program = resolve(&request.cmd[0], env.get("PATH").map(String::as_str).unwrap_or(""))
        .ok_or_else(|| error(ErrorCode::NotFound, format!("{}: command not found", request.cmd[0])))?;
    Ok(Prepared {
        program,
        argv: request.cmd.clone(),
        env,
        cwd: CString::new(cwd.into_os_string().into_encoded_bytes()).map_err(|_| invalid("cwd contains NUL".into()))?,
        account,
        switch_user: euid == 0,
        tty: request.tty,
    })
}

/// A login-like environment, nothing of the agent's own.
fn base_env(account: &Account, tty: bool) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    env.insert("HOME".to_string(), account.home.clone());
    env.insert("USER".to_string(), account.name.clone());
    env.insert("LOGNAME".to_string(), account.name.clone());
    env.insert("SHELL".to_string(), account.shell.clone());
    if tty {
        env.insert("TERM".to_string(), "xterm-256color".to_string());
    }
    env
}

fn working_directory(cwd: Option<&str>, account: &Account) -> Result<PathBuf, Reply> {
    let Some(cwd) = cwd else {
        // nobody's home is /nonexistent: then the root directory.
        let home = Path::new(&account.home);
        return Ok(if home.is_absolute() && home.is_dir() {
            home.to_path_buf()
        } else {
            PathBuf::from("/")
        });
    };
    if !cwd.starts_with('/') || cwd.contains('\0') {
        return Err(error(
            ErrorCode::Invalid,
            format!("cwd {cwd:?} is not an absolute path"),
        ));
    }
    match std::fs::metadata(cwd) {
        Ok(meta) if meta.is_dir() => Ok(PathBuf::from(cwd)),
        Ok(_) => Err(error(ErrorCode::Invalid, format!("cwd {cwd} is not a directory"))),
        Err(e) => Err(io_error(&format!("cwd {cwd}"), &e)),
    }
}

/// `name` itself when it has a slash (relative to the working directory),
/// else the first executable file of that name in `path`.
fn resolve(name: &str, path: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_looked_up_in_path_only_without_a_slash() {
        assert_eq!(
            resolve("sh", "relative:/nonexistent:/bin:/usr/bin"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(resolve("./run.sh", "/bin"), Some(PathBuf::from("./run.sh")));
        assert_eq!(resolve("no-such-program-anywhere", DEFAULT_PATH), None);
        // Not executable: a plain file.
        assert_eq!(resolve("passwd", "/etc"), None);
    }

    #[test]
    fn bad_requests_are_refused_before_anything_runs() {
        let cases = [
            (ExecRequest::default(), "cmd is empty"),
            (request(&["ls", "a\0b"]), "cmd[1]"),
            (with_env("A=B", "x"), "env key"),
            (with_env("A", "x\0"), "NUL"),
            (
                ExecRequest {
                    timeout_ms: Some(0),
                    ..request(&["true"])
                },
                "timeout_ms",
            ),
            (
                ExecRequest {
                    user: Some("no-such-user-here".into()),
                    ..request(&["true"])
                },
                "no user",
            ),
            (
                ExecRequest {
                    cwd: Some("tmp".into()),
                    ..request(&["true"])
                },
                "absolute",
            ),
        ];
        for (bad, said) in cases {
            let Err(Reply::Error(error)) = prepare(&bad) else {
                panic!("accepted {bad:?}")
            };
            assert_eq!(error.code, ErrorCode::Invalid, "{bad:?}");
            assert!(error.message.contains(said), "{} should mention {said}", error.message);
        }
        let missing = ExecRequest {
            cwd: Some("/no/such/dir".into()),
            ..request(&["true"])
        };
        let Err(Reply::Error(error)) = prepare(&missing) else {
            panic!("accepted a missing cwd")
        };
        assert_eq!(error.code, ErrorCode::NotFound);
    }

    fn request(cmd: &[&str]) -> ExecRequest {
        ExecRequest {
            cmd: cmd.iter().map(|arg| arg.to_string()).collect(),
            ..Default::default()
        }
    }

    fn with_env(key: &str, value: &str) -> ExecRequest {
        let mut request = request(&["true"]);
        request.env.insert(key.into(), value.into());
        request
    }
}
