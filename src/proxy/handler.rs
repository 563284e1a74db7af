//! One proxied request: find the route from the host, ask the resolver,
//! forward with rewritten headers, stream the answer back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST, STRICT_TRANSPORT_SECURITY};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri, Version};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::activity::{ActiveConnections, ActivityGuard};
use super::body::{empty, json_error, tracked, unavailable, ProxyBody};
use super::headers::{add_forwarding, strip_hop_by_hop, wants_upgrade, Forwarding};
use super::host::subdomain_of;
use super::resolver::{Resolution, RouteResolver};
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
    pub hard_stop: CancellationToken,
}

/// Who sent a request: made once per client connection.
pub(crate) struct Client {
    /// Its IP as it goes into `X-Forwarded-For`.
    pub forwarded_for: HeaderValue,
}

pub(crate) async fn handle(
    state: Arc<ProxyState>,
    client: Arc<Client>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = state.config.metrics.as_ref().map(|_| std::time::Instant::now());
    let (mut response, label) = route(&state, &client, request).await;
    if let (Some(metrics), Some(started)) = (&state.config.metrics, started) {
        let route = label.as_deref().unwrap_or(UNMATCHED);
        metrics.observe_proxy_request(route, response.status().as_u16(), started.elapsed());
    }
    if let (Some(_), Some(max_age)) = (&state.config.tls, state.config.hsts) {
        add_hsts(&mut response, max_age);
    }
    Ok(response)
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

/// The response, and the subdomain of the route it was for (the metrics
/// label; `None` when the host is no route's).
async fn route(
    state: &ProxyState,
    client: &Client,
    request: Request<Incoming>,
) -> (Response<ProxyBody>, Option<String>) {
    let Some(host) = request_host(&request) else {
        return (
            json_error(StatusCode::BAD_REQUEST, "the request has no Host header"),
            None,
        );
    };
    let host_text = String::from_utf8_lossy(host.as_bytes());
    let Some(subdomain) = subdomain_of(&host_text, &state.config.base_domain) else {
        return (
            json_error(StatusCode::NOT_FOUND, &format!("no route for host {host_text}")),
            None,
        );
    };
    let resolution = match state.resolver.resolve_now(&subdomain) {
        Some(resolution) => resolution,
        None => state.resolver.resolve(&subdomain).await,
    };
    match resolution {
        Resolution::Target { vm_id, addr } => {
            let response = forward(state, client, request, &host, vm_id.into(), addr, &subdomain).await;
            (response, Some(subdomain))
        }
        Resolution::NotFound => (
            json_error(StatusCode::NOT_FOUND, &format!("no route for host {host_text}")),
            None,
        ),
        Resolution::Unavailable { retry_after, message } => (unavailable(&message, retry_after), Some(subdomain)),
        Resolution::Error { message } => {
            tracing::warn!(%subdomain, %message, "route lookup failed");
            (
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "route lookup failed"),
                None,
            )
        }
    }
}

/// The host a request is for: the authority of an absolute-form target
/// takes precedence over the Host header (RFC 9112 §3.2.2).
fn request_host(request: &Request<Incoming>) -> Option<HeaderValue> {
    match request.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => request.headers().get(HOST).cloned(),
    }
}

async fn forward(
    state: &ProxyState,
    client: &Client,
    mut request: Request<Incoming>,
    host: &HeaderValue,
    vm_id: Arc<str>,
    addr: SocketAddr,
    subdomain: &str,
) -> Response<ProxyBody> {
    let config = &state.config;
    let guard = ActivityGuard::begin(
        Arc::clone(&vm_id),
        Arc::clone(&state.active),
        Arc::clone(&state.resolver),
        config.activity_tick,
    );
    let upgrade = wants_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    strip_hop_by_hop(request.headers_mut(), upgrade);
    let forwarding = Forwarding {
        client: &client.forwarded_for,
        host,
        proto: if config.tls.is_some() { "https" } else { "http" },
        trust_incoming: config.trust_forwarded_headers,
    };
    add_forwarding(request.headers_mut(), &forwarding);
    if request.uri().scheme().is_some() || request.uri().authority().is_some() {
        *request.uri_mut() = origin_form(request.uri());
    }
    // Upstream connections are HTTP/1.1 so they can be kept alive, whatever
    // the client spoke.
    *request.version_mut() = Version::HTTP_11;

    if let Some(client_upgrade) = client_upgrade {
        return upgrade_or_answer(state, request, client_upgrade, addr, &vm_id, guard, subdomain).await;
    }
    match state.pool.send(&vm_id, addr, request).await {
        Ok(response) => pass_on(state, response, guard, subdomain),
        Err(error) => bad_gateway(&vm_id, addr, &error),
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
    strip_hop_by_hop(response.headers_mut(), false);
    let bytes = state.config.metrics.as_ref().map(|m| m.proxy_bytes(subdomain));
    response.map(|body| tracked(body, guard, bytes))
}

/// An upgrade request goes over hyper's client on a fresh connection; a
/// 101 turns both connections into a tunnel, anything else is passed on.
async fn upgrade_or_answer(
    state: &ProxyState,
    request: Request<Incoming>,
    client_upgrade: OnUpgrade,
    addr: SocketAddr,
    vm_id: &str,
    guard: ActivityGuard,
    subdomain: &str,
) -> Response<ProxyBody> {
    let mut response = match state.pool.send_fresh(addr, request).await {
        Ok(response) => response,
        Err(error) => return bad_gateway(vm_id, addr, &error),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        strip_hop_by_hop(response.headers_mut(), true);
        let tunnel = Tunnel {
            client: client_upgrade,
            upstream: upstream_upgrade,
            guard: guard.into_tunnel(),
        };
        tunnel::spawn(
            tunnel,
            state.config.activity_tick,
            &state.tunnels,
            state.hard_stop.clone(),
        );
        return response.map(|_| empty());
    }
    pass_on(state, response, guard, subdomain)
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
