//! Connections from the proxy to guest services, kept alive and reused.
//!
//! Each (VM, address) has a small pool of idle HTTP/1.1 connections. A
//! connection is lent to one exchange ([`super::h1`], run in the client
//! connection's task) and goes back to the pool from the response body,
//! once that has been read to its end ([`Lent`]). Upgrade requests always
//! get a fresh connection through hyper's client, which then belongs to the
//! tunnel.
//!
//! A pooled connection can die between two requests without the proxy
//! noticing in time (the guest's server closed it as the request went out,
//! or the VM behind it was restarted). A request that can safely be sent
//! twice (GET, HEAD or OPTIONS without a body) is then sent once more on a
//! fresh connection instead of answering 502.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::client::conn::http1;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

use super::coarse_clock;
use super::h1::{Connection, ExchangeError, RequestFraming, ResponseBody, ResponseHead};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("{addr} did not answer the request: {source}")]
    Exchange {
        addr: SocketAddr,
        #[source]
        source: ExchangeError,
    },
    #[error("HTTP handshake for an upgrade with {addr} failed: {source}")]
    UpgradeHandshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("{addr} did not answer the upgrade request: {source}")]
    Upgrade {
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
    /// How long the guest may take to begin its answer once the request is sent.
    pub answer_timeout: Duration,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Target {
    vm_id: Arc<str>,
    addr: SocketAddr,
}

struct IdleConnection {
    connection: Connection,
    /// [`coarse_clock::monotonic_ms`] when it came back.
    idle_since_ms: u64,
}

// Keys are Hatch's own VM ids and guest addresses, never a client's
// choice: a fast hash without flooding resistance does (two lookups per request).
type Idle = FxHashMap<Target, Vec<IdleConnection>>;

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

    /// Sends a request (`head` from [`super::h1::encode_request`], then
    /// `body` if any) over an idle connection if one is usable, else a new
    /// one; the answer's body holds the connection until it is read.
    pub(crate) async fn send(
        &self,
        vm_id: &Arc<str>,
        addr: SocketAddr,
        head: &[u8],
        method: &Method,
        body: Option<(Incoming, RequestFraming)>,
    ) -> Result<GuestAnswer, UpstreamError> {
        let target = Target {
            vm_id: Arc::clone(vm_id),
            addr,
        };
        let head_request = *method == Method::HEAD;
        // Idempotent (RFC 9110 §9.2.2) and bodiless: nothing of the
        // client's is consumed by a first try, so it may be sent twice.
        let replayable = body.is_none() && matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut body = body;
        let answer_within = self.config.answer_timeout;

        while let Some(mut connection) = self.checkout(&target) {
            match connection.exchange(head, &mut body, head_request, answer_within).await {
                Ok(answer) => return Ok(self.respond(target, connection, answer)),
                Err(error) if error.unsent() => continue,
                Err(error) if replayable && error.nothing_answered() => {
                    tracing::debug!(%addr, %error, "pooled connection failed; retrying on a new one");
                    break;
                }
                Err(source) => return Err(UpstreamError::Exchange { addr, source }),
            }
        }
        let mut connection = Connection::new(self.connect(addr).await?);
        match connection.exchange(head, &mut body, head_request, answer_within).await {
            Ok(answer) => Ok(self.respond(target, connection, answer)),
            Err(source) => Err(UpstreamError::Exchange { addr, source }),
        }
    }

    fn respond(&self, target: Target, connection: Connection, head: ResponseHead) -> GuestAnswer {
        let home = Lent {
            pool: self.clone(),
            target,
        };
        let body = ResponseBody::new(connection, head.framing, head.keep_alive, home);
        GuestAnswer { head, body }
    }

    /// Sends `request` on a new connection that is never pooled (upgrades),
    /// through hyper's client, which hands the connection over to the tunnel.
    pub(crate) async fn send_fresh(
        &self,
        addr: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let stream = self.connect(addr).await?;
        let (mut sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::UpgradeHandshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%addr, %error, "upstream connection ended");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|source| UpstreamError::Upgrade { addr, source })
    }

    /// Closes the idle connections to a VM (call when it is suspended,
    /// stopped or deleted: its address may soon belong to another VM).
    pub(crate) fn forget_vm(&self, vm_id: &str) {
        lock(&self.idle).retain(|target, _| &*target.vm_id != vm_id);
    }

    pub(crate) fn idle_count(&self) -> usize {
        lock(&self.idle).values().map(Vec::len).sum()
    }

    fn checkout(&self, target: &Target) -> Option<Connection> {
        let mut idle = lock(&self.idle);
        let connections = idle.get_mut(target)?;
        let now = coarse_clock::monotonic_ms();
        while let Some(mut idle) = connections.pop() {
            if self.fresh(&idle, now) && idle.connection.is_idle_and_open() {
                return Some(idle.connection);
            }
        }
        None
    }

    fn check_in(&self, target: Target, connection: Connection) {
        let now = coarse_clock::monotonic_ms();
        let mut idle = lock(&self.idle);
        let connections = idle.entry(target).or_default();
        // Stale ones are skipped at checkout anyway: sweep only to make room.
        if connections.len() >= self.config.max_idle_per_target {
            connections.retain(|c| self.fresh(c, now));
        }
        if connections.len() < self.config.max_idle_per_target {
            connections.push(IdleConnection {
                connection,
                idle_since_ms: now,
            });
        }
    }

    fn fresh(&self, idle: &IdleConnection, now_ms: u64) -> bool {
        u128::from(now_ms.saturating_sub(idle.idle_since_ms)) < self.config.idle_timeout.as_millis()
    }

    async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
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
        Ok(stream)
    }
}

/// A guest's answer: its head, and its body still to be read.
pub(crate) struct GuestAnswer {
    pub head: ResponseHead,
    pub body: ResponseBody,
}

/// How the client's body goes to the guest (`None`: it sent none): under
/// its own Content-Length when it gave one, else chunked.
pub(crate) fn framed(headers: &hyper::HeaderMap, body: Option<Incoming>) -> Option<(Incoming, RequestFraming)> {
    let body = body.filter(|body| !body.is_end_stream())?;
    let framing = if headers.contains_key(hyper::header::CONTENT_LENGTH) && body.size_hint().exact().is_some() {
        RequestFraming::Length
    } else {
        RequestFraming::Chunked
    };
    Some((body, framing))
}

/// Where a lent connection goes back to once its exchange is over.
pub(crate) struct Lent {
    pool: UpstreamPool,
    target: Target,
}

impl Lent {
    pub(crate) fn give_back(self, connection: Connection) {
        self.pool.check_in(self.target, connection);
    }
}

fn lock(idle: &Mutex<Idle>) -> MutexGuard<'_, Idle> {
    idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
