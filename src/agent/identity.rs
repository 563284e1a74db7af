//! A restored clone's new identity (SetIdentity): what the guest must not
//! share with the VM whose snapshot it came from. The agent checks every
//! value before it changes anything; see `crates/hatch-agent/src/identity.rs`.

use std::sync::Arc;

use hatch_agent_proto::{Identity, Reply, Request};

use super::conversation::Conversation;
use super::{final_reply, unexpected, AgentError};

/// Gives the guest its hostname, its NIC's MAC, address and default route,
/// and reseeds its random generator with `identity.entropy`. Done means
/// all of it is in place; a refused value comes back as
/// [`AgentError::Guest`] with `ErrorCode::Invalid`, and changed nothing.
pub async fn set_identity(conversation: &Arc<Conversation>, identity: &Identity) -> Result<(), AgentError> {
    let mut channel = conversation.open(&Request::SetIdentity(identity.clone())).await?;
    match final_reply(&mut channel).await? {
        Reply::Done { .. } => Ok(()),
        other => Err(unexpected(other, "the identity set")),
    }
}
