//! The host side of the guest agent (`crates/hatch-agent`): exec, files,
//! readiness and the clock, over one stream per VM that the guest opens
//! (vsock on Firecracker, virtio-serial on QEMU; see `vmm::AgentEndpoint`).
//!
//! - `conversation`: one live stream (sync, Hello, many channels).
//! - `link`: keeps one VM's conversation up while its VMM runs.
//! - `registry`: every VM's link; what orchestration and the API ask.
//! - `exec`, `files`: the requests, as the API needs them.
//! - `identity`: a restored clone's own hostname, MAC, address and entropy.
//!
//! Nothing here knows about VM states or the database: orchestration
//! attaches a VM when its VMM runs and detaches it when the VMM is gone.

pub mod conversation;
pub mod exec;
pub mod files;
pub mod identity;
pub mod link;
pub mod registry;

pub use conversation::{Channel, Conversation};
pub use hatch_agent_proto as proto;
pub use identity::set_identity;
pub use registry::Agents;

use hatch_agent_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No conversation with the guest agent (not installed, not started yet,
    /// or the VM does not run).
    #[error("{0}")]
    Unavailable(String),
    /// The stream ended while a request was under way (the VM stopped, was
    /// snapshotted, or the agent restarted).
    #[error("the connection to the guest agent was lost before it answered")]
    Lost,
    #[error("the guest agent broke the protocol: {0}")]
    Protocol(String),
    /// The agent refused or failed the request.
    #[error("{message}")]
    Guest { code: ErrorCode, message: String },
}

impl AgentError {
    fn from_reply(error: proto::AgentError) -> AgentError {
        AgentError::Guest {
            code: error.code,
            message: error.message,
        }
    }
}

/// Turns a reply that is not the one expected into an error.
fn unexpected(reply: proto::Reply, wanted: &str) -> AgentError {
    match reply {
        proto::Reply::Error(error) => AgentError::from_reply(error),
        other => AgentError::Protocol(format!("expected {wanted}, got {other:?}")),
    }
}

impl From<proto::FrameError> for AgentError {
    fn from(error: proto::FrameError) -> Self {
        AgentError::Protocol(error.to_string())
    }
}

/// The channel's next frame, which must be a Response (any other frame
/// before it is a protocol error for requests without data).
async fn next_reply(channel: &mut Channel) -> Result<proto::Reply, AgentError> {
    let frame = channel.recv().await?;
    if frame.kind != proto::Kind::Response {
        return Err(AgentError::Protocol(format!("expected a reply, got {:?}", frame.kind)));
    }
    Ok(frame.parse()?)
}

/// The channel's one and final reply.
async fn final_reply(channel: &mut Channel) -> Result<proto::Reply, AgentError> {
    let reply = next_reply(channel).await?;
    channel.finish();
    Ok(reply)
}
