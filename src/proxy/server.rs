//! Accepting client connections, and shutting down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::activity::ActiveConnections;
use super::front;
use super::handler::ProxyState;
use super::resolver::RouteResolver;
use super::stop::StopSignal;
use super::upstream::{PoolConfig, UpstreamPool};
use super::{ProxyConfig, ProxyError};

/// A running proxy. Dropping it leaves the proxy running; call
/// [`ProxyHandle::shutdown`] to stop it.
pub struct ProxyHandle {
    local_addr: SocketAddr,
    state: Arc<ProxyState>,
    connections: TaskTracker,
    accept_loop: JoinHandle<()>,
}

/// A handle on the proxy's keep-alive connections to guests; it stays
/// valid (and harmless) after the proxy shuts down.
#[derive(Clone)]
pub struct UpstreamConnections {
    pool: UpstreamPool,
}

impl UpstreamConnections {
    /// Closes the idle connections to a VM: after a snapshot, stop, crash
    /// or delete they lead nowhere, or to whichever VM gets the address next.
    pub fn forget_vm(&self, vm_id: &str) {
        self.pool.forget_vm(vm_id);
    }

    /// Idle keep-alive connections to guests right now.
    pub fn idle_count(&self) -> usize {
        self.pool.idle_count()
    }
}

/// Starts serving on `listener` (already bound, e.g. to HATCH_PROXY_ADDR).
pub fn spawn_proxy(
    listener: TcpListener,
    config: ProxyConfig,
    resolver: Arc<dyn RouteResolver>,
) -> Result<ProxyHandle, ProxyError> {
    let local_addr = listener.local_addr().map_err(ProxyError::ListenerAddress)?;
    let pool = UpstreamPool::new(PoolConfig {
        connect_timeout: config.connect_timeout,
        max_idle_per_target: config.max_idle_per_target,
        idle_timeout: config.upstream_idle_timeout,
        answer_timeout: config.upstream_timeout,
    });
    let active = config.activity.clone().unwrap_or_default();
    let state = Arc::new(ProxyState {
        hsts: ProxyState::hsts_of(&config),
        config,
        resolver,
        pool,
        active,
        tunnels: TaskTracker::new(),
        stop: StopSignal::default(),
        hard_stop: StopSignal::default(),
    });
    let connections = TaskTracker::new();
    let accept_loop = tokio::spawn(accept_loop(listener, Arc::clone(&state), connections.clone()));
    tracing::info!(%local_addr, base_domain = %state.config.base_domain, "proxy listening");
    Ok(ProxyHandle {
        local_addr,
        state,
        connections,
        accept_loop,
    })
}

impl ProxyHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The per-VM activity registry the idle monitor reads.
    pub fn active_connections(&self) -> Arc<ActiveConnections> {
        Arc::clone(&self.state.active)
    }

    /// The proxy's pooled connections to guests, for whoever learns that a
    /// VM stopped serving (orchestration) and must make the proxy forget them.
    pub fn upstreams(&self) -> UpstreamConnections {
        UpstreamConnections {
            pool: self.state.pool.clone(),
        }
    }

    /// Stops accepting, lets in-flight requests finish and closes idle
    /// keep-alive connections; after `grace`, closes whatever is left
    /// (including open WebSockets).
    pub async fn shutdown(self, grace: Duration) {
        self.state.stop.fire();
        let _ = self.accept_loop.await;
        self.connections.close();
        self.state.tunnels.close();
        let everything = async {
            self.connections.wait().await;
            self.state.tunnels.wait().await;
        };
        if tokio::time::timeout(grace, everything).await.is_err() {
            tracing::info!("proxy grace period over; closing remaining connections");
            self.state.hard_stop.fire();
            self.connections.wait().await;
            self.state.tunnels.wait().await;
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<ProxyState>, connections: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = state.stop.token().cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(serve_connection(stream, peer, Arc::clone(&state)));
            }
            Err(error) => {
                // Usually out of file descriptors: pause instead of spinning.
                tracing::warn!(%error, "accepting a proxy connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, state: Arc<ProxyState>) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = state.config.tls.clone() else {
        return front::serve(stream, peer, state).await;
    };
    // The handshake counts against the time a client has to send its headers.
    let handshake = tokio::time::timeout(
        state.config.header_read_timeout,
        tokio_rustls::TlsAcceptor::from(tls).accept(stream),
    );
    let stream = tokio::select! {
        _ = state.stop.token().cancelled() => return,
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
        },
    };
    front::serve(stream, peer, state).await;
}
