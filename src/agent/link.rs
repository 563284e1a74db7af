//! Keeps one VM's agent conversation up for as long as its VMM runs.
//!
//! The guest side opens the stream, so the host only has to be there:
//! - [`AgentEndpoint::Listen`] (Firecracker vsock): the daemon listens on
//!   the socket Firecracker forwards the guest's connections to; each new
//!   connection replaces the previous conversation (the guest reconnects
//!   after a restore, or after its agent restarted).
//! - [`AgentEndpoint::Connect`] (QEMU virtio-serial): QEMU serves the port's
//!   socket; the daemon connects, and connects again whenever the stream
//!   ends (a restart of the agent is invisible on a serial port; a new
//!   QEMU process after a restore serves a new socket at the same path).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::conversation::Conversation;
use crate::vmm::AgentEndpoint;

/// Reconnection back-off bounds (QEMU's socket appears right after launch).
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_millis(500);

/// Told about each new conversation (to record readiness, set the clock).
pub type OnHello = Arc<dyn Fn(Arc<Conversation>) + Send + Sync>;

/// Told after the link's live conversation came or went (the agent's
/// status changed), to show it.
pub type OnChange = Arc<dyn Fn() + Send + Sync>;

/// Whom a link tells about its conversations.
#[derive(Clone)]
struct Hooks {
    on_hello: OnHello,
    on_change: OnChange,
}

pub struct AgentLink {
    current: watch::Receiver<Option<Arc<Conversation>>>,
    task: JoinHandle<()>,
}

impl AgentLink {
    pub fn start(vm_id: String, endpoint: AgentEndpoint, on_hello: OnHello) -> AgentLink {
        Self::start_reporting(vm_id, endpoint, on_hello, Arc::new(|| {}))
    }

    /// Like [`start`](Self::start), telling `on_change` whenever the live
    /// conversation comes or goes.
    pub fn start_reporting(
        vm_id: String,
        endpoint: AgentEndpoint,
        on_hello: OnHello,
        on_change: OnChange,
    ) -> AgentLink {
        let (publish, current) = watch::channel(None);
        let hooks = Hooks { on_hello, on_change };
        let task = match endpoint {
            AgentEndpoint::Listen(path) => tokio::spawn(listen(vm_id, path, publish, hooks)),
            AgentEndpoint::Connect(path) => tokio::spawn(connect(vm_id, path, publish, hooks)),
        };
        AgentLink { current, task }
    }

    /// The live conversation, if there is one.
    pub fn current(&self) -> Option<Arc<Conversation>> {
        self.current.borrow().clone().filter(|c| !c.is_closed())
    }

    /// Waits up to `wait` for a live conversation.
    pub async fn wait(&self, wait: Duration) -> Option<Arc<Conversation>> {
        let mut current = self.current.clone();
        let found = tokio::time::timeout(wait, async {
            loop {
                if let Some(conversation) = current.borrow_and_update().clone().filter(|c| !c.is_closed()) {
                    return Some(conversation);
                }
                if current.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        found.ok().flatten()
    }
}

impl Drop for AgentLink {
    fn drop(&mut self) {
        self.task.abort();
        // Requests still holding the conversation must not outlive the link
        // (the VMM is gone, or a new one has a new link).
        if let Some(conversation) = self.current.borrow().clone() {
            conversation.close();
        }
    }
}

/// Runs one conversation until it ends, published while it lasts.
async fn converse(vm_id: &str, stream: UnixStream, publish: &watch::Sender<Option<Arc<Conversation>>>, hooks: &Hooks) {
    match Conversation::start(stream).await {
        Ok(conversation) => {
            tracing::info!(vm = %vm_id, version = %conversation.hello().version, "guest agent connected");
            // The guest connects again only when its old stream is gone.
            if let Some(previous) = publish.send_replace(Some(conversation.clone())) {
                previous.close();
            }
            (hooks.on_change)();
            (hooks.on_hello)(conversation.clone());
            conversation.closed().await;
            tracing::info!(vm = %vm_id, "guest agent connection ended");
            let ended = publish.send_if_modified(|current| {
                let ours = current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conversation));
                if ours {
                    *current = None;
                }
                ours
            });
            if ended {
                (hooks.on_change)();
            }
        }
        Err(error) => tracing::debug!(vm = %vm_id, %error, "guest agent handshake failed"),
    }
}

async fn connect(vm_id: String, path: PathBuf, publish: watch::Sender<Option<Arc<Conversation>>>, hooks: Hooks) {
    let mut delay = RETRY_FIRST;
    loop {
        match UnixStream::connect(&path).await {
            Ok(stream) => {
                delay = RETRY_FIRST;
                converse(&vm_id, stream, &publish, &hooks).await;
            }
            Err(error) => {
                tracing::trace!(vm = %vm_id, path = %path.display(), %error, "agent socket not there yet");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

async fn listen(vm_id: String, path: PathBuf, publish: watch::Sender<Option<Arc<Conversation>>>, hooks: Hooks) {
    let listener = loop {
        match bind(&path) {
            Ok(listener) => break listener,
            Err(error) => {
                tracing::warn!(vm = %vm_id, path = %path.display(), %error, "cannot listen for the guest agent; retrying");
                tokio::time::sleep(RETRY_MAX).await;
            }
        }
    };
    let publish = Arc::new(publish);
    // Aborted with this task (the link's), so no conversation outlives it.
    let mut conversation_task: Option<tokio_util::task::AbortOnDropHandle<()>> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // The newest connection is the live one: the guest connects
                // again only when its old stream is gone.
                drop(conversation_task.take());
                let (vm_id, publish, hooks) = (vm_id.clone(), publish.clone(), hooks.clone());
                conversation_task = Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                    converse(&vm_id, stream, &publish, &hooks).await;
                })));
            }
            Err(error) => {
                tracing::warn!(vm = %vm_id, %error, "accepting a guest agent connection failed");
                tokio::time::sleep(RETRY_FIRST).await;
            }
        }
    }
}

/// Binds the socket afresh (a previous daemon's socket file is in the way)
/// and lets the VMM's user connect to it: the directory around it is what
/// keeps others out.
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}
