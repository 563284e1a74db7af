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
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio_util::task::TaskTracker;

use super::activity::{ActiveConnections, ActivityGuard, VmActivity};
use super::body::{empty, json_error, tracked, unavailable, ProxyBody};
use super::front::OwnRequest;
use super::h1::{encode_request, ExchangeError, RequestFraming, RequestHead, ResponseHead};
use super::headers::{onward, strip_hop_by_hop, Fields, Forwarded, Forwarding, HopByHop, Present};
use super::host::subdomain_of;
use super::resolver::{Resolution, RouteResolver};
use super::stop::StopSignal;
use super::tunnel::{self, Tunnel};
use super::upstream::{framed, GuestAnswer, UpstreamError, UpstreamPool};
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
    /// The Strict-Transport-Security an answer over TLS gets when the
    /// guest sent none (made once, not for every answer).
    pub hsts: Option<HeaderValue>,
}

impl ProxyState {
    /// The value of [`ProxyState::hsts`] for `config`.
    pub(crate) fn hsts_of(config: &ProxyConfig) -> Option<HeaderValue> {
        let max_age = config.hsts.filter(|_| config.tls.is_some())?;
        HeaderValue::from_str(&format!("max-age={}", max_age.as_secs())).ok()
    }
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

/// A request as a client connection's reader hands it over.
pub(crate) enum ClientRequest {
    /// Read by hyper's server, with its body.
    Hyper(Parts, Incoming),
    /// Read by the proxy's own loop, its head as it came.
    Own(OwnRequest),
}

impl ClientRequest {
    /// The host it is for, `None` when it names none or two: the
    /// authority of an absolute-form target takes precedence over the Host
    /// header (RFC 9112 §3.2.2), and of two Host headers the guest might
    /// route by the other.
    fn host(&self) -> Option<HeaderValue> {
        match self {
            ClientRequest::Hyper(parts, _) => {
                if let Some(authority) = parts.uri.authority() {
                    return HeaderValue::from_str(authority.as_str()).ok();
                }
                only(parts.headers.get_all(HOST).iter().cloned())
            }
            ClientRequest::Own(request) => only(request.fields.values("host"))
                .and_then(|value| HeaderValue::from_maybe_shared(request.fields.shared(value)).ok()),
        }
    }
}

/// The one item of `items`; `None` for none or more.
fn only<T>(mut items: impl Iterator<Item = T>) -> Option<T> {
    let first = items.next()?;
    items.next().is_none().then_some(first)
}

/// What a request is answered with.
pub(crate) enum Answer {
    /// A whole response: the proxy's own (an error) or an upgrade's.
    Response(Response<ProxyBody>),
    /// The guest's: its head as it came (hop-by-hop fields still in), and
    /// its body.
    Guest(ResponseHead, ProxyBody),
}

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Answer::Response(response) => response.status(),
            Answer::Guest(head, _) => head.status,
        }
    }
}

/// hyper's service: one request on a connection hyper serves.
pub(crate) async fn handle(
    state: Arc<ProxyState>,
    client: Arc<Client>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let mut response = match answer(&state, &client, ClientRequest::Hyper(parts, body)).await {
        Answer::Response(response) => response,
        Answer::Guest(head, body) => guest_response(head, body),
    };
    if let Some(hsts) = &state.hsts {
        add_hsts(&mut response, hsts);
    }
    Ok(response)
}

/// The guest's answer as a response for hyper's server, without its
/// hop-by-hop fields.
fn guest_response(head: ResponseHead, body: ProxyBody) -> Response<ProxyBody> {
    let hop_by_hop = HopByHop::of(&head.fields, head.present);
    let Ok(headers) = head.fields.header_map(|name| !hop_by_hop.stops(name)) else {
        // httparse and the http crate accept the same fields: never seen.
        return json_error(
            StatusCode::BAD_GATEWAY,
            "the guest's answer has an invalid header field",
        );
    };
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = headers;
    response
}

/// The answer to one request: forwarded where its host's route leads,
/// counted in the metrics.
pub(crate) async fn answer(state: &ProxyState, client: &Client, request: ClientRequest) -> Answer {
    let started = state.config.metrics.as_ref().map(|_| std::time::Instant::now());
    // Here, not in a function of its own: each async layer copies the
    // request and the answer once more.
    let (answer, label) = match find_route(state, client, request.host()).await {
        Ok(route) => {
            let answer = forward(state, client, request, &route).await;
            (answer, Some(Arc::clone(&route.subdomain)))
        }
        Err((response, label)) => (Answer::Response(response), label),
    };
    if let (Some(metrics), Some(started)) = (&state.config.metrics, started) {
        let route = label.as_deref().unwrap_or(UNMATCHED);
        metrics.observe_proxy_request(route, answer.status().as_u16(), started.elapsed());
    }
    answer
}

