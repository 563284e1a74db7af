//! The subdomain reverse proxy: `<subdomain>.<base_domain>` → a VM's port.
//!
//! ```text
//! client ──HTTP/1.1 (or over TLS)──▶ server (accept, TLS, graceful shutdown)
//!            └▶ front: own keep-alive loop for bodiless requests, hyper's server for the rest
//!                       └▶ handler: host → subdomain → RouteResolver::resolve
//!                            ├ NotFound → 404, Unavailable → 503 + Retry-After
//!                            └ Target → headers rewritten → upstream pool ──▶ guest
//!                                 ├ own HTTP/1.1 exchange (h1), response body
//!                                 │  read from the guest's connection (TrackedBody)
//!                                 └ upgrades: hyper's client; 101 → tunnel
//! ```
//!
//! The proxy knows nothing about VMs' states: the resolver (implemented by
//! orchestration) decides, and wakes a sleeping VM before answering, using
//! [`WakeCoordinator`] (one wake per VM however many requests wait) and
//! [`wait_port_open`] (forward only once the guest's port accepts), so a
//! waking VM yields 503 at worst, never 502. Every exchange is counted in
//! [`ActiveConnections`] while open, for the idle monitor.
//!
//! How orchestration plugs in (a sketch of the real resolver):
//!
//! ```text
//! resolve(sub):  route = store.route_by_subdomain(sub)?   else NotFound
//!                vm = store.vm(route.vm_id); addr = (vm.guest_ip, route.target_port)
//!                Running                  → Target { vm_id, addr }
//!                Snapshotted + auto_wake  → wake.wake_until_ready(vm_id, addr, || orch.restore(vm_id))
//!                                           Ok → Target, Err(e) → Resolution::from_wake_error(&e, retry)
//!                Restoring/Starting       → the same call (joins the wake, waits for the port)
//!                otherwise                → Unavailable { retry_after: None, message }
//! activity(vm, event): cheap, non-blocking (e.g. remember the time; persist
//!                `last_activity_at` from the idle pass, not per request).
//! after snapshot/stop/delete: UpstreamConnections::forget_vm(vm_id) drops
//!                pooled connections to an address that may be reused
//!                (orchestration calls it through its VmObserver hook).
//! ```

mod activity;
mod body;
mod coarse_clock;
mod deadline;
mod front;
mod h1;
mod handler;
mod headers;
mod host;
mod ready;
mod resolver;
mod server;
mod stop;
mod tunnel;
mod upstream;
mod wake;

use std::time::Duration;

pub use activity::{ActiveConnections, HeldActivity};
pub use body::{BoxError, ProxyBody};
pub use h1::{BodyError, ChunkError, ExchangeError, HeadError};
pub use host::subdomain_of;
pub use ready::{wait_port_open, PortWaitError};
pub use resolver::{ActivityEvent, Resolution, RouteResolver};
pub use server::{spawn_proxy, ProxyHandle, UpstreamConnections};
pub use upstream::UpstreamError;
pub use wake::{WakeCoordinator, WakeError};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the proxy listener has no local address: {0}")]
    ListenerAddress(#[source] std::io::Error),
}

/// How the proxy behaves. [`ProxyConfig::new`] gives sensible defaults.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Routes answer on `<subdomain>.<base_domain>` (HATCH_PROXY_BASE_DOMAIN).
    pub base_domain: String,
    /// Giving up on connecting to a running guest (then 502).
    pub connect_timeout: Duration,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long the guest may take to begin its answer once the request
    /// is sent (HATCH_PROXY_UPSTREAM_TIMEOUT; then 504). A guest that never
    /// answers would otherwise hold the request, and the proxy's sockets,
    /// for as long as the client waits.
    pub upstream_timeout: Duration,
    /// Idle keep-alive connections kept per VM port.
    pub max_idle_per_target: usize,
    /// Idle upstream connections older than this are not reused.
    pub upstream_idle_timeout: Duration,
    /// How often an open stream or tunnel reports that it is still active.
    pub activity_tick: Duration,
    /// Keep `X-Forwarded-Proto`/`-Host` from clients: only when a trusted
    /// TLS terminator is the only client of the proxy.
    pub trust_forwarded_headers: bool,
    /// Terminate TLS with this configuration (HATCH_PROXY_TLS_CERT/KEY,
    /// normally a wildcard certificate for the base domain); `None`: plain HTTP.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// `Strict-Transport-Security: max-age=…` on answers over TLS
    /// (HATCH_PROXY_HSTS); never sent over plain HTTP.
    pub hsts: Option<Duration>,
    /// Where requests, latency and bytes are counted by route (the
    /// daemon's `GET /metrics`); `None`: not counted.
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// The activity registry to count proxied traffic in (the daemon's one,
    /// which exec and file calls count in too); `None`: the proxy's own.
    pub activity: Option<std::sync::Arc<ActiveConnections>>,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("base_domain", &self.base_domain)
            .field("connect_timeout", &self.connect_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("upstream_timeout", &self.upstream_timeout)
            .field("max_idle_per_target", &self.max_idle_per_target)
            .field("upstream_idle_timeout", &self.upstream_idle_timeout)
            .field("activity_tick", &self.activity_tick)
            .field("trust_forwarded_headers", &self.trust_forwarded_headers)
            .field("tls", &self.tls.is_some())
            .field("hsts", &self.hsts)
            .finish()
    }
}

impl ProxyConfig {
    pub fn new(base_domain: impl Into<String>) -> Self {
        Self {
            base_domain: base_domain.into(),
            connect_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(60),
            max_idle_per_target: 32,
            upstream_idle_timeout: Duration::from_secs(30),
            activity_tick: Duration::from_secs(10),
            trust_forwarded_headers: false,
            tls: None,
            hsts: None,
            metrics: None,
            activity: None,
        }
    }
}
