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

/// Runs `program` with `args` (no shell involved) and returns its output,
/// or an error carrying stderr when it exits non-zero.
pub async fn run<I, S>(program: &str, args: I) -> Result<Output, CmdError>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    let output = Command::new(program)
        .args(args.clone())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| CmdError::Spawn {
            program: program.to_string(),
            source,
        })?;
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
    let mut child = Command::new(program)
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
