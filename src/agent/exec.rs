//! Running a command in the guest and collecting its output.

use std::sync::Arc;

use hatch_agent_proto::{ExecExit, ExecRequest, Kind, Reply, Request};

use super::conversation::{Channel, Conversation};
use super::{unexpected, AgentError};

/// A finished command and what it wrote (each stream up to the request's
/// `output_limit`).
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub exit: ExecExit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `request` to completion, feeding it `stdin` (closed right after).
pub async fn run(
    conversation: &Arc<Conversation>,
    mut request: ExecRequest,
    stdin: Option<Vec<u8>>,
) -> Result<ExecOutput, AgentError> {
    request.stdin = stdin.is_some();
    let limit = request.output_limit.unwrap_or(u64::MAX);
    let mut channel = start(conversation, request).await?;
    if let Some(input) = stdin {
        channel.send_data(&input).await?;
        channel.send_eof().await?;
    }
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        let frame = channel.recv().await?;
        match frame.kind {
            Kind::Stdout => append_capped(&mut stdout, &frame.payload, limit),
            Kind::Stderr => append_capped(&mut stderr, &frame.payload, limit),
            Kind::Response => {
                channel.finish();
                return match frame.parse::<Reply>()? {
                    Reply::Exited(exit) => Ok(ExecOutput { exit, stdout, stderr }),
                    other => Err(unexpected(other, "an exit")),
                };
            }
            other => return Err(AgentError::Protocol(format!("unexpected {other:?} frame during exec"))),
        }
    }
}

/// Opens an exec channel; the caller streams stdin and reads frames itself
/// (the WebSocket form).
pub async fn start(conversation: &Arc<Conversation>, request: ExecRequest) -> Result<Channel, AgentError> {
    conversation.open(&Request::Exec(request)).await
}

/// The agent already caps what it forwards; this guards the host's memory
/// against an agent that does not.
fn append_capped(buffer: &mut Vec<u8>, bytes: &[u8], limit: u64) {
    let room = (limit as usize).saturating_sub(buffer.len());
    buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
}
