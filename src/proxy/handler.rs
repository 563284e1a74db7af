//! One proxied request: find the route from the host (the connection's
//! known route, else the resolver's answer), forward with rewritten
//! headers, stream the answer back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST, STRICT_TRANSPORT_SECURITY};
use hyper::http::request::Parts;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri, Version};
use tokio_util::task::TaskTracker;

use super::activity::{ActiveConnections, ActivityGuard, VmActivity};
use super::body::{empty, json_error, tracked, unavailable, ProxyBody};
use super::headers::{strip_hop_by_hop, take_forwarding, Forwarding, Present};
use super::host::subdomain_of;
use super::resolver::{Resolution, RouteResolver};
use super::stop::StopSignal;
use super::tunnel::{self, Tunnel};
use super::upstream::{UpstreamError, UpstreamPool};
use super::ProxyConfig;

/// Everything a request needs, shared by all connections of one proxy.
pub(crate) struct ProxyState {
    pub config: ProxyConfig,
    pub resolver: Arc<dyn RouteResolver>,
    pub pool: UpstreamPool,
    pub active: Arc<ActiveConnections>,
    pub tunnels: TaskTracker,
    /// Stop accepting; finish what is in flight, close idle connections.
    pub stop: StopSignal,
    /// The grace period is over: close everything.
    pub hard_stop: StopSignal,
}

/// Who sent a request: made once per client connection.
pub(crate) struct Client {
    /// Its IP as it goes into `X-Forwarded-For`.
    pub forwarded_for: HeaderValue,
    /// Where its last request went, reused for the next one to the same
    /// host while the resolver's answers hold.
    pub known_route: Mutex<Option<Arc<KnownRoute>>>,
    /// Where the last request's head to the guest was written, kept for
    /// the next one: a request's head then costs no allocation.
    head_buffer: Mutex<BytesMut>,
}

impl Client {
    pub(crate) fn new(forwarded_for: HeaderValue) -> Self {
        Self {
            forwarded_for,
            known_route: Mutex::new(None),
            head_buffer: Mutex::new(BytesMut::new()),
        }
    }

    fn take_head_buffer(&self) -> BytesMut {
        std::mem::take(&mut *lock(&self.head_buffer))
    }

    /// Keeps `buffer` for the next request unless an unusually large head
    /// grew it: an idle connection should not hold on to that.
    fn keep_head_buffer(&self, mut buffer: BytesMut) {
        if buffer.capacity() <= MAX_KEPT_HEAD_BUFFER {
            buffer.clear();
            *lock(&self.head_buffer) = buffer;
        }
    }

    fn known(&self, host: &HeaderValue, version: Option<u64>) -> Option<Arc<KnownRoute>> {
        let known = self.lock_known();
        let route = known.as_ref()?;
        (Some(route.version) == version && route.host == host).then(|| Arc::clone(route))
    }

    fn remember(&self, route: Arc<KnownRoute>) {
        *self.lock_known() = Some(route);
    }

    fn lock_known(&self) -> MutexGuard<'_, Option<Arc<KnownRoute>>> {
        lock(&self.known_route)
    }
}

/// The largest head buffer a client connection keeps between requests.
const MAX_KEPT_HEAD_BUFFER: usize = 8 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Requests on one connection come one at a time: never contended.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A host the resolver sent to a running VM's port, and what forwarding
/// there needs, made once for all the requests that follow to that host.
pub(crate) struct KnownRoute {
    /// As the client sent it.
    host: HeaderValue,
    /// The resolver's answers version it was learnt at.
    version: u64,
    subdomain: Arc<str>,
    vm_id: Arc<str>,
    addr: SocketAddr,
    activity: Arc<VmActivity>,
}

/// hyper's service: one request on a connection hyper serves.
pub(crate) async fn handle(
    state: Arc<ProxyState>,
    client: Arc<Client>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (parts, body) = request.into_parts();
    Ok(answer(&state, &client, parts, Some(body)).await)
}

