//! The seam between the proxy and whoever knows the routes (orchestration).

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;

use super::wake::WakeError;

/// Where a request for a subdomain should go, decided by a [`RouteResolver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Forward to `addr`; the VM is running and (if it was woken) its port
    /// already accepts connections.
    Target { vm_id: String, addr: SocketAddr },
    /// No route has this subdomain: 404.
    NotFound,
    /// The route exists but cannot be served now (stopped VM without
    /// auto-wake, wake timed out or failed): 503, with `Retry-After` when set.
    Unavailable {
        retry_after: Option<Duration>,
        message: String,
    },
    /// The resolver itself failed (for example the store could not be read): 500.
    Error { message: String },
}

impl Resolution {
    /// The answer for a request whose wake did not complete: always 503 (a
    /// waking VM never yields 502), with a hint of when to try again.
    pub fn from_wake_error(error: &WakeError, retry_after: Duration) -> Self {
        Resolution::Unavailable {
            retry_after: Some(retry_after),
            message: error.to_string(),
        }
    }
}

/// Proxied traffic for a VM, reported to the resolver so it can record
/// `last_activity_at`. The proxy's own [`super::ActiveConnections`] counts
/// the same events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityEvent {
    /// A request was accepted for the VM and is being forwarded.
    RequestStarted,
    /// The response (including its whole body) was delivered or abandoned.
    RequestFinished,
    /// A request was upgraded (WebSocket or other protocol) to a tunnel.
    TunnelOpened,
    /// A long-lived response body or tunnel is still open (sent periodically).
    StillOpen,
    /// A tunnel was closed by either side.
    TunnelClosed,
}

#[async_trait]
pub trait RouteResolver: Send + Sync + 'static {
    /// Looks up the route for a subdomain (lowercase, one DNS label) and
    /// returns where to send the request, waking the VM if needed.
    async fn resolve(&self, subdomain: &str) -> Resolution;
    /// The answer when it is known without waiting (a running VM, no route,
    /// a VM that will not be woken), else `None` and the proxy awaits
    /// [`RouteResolver::resolve`]. Spares the common case an allocated future.
    fn resolve_now(&self, _subdomain: &str) -> Option<Resolution> {
        None
    }
    /// A number that moves whenever an answer of
    /// [`RouteResolver::resolve_now`] may change, read before asking. While
    /// it stays put, a connection reuses a `Target` answer for the same
    /// host (a keep-alive client's requests usually all go to one) instead
    /// of asking again. `None` (the default): answers are never reused.
    fn answers_version(&self) -> Option<u64> {
        None
    }
    /// Proxied traffic seen for the VM (called at request start and end, and
    /// while long-lived streams/WebSockets stay open). Must not block.
    fn activity(&self, vm_id: &str, event: ActivityEvent);
}
