use std::ffi::OsStr;
use std::process::Output;

use tokio::process::Command;

/// A host program failed to start or exited non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("`{program}` is not installed or could not be started: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

fn describe<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut text = program.to_string();
    for arg in args {
        text.push(' ');
        text.push_str(&arg.as_ref().to_string_lossy());
    }
    text
}

/// Variables a child of the daemon may inherit. Everything else is dropped:
/// the daemon's environment holds secrets (`HATCH_*` settings, S3 keys as
/// `AWS_*`) that no VMM, dnsmasq or tool has any business seeing.
/// `PATH` finds helper programs; the proxy variables let image tools reach a
/// mirror through an operator's proxy; `TZ` keeps log timestamps consistent.
const INHERITED_VARS: &[&str] = &[
    "PATH",
    "TZ",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];
/// Used when the daemon itself has no PATH (systemd gives it one).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment every child process starts with: empty, plus the
/// variables in [`INHERITED_VARS`] and a fixed `LANG=C` (tools' messages,
/// parsed in places, stay in English). Never a `HATCH_*` or `AWS_*` variable.
pub fn child_env() -> Vec<(String, std::ffi::OsString)> {
    let mut env: Vec<(String, std::ffi::OsString)> = INHERITED_VARS
        .iter()
        .filter_map(|name| std::env::var_os(name).map(|value| (name.to_string(), value)))
        .collect();
    if !env.iter().any(|(name, _)| name == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.push(("LANG".into(), "C".into()));
    env.push(("LC_ALL".into(), "C".into()));
    env
}

/// The one way the daemon builds a child process: [`child_env`] instead of
/// the daemon's own environment.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    command.env_clear().envs(child_env());
    command
}

/// [`command`] for the few places that need a blocking `std` process.
pub fn std_command(program: impl AsRef<OsStr>) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command.env_clear().envs(child_env());
    command
}

/// Runs `program` with `args` (no shell involved) and returns its output,
/// or an error carrying stderr when it exits non-zero.
pub async fn run<I, S>(program: &str, args: I) -> Result<Output, CmdError>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    let output = command(program)
        .args(args.clone())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| CmdError::Spawn {
            program: program.to_string(),
            source,
        })?;
    succeeded(program, args, output)
}

/// `output` when the program exited zero, else an error carrying stderr.
fn succeeded<I, S>(program: &str, args: I, output: Output) -> Result<Output, CmdError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    if output.status.success() {
        Ok(output)
    } else {
        Err(CmdError::Failed {
            command: describe(program, args),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Like [`run`], with `input` written to the program's standard input.
pub async fn run_with_input<I, S>(program: &str, args: I, input: &[u8]) -> Result<Output, CmdError>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    use tokio::io::AsyncWriteExt;
    let spawn_error = |source| CmdError::Spawn {
        program: program.to_string(),
        source,
    };
    let mut child = command(program)
        .args(args.clone())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that exits early closes the pipe; its status tells why.
        let _ = stdin.write_all(input).await;
    }
    let output = child.wait_with_output().await.map_err(spawn_error)?;
    succeeded(program, args, output)
}

/// Like [`run`] but returns stdout as a string.
pub async fn stdout<I, S>(program: &str, args: I) -> Result<String, CmdError>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    let output = run(program, args).await?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `program` can be found on PATH (or is an existing path).
pub fn exists_on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

pub fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let path = std::path::PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_env_drops_hatch_and_aws_variables() {
        let env = child_env();
        assert!(env.iter().any(|(name, _)| name == "PATH"));
        assert!(env
            .iter()
            .all(|(name, _)| !name.starts_with("HATCH_") && !name.starts_with("AWS_")));
    }

    #[tokio::test]
    async fn a_child_sees_no_daemon_variables() {
        // The test process's own environment has whatever the runner set
        // (HATCH_* in CI); the child must see none of it.
        let out = stdout("env", Vec::<&str>::new()).await.expect("env runs");
        let names: Vec<&str> = out.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(names.contains(&"PATH"), "{out}");
        assert!(
            names.iter().all(|n| !n.starts_with("HATCH_") && !n.starts_with("AWS_")),
            "{out}"
        );
    }
}