/// The answer to one request (`body`: `None` when it has none): forwarded
/// where its host's route leads, counted in the metrics, with HSTS over TLS.
pub(crate) async fn answer(
    state: &ProxyState,
    client: &Client,
    parts: Parts,
    body: Option<Incoming>,
) -> Response<ProxyBody> {
    let started = state.config.metrics.as_ref().map(|_| std::time::Instant::now());
    // Here, not in a function of its own: each async layer copies the
    // request's parts and the response once more.
    let (mut response, label) = match find_route(state, client, &parts).await {
        Ok(route) => {
            let response = forward(state, client, parts, body, &route).await;
            (response, Some(Arc::clone(&route.subdomain)))
        }
        Err(answered) => answered,
    };
    if let (Some(metrics), Some(started)) = (&state.config.metrics, started) {
        let route = label.as_deref().unwrap_or(UNMATCHED);
        metrics.observe_proxy_request(route, response.status().as_u16(), started.elapsed());
    }
    if let (Some(_), Some(max_age)) = (&state.config.tls, state.config.hsts) {
        add_hsts(&mut response, max_age);
    }
    response
}

/// Strict-Transport-Security on an answer over TLS, unless the guest's
/// service sent its own (or the answer switches protocols).
fn add_hsts(response: &mut Response<ProxyBody>, max_age: std::time::Duration) {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    if let hyper::header::Entry::Vacant(entry) = response.headers_mut().entry(STRICT_TRANSPORT_SECURITY) {
        if let Ok(value) = HeaderValue::from_str(&format!("max-age={}", max_age.as_secs())) {
            entry.insert(value);
        }
    }
}

/// The metrics label of requests for hosts that are no route's: any name a
/// client sends must not become a series of its own.
const UNMATCHED: &str = "unmatched";

/// Where the request goes (the connection's known route, else the
/// resolver's answer), or the answer when it goes nowhere. Holds nothing of
/// the request once it returns.
async fn find_route(
    state: &ProxyState,
    client: &Client,
    request: &Parts,
) -> Result<Arc<KnownRoute>, (Response<ProxyBody>, Option<Arc<str>>)> {
    let Some(host) = request_host(request) else {
        return Err((
            json_error(StatusCode::BAD_REQUEST, "the request needs exactly one Host header"),
            None,
        ));
    };
    let version = state.resolver.answers_version();
    if let Some(known) = client.known(&host, version) {
        return Ok(known);
    }
    let host_text = String::from_utf8_lossy(host.as_bytes());
    let not_found = || json_error(StatusCode::NOT_FOUND, &format!("no route for host {host_text}"));
    let Some(subdomain) = subdomain_of(&host_text, &state.config.base_domain) else {
        return Err((not_found(), None));
    };
    let subdomain: Arc<str> = subdomain.into();
    let (resolution, reusable) = match state.resolver.resolve_now(&subdomain) {
        Some(resolution) => (resolution, version),
        None => (state.resolver.resolve(&subdomain).await, None),
    };
    match resolution {
        Resolution::Target { vm_id, addr } => {
            let known = Arc::new(KnownRoute {
                activity: state.active.of(&vm_id),
                // A copy: the request's own value shares hyper's read
                // buffer, which a kept route must not hold on to.
                host: HeaderValue::from_maybe_shared(Bytes::copy_from_slice(host.as_bytes()))
                    .unwrap_or_else(|_| host.clone()),
                version: reusable.unwrap_or_default(),
                subdomain,
                vm_id: vm_id.into(),
                addr,
            });
            if reusable.is_some() {
                client.remember(Arc::clone(&known));
            }
            Ok(known)
        }
        Resolution::NotFound => Err((not_found(), None)),
        Resolution::Unavailable { retry_after, message } => Err((unavailable(&message, retry_after), Some(subdomain))),
        Resolution::Error { message } => {
            tracing::warn!(%subdomain, %message, "route lookup failed");
            Err((
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "route lookup failed"),
                None,
            ))
        }
    }
}

/// The host a request is for: the authority of an absolute-form target
/// takes precedence over the Host header (RFC 9112 §3.2.2). `None` for
/// none, or for two Host headers (the guest might route by the other).
fn request_host(request: &Parts) -> Option<HeaderValue> {
    if let Some(authority) = request.uri.authority() {
        return HeaderValue::from_str(authority.as_str()).ok();
    }
    let mut hosts = request.headers.get_all(HOST).iter();
    let host = hosts.next()?;
    hosts.next().is_none().then(|| host.clone())
}

