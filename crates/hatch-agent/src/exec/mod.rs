//! Exec: a command in its own session and process group, its output as
//! Stdout/Stderr frames (or one terminal's output as Stdout), and one
//! Exited reply after the output is drained.
//!
//! Only a timeout, a Cancel or a lost conversation kills the process group,
//! and only while the command itself runs: what it left running in the
//! background when it exited (a server started with `&`) stays.

mod input;
mod output;
mod prepare;
mod spawn;

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hatch_agent_proto::{ExecExit, ExecRequest, Reply};
use std::os::unix::process::ExitStatusExt;

use crate::channel::{io_error, Channel, Input};

pub use spawn::ProcessGroup;

pub fn run(channel: &Channel, input: Receiver<Input>, request: ExecRequest) -> Reply {
    // Everything is checked before anything runs.
    let prepared = match prepare::prepare(&request) {
        Ok(prepared) => prepared,
        Err(reply) => return reply,
    };
    let started = match spawn::start(&prepared, request.stdin) {
        Ok(started) => started,
        Err(reply) => return reply,
    };
    channel.control.attach(started.group.clone());
    input::start(input, started.stdin, started.terminal.clone());
    let deadline = request
        .timeout_ms
        .and_then(|ms| started.at.checked_add(Duration::from_millis(ms)));
    let limit = request.output_limit.unwrap_or(u64::MAX);
    let pumped = output::pump(
        channel,
        started.outputs,
        limit,
        started.exit_notice,
        deadline,
        &started.group,
    );
    let (status, exited_at) = match started.waiter.join() {
        Ok(result) => result,
        Err(_) => return crate::channel::error(hatch_agent_proto::ErrorCode::Io, "the exec waiter failed"),
    };
    let status = match status {
        Ok(status) => status,
        Err(error) => return io_error("waiting for the command", &error),
    };
    Reply::Exited(ExecExit {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out: pumped.timed_out,
        duration_ms: exited_at.duration_since(started.at).as_millis() as u64,
        stdout_truncated: pumped.stdout_truncated,
        stderr_truncated: pumped.stderr_truncated,
    })
}

/// A lock that a panicked holder does not poison for everyone else.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

type Terminal = Arc<std::fs::File>;
