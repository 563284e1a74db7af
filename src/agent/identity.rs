//! A clone's own identity, applied by its agent right after restore.

use std::sync::Arc;

use hatch_agent_proto::{Identity, Reply, Request};

use super::conversation::Conversation;
use super::{final_reply, unexpected, AgentError};

/// Has the guest take `identity` (MAC, address, hostname, fresh entropy).
pub async fn set_identity(conversation: &Arc<Conversation>, identity: &Identity) -> Result<(), AgentError> {
    let mut channel = conversation.open(&Request::SetIdentity(identity.clone())).await?;
    match final_reply(&mut channel).await? {
        Reply::Done { .. } => Ok(()),
        other => Err(unexpected(other, "the identity taken")),
    }
}