async fn forward(
    state: &ProxyState,
    client: &Client,
    mut request: Parts,
    body: Option<Incoming>,
    route: &KnownRoute,
) -> Response<ProxyBody> {
    let config = &state.config;
    let guard = ActivityGuard::begin(
        Arc::clone(&route.vm_id),
        Arc::clone(&route.activity),
        Arc::clone(&state.resolver),
        config.activity_tick,
    );
    let present = Present::of(&request.headers);
    // hyper leaves the means to take the connection over in an upgrade
    // request's extensions (its own, never on requests the proxy reads).
    let client_upgrade = present
        .wants_upgrade(&request.headers)
        .then(|| request.extensions.remove::<OnUpgrade>())
        .flatten();
    strip_hop_by_hop(&mut request.headers, client_upgrade.is_some(), present);
    let forwarding = Forwarding {
        client: &client.forwarded_for,
        host: &route.host,
        proto: if config.tls.is_some() { "https" } else { "http" },
        trust_incoming: config.trust_forwarded_headers,
    };
    let forwarded = take_forwarding(&mut request.headers, &forwarding, present);
    if request.uri.scheme().is_some() || request.uri.authority().is_some() {
        request.uri = origin_form(&request.uri);
    }
    // Upstream connections are HTTP/1.1 so they can be kept alive, whatever
    // the client spoke.
    request.version = Version::HTTP_11;

    let body = match (client_upgrade, body) {
        (Some(client_upgrade), Some(body)) => {
            let mut request = Request::from_parts(request, body);
            forwarded.insert_into(request.headers_mut());
            // Boxed: rare, and every request's future would otherwise carry
            // (and move) room for it.
            return Box::pin(upgrade_or_answer(state, request, client_upgrade, route, guard)).await;
        }
        (_, body) => body,
    };
    let mut head = client.take_head_buffer();
    let sent = Box::pin(
        state
            .pool
            .send(&route.vm_id, route.addr, request, body, &forwarded, &mut head),
    )
    .await;
    client.keep_head_buffer(head);
    match sent {
        Ok(response) => pass_on(state, response, guard, &route.subdomain),
        Err(error) => bad_gateway(&route.vm_id, route.addr, &error),
    }
}

/// The guest's answer to the client: its hop-by-hop headers dropped, its
/// body streamed while the exchange counts as activity.
fn pass_on<B>(
    state: &ProxyState,
    mut response: Response<B>,
    guard: ActivityGuard,
    subdomain: &str,
) -> Response<ProxyBody>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin + Send + Sync + 'static,
    B::Error: Into<super::body::BoxError>,
{
    let present = Present::of(response.headers());
    strip_hop_by_hop(response.headers_mut(), false, present);
    let bytes = state.config.metrics.as_ref().map(|m| m.proxy_bytes(subdomain));
    response.map(|body| tracked(body, guard, bytes))
}

/// An upgrade request goes over hyper's client on a fresh connection; a
/// 101 turns both connections into a tunnel, anything else is passed on.
async fn upgrade_or_answer(
    state: &ProxyState,
    request: Request<Incoming>,
    client_upgrade: OnUpgrade,
    route: &KnownRoute,
    guard: ActivityGuard,
) -> Response<ProxyBody> {
    let mut response = match state.pool.send_fresh(route.addr, request).await {
        Ok(response) => response,
        Err(error) => return bad_gateway(&route.vm_id, route.addr, &error),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let present = Present::of(response.headers());
        strip_hop_by_hop(response.headers_mut(), true, present);
        let tunnel = Tunnel {
            client: client_upgrade,
            upstream: upstream_upgrade,
            guard: guard.into_tunnel(),
        };
        tunnel::spawn(
            tunnel,
            state.config.activity_tick,
            &state.tunnels,
            state.hard_stop.token().clone(),
        );
        return response.map(|_| empty());
    }
    pass_on(state, response, guard, &route.subdomain)
}

fn bad_gateway(vm_id: &str, addr: SocketAddr, error: &UpstreamError) -> Response<ProxyBody> {
    tracing::warn!(%vm_id, %error, "upstream request failed");
    json_error(
        StatusCode::BAD_GATEWAY,
        &format!("the service on port {} of {vm_id} did not answer", addr.port()),
    )
}

/// Path and query only: the guest sees an ordinary origin-form request
/// (what an absolute-form target becomes; origin-form ones are left alone).
fn origin_form(uri: &Uri) -> Uri {
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    path.parse().unwrap_or_else(|_| Uri::from_static("/"))
}
