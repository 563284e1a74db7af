//! Connections from the proxy to guest services, kept alive and reused.
//!
//! Each (VM, address) has a small pool of idle HTTP/1.1 connections. A
//! connection is lent to one exchange ([`Lent`], held by the response body)
//! and goes back to the pool once its response has been read to the end
//! (hyper reports the sender ready again). Upgrade requests always get a
//! fresh connection, which then belongs to the tunnel.
//!
//! A pooled connection can die between two requests without the proxy
//! noticing in time (the guest's server closed it as the request went out,
//! or the VM behind it was restarted). A request that can safely be sent
//! twice (GET, HEAD or OPTIONS without a body) is then sent once more on a
//! fresh connection instead of answering 502.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("{addr} did not answer the request: {source}")]
    Exchange {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub connect_timeout: Duration,
    pub max_idle_per_target: usize,
    pub idle_timeout: Duration,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Target {
    vm_id: Arc<str>,
    addr: SocketAddr,
}

/// What the proxy sends upstream: the client's body, or nothing when a
/// bodiless request is replayed.
type UpstreamBody = Either<Incoming, Empty<Bytes>>;

struct IdleConnection {
    sender: SendRequest<UpstreamBody>,
    idle_since: Instant,
}

type Idle = HashMap<Target, Vec<IdleConnection>>;

#[derive(Clone)]
pub(crate) struct UpstreamPool {
    idle: Arc<Mutex<Idle>>,
    config: PoolConfig,
}

impl UpstreamPool {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Self {
            idle: Arc::default(),
            config,
        }
    }

    /// Sends `request` over an idle connection if one is usable, else a new
    /// one; the connection comes back with the response, to keep until its
    /// body has been passed on.
    pub(crate) async fn send(
        &self,
        vm_id: &Arc<str>,
        addr: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Lent), UpstreamError> {
        let target = Target {
            vm_id: Arc::clone(vm_id),
            addr,
        };
        let replay = Replay::of(&request);
        let mut request = request.map(Either::Left);
        while let Some(mut sender) = self.checkout(&target) {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lend(target, sender))),
                Err(mut failed) => match (failed.take_message(), &replay) {
                    // The connection closed before the request went out (the
                    // guest dropped an idle keep-alive): retry on another.
                    (Some(unsent), _) => request = unsent,
                    // It went out, but the connection died before a response
                    // came: safe to send once more, on a fresh connection.
                    (None, Some(replay)) => {
                        tracing::debug!(%addr, error = %failed.error(), "pooled connection failed; retrying on a new one");
                        request = replay.request();
                        break;
                    }
                    (None, None) => {
                        return Err(UpstreamError::Exchange {
                            addr,
                            source: failed.into_error(),
                        })
                    }
                },
            }
        }
        let mut sender = self.connect(addr).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| UpstreamError::Exchange { addr, source })?;
        Ok((response, self.lend(target, sender)))
    }

    /// Sends `request` on a new connection that is never pooled (upgrades).
    pub(crate) async fn send_fresh(
        &self,
        addr: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.connect(addr).await?;
        sender
            .send_request(request.map(Either::Left))
            .await
            .map_err(|source| UpstreamError::Exchange { addr, source })
    }

    /// Closes the idle connections to a VM (call when it is suspended,
    /// stopped or deleted: its address may soon belong to another VM).
    pub(crate) fn forget_vm(&self, vm_id: &str) {
        lock(&self.idle).retain(|target, _| &*target.vm_id != vm_id);
    }

    pub(crate) fn idle_count(&self) -> usize {
        lock(&self.idle).values().map(Vec::len).sum()
    }

    fn checkout(&self, target: &Target) -> Option<SendRequest<UpstreamBody>> {
        let mut idle = lock(&self.idle);
        let connections = idle.get_mut(target)?;
        let now = Instant::now();
        while let Some(connection) = connections.pop() {
            let fresh = now.duration_since(connection.idle_since) < self.config.idle_timeout;
            if fresh && connection.sender.is_ready() {
                return Some(connection.sender);
            }
        }
        None
    }

    fn lend(&self, target: Target, sender: SendRequest<UpstreamBody>) -> Lent {
        Lent {
            pool: self.clone(),
            connection: Some((target, sender)),
        }
    }

    /// Returns the connection to the pool once its current response has been
    /// read completely (usually already the case when the body that held it
    /// is done: then without a task); drops it if it closes instead.
    fn check_in_when_ready(&self, target: Target, mut sender: SendRequest<UpstreamBody>) {
        if sender.is_ready() {
            return self.check_in(target, sender);
        }
        if sender.is_closed() {
            return;
        }
        // No runtime (it is shutting down): the connection just closes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.clone();
        runtime.spawn(async move {
            if sender.ready().await.is_ok() {
                pool.check_in(target, sender);
            }
        });
    }

    fn check_in(&self, target: Target, sender: SendRequest<UpstreamBody>) {
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        let connections = idle.entry(target).or_default();
        // Stale ones are skipped at checkout anyway: sweep only to make room.
        if connections.len() >= self.config.max_idle_per_target {
            connections
                .retain(|c| now.duration_since(c.idle_since) < self.config.idle_timeout && !c.sender.is_closed());
        }
        if connections.len() < self.config.max_idle_per_target {
            connections.push(IdleConnection {
                sender,
                idle_since: now,
            });
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
        let stream = tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::Connect {
                addr,
                reason: format!("timed out after {:?}", self.config.connect_timeout),
            })?
            .map_err(|error| UpstreamError::Connect {
                addr,
                reason: error.to_string(),
            })?;
        // Small requests and responses must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%addr, %error, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// A pooled connection lent to one exchange; dropping it (with the response
/// body it carried) returns the connection to the pool.
pub(crate) struct Lent {
    pool: UpstreamPool,
    connection: Option<(Target, SendRequest<UpstreamBody>)>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some((target, sender)) = self.connection.take() {
            self.pool.check_in_when_ready(target, sender);
        }
    }
}

/// A copy of a request that may be sent twice: idempotent (RFC 9110 §9.2.2)
/// and without a body, so nothing of the client's is consumed by the first try.
struct Replay {
    method: Method,
    uri: hyper::Uri,
    version: hyper::Version,
    headers: hyper::HeaderMap,
}

impl Replay {
    fn of(request: &Request<Incoming>) -> Option<Replay> {
        let idempotent = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if !idempotent || !request.body().is_end_stream() {
            return None;
        }
        Some(Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        })
    }

    fn request(&self) -> Request<UpstreamBody> {
        let mut request = Request::new(Either::Right(Empty::new()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

fn lock(idle: &Mutex<Idle>) -> MutexGuard<'_, Idle> {
    idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