/// Strict-Transport-Security on an answer over TLS, unless the guest's
/// service sent its own (or the answer switches protocols).
fn add_hsts(response: &mut Response<ProxyBody>, hsts: &HeaderValue) {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    if let hyper::header::Entry::Vacant(entry) = response.headers_mut().entry(STRICT_TRANSPORT_SECURITY) {
        entry.insert(hsts.clone());
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
    host: Option<HeaderValue>,
) -> Result<Arc<KnownRoute>, (Response<ProxyBody>, Option<Arc<str>>)> {
    let Some(host) = host else {
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
                // A copy: the request's own value shares the buffer its
                // head was read into, which a kept route must not hold on to.
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

async fn forward(state: &ProxyState, client: &Client, request: ClientRequest, route: &KnownRoute) -> Answer {
    let config = &state.config;
    let guard = ActivityGuard::begin(
        Arc::clone(&route.vm_id),
        Arc::clone(&route.activity),
        Arc::clone(&state.resolver),
        config.activity_tick,
    );
    let forwarding = Forwarding {
        client: &client.forwarded_for,
        host: &route.host,
        proto: if config.tls.is_some() { "https" } else { "http" },
        trust_incoming: config.trust_forwarded_headers,
    };
    let mut head = client.take_head_buffer();
    // The request's own bytes are let go of once its head is written:
    // those of the own loop's share the client connection's read buffer,
    // which is then reused for the next request instead of allocating another.
    let (method, body) = match request {
        ClientRequest::Own(request) => {
            let outgoing = Outgoing {
                method: &request.method,
                target: request.fields.part(request.target),
                fields: &request.fields,
                present: request.present,
            };
            outgoing.encode(&forwarding, RequestFraming::None, &mut head);
            (request.method, None)
        }
        ClientRequest::Hyper(mut parts, body) => {
            let present = Present::of(&parts.headers);
            // hyper leaves the means to take the connection over in an
            // upgrade request's extensions.
            if present.wants_upgrade(&parts.headers) {
                if let Some(client_upgrade) = parts.extensions.remove::<OnUpgrade>() {
                    let forwarded = Forwarded::of(&parts.headers, &forwarding, present);
                    strip_hop_by_hop(&mut parts.headers, true, present);
                    forwarded.insert_into(&mut parts.headers, &route.host);
                    parts.uri = origin_form(&parts.uri);
                    parts.version = Version::HTTP_11;
                    let request = Request::from_parts(parts, body);
                    // Boxed: rare, and every request's future would
                    // otherwise carry (and move) room for it.
                    let upgraded = Box::pin(upgrade_or_answer(state, request, client_upgrade, route, guard));
                    return Answer::Response(upgraded.await);
                }
            }
            let body = framed(&parts.headers, Some(body));
            let outgoing = Outgoing {
                method: &parts.method,
                target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes(),
                fields: &parts.headers,
                present,
            };
            let framing = body.as_ref().map_or(RequestFraming::None, |(_, framing)| *framing);
            outgoing.encode(&forwarding, framing, &mut head);
            (parts.method, body)
        }
    };
    let sent = Box::pin(state.pool.send(&route.vm_id, route.addr, &head, &method, body)).await;
    client.keep_head_buffer(head);
    match sent {
        Ok(GuestAnswer { head, body }) => {
            let bytes = config.metrics.as_ref().map(|m| m.proxy_bytes(&route.subdomain));
            Answer::Guest(head, tracked(body, guard, bytes))
        }
        Err(error) => Answer::Response(bad_gateway(&route.vm_id, route.addr, &error)),
    }
}

/// A client's request as the guest is to get it: upstream connections are
/// HTTP/1.1 (so they can be kept alive, whatever the client spoke), the
/// target in origin form, the client's fields but the hop-by-hop ones,
/// `Host` and the forwarding headers written by the proxy.
struct Outgoing<'a, F> {
    method: &'a Method,
    /// Path and query.
    target: &'a [u8],
    fields: &'a F,
    present: Present,
}

impl<F: Fields> Outgoing<'_, F> {
    fn encode(&self, forwarding: &Forwarding<'_>, framing: RequestFraming, out: &mut BytesMut) {
        let hop_by_hop = HopByHop::of(self.fields, self.present);
        let forwarded = Forwarded::of(self.fields, forwarding, self.present);
        let head = RequestHead {
            method: self.method,
            target: self.target,
            fields: onward(self.fields, &hop_by_hop, &forwarded),
            host: forwarding.host,
            forwarded: &forwarded,
        };
        out.clear();
        encode_request(head, framing, out);
    }
}

/// The guest's answer (to an upgrade request it did not accept) to the
/// client: its hop-by-hop headers dropped, its body streamed while the
/// exchange counts as activity.
fn pass_on(
    state: &ProxyState,
    mut response: Response<Incoming>,
    guard: ActivityGuard,
    subdomain: &str,
) -> Response<ProxyBody> {
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

/// 502 for a guest that failed the exchange, 504 for one too slow to answer.
fn bad_gateway(vm_id: &str, addr: SocketAddr, error: &UpstreamError) -> Response<ProxyBody> {
    tracing::warn!(%vm_id, %error, "upstream request failed");
    let port = addr.port();
    match error {
        UpstreamError::Exchange {
            source: ExchangeError::NoAnswer(limit),
            ..
        } => json_error(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("the service on port {port} of {vm_id} did not answer within {limit:?}"),
        ),
        _ => json_error(
            StatusCode::BAD_GATEWAY,
            &format!("the service on port {port} of {vm_id} did not answer"),
        ),
    }
}

/// Path and query only: the guest sees an ordinary origin-form request
/// (what an absolute-form target becomes; origin-form ones are left alone).
fn origin_form(uri: &Uri) -> Uri {
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    path.parse().unwrap_or_else(|_| Uri::from_static("/"))
}
