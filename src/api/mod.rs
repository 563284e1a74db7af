//! The authenticated REST API: parsing, validation and error mapping only;
//! every effect goes through orchestration (VMs) or the store (images,
//! templates, keys).
//!
//! [`routes`] is the one list of endpoints: the router is built from it and
//! the OpenAPI contract test checks the document against it.

mod agent;
mod audit;
pub mod auth;
pub mod error;
mod events;
pub mod exec;
mod exec_stream;
mod files;
mod fork;
mod health;
pub mod images;
pub mod json;
mod keys;
mod metrics;
pub mod openapi;
mod owner;
pub mod ratelimit;
pub mod routes;
mod snapshots;
pub mod templates;
mod ui;
pub mod validate;
mod vm_operation;
pub mod vms;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method};
use axum::routing::{self, MethodRouter};
use axum::Router;

use crate::config::Config;
use crate::orch::Orchestrator;
use crate::store::Store;
use error::{ApiError, ErrorKind};

/// Largest accepted request body (user_data's own limit is 64 KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub orch: Arc<Orchestrator>,
    pub config: Arc<Config>,
    /// Per-key buckets for mutating requests (`HATCH_RATE_LIMIT`).
    pub limiter: Arc<ratelimit::RateLimiter>,
}

impl AppState {
    pub fn new(store: Store, orch: Arc<Orchestrator>, config: Arc<Config>) -> Self {
        let limiter = Arc::new(ratelimit::RateLimiter::new(config.rate_limit));
        AppState {
            store: store.off_workers(),
            orch,
            config,
            limiter,
        }
    }
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a key.
    Public,
    /// Any active key; members see only what they own.
    Key,
    /// Admin keys only; a member key gets 403 `forbidden`.
    Admin,
}

/// One endpoint: method, path (axum syntax, `{id}`), access, handler.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub handler: MethodRouter<AppState>,
}

fn route(method: Method, path: &'static str, access: Access, handler: MethodRouter<AppState>) -> Route {
    Route {
        method,
        path,
        access,
        handler,
    }
}

/// Every endpoint of the API.
pub fn routes() -> Vec<Route> {
    use routing::{delete, get, post};
    use Access::{Admin, Key, Public};
    use Method as M;
    vec![
        route(M::GET, "/healthz", Public, get(health::healthz)),
        route(M::GET, "/openapi.json", Key, get(openapi::serve)),
        route(M::POST, "/images", Admin, post(images::register)),
        route(M::GET, "/images", Key, get(images::list)),
        route(M::GET, "/images/{id}", Key, get(images::show)),
        route(M::DELETE, "/images/{id}", Admin, delete(images::delete)),
        route(M::POST, "/templates", Key, post(templates::create)),
        route(M::GET, "/templates", Key, get(templates::list)),
        route(M::GET, "/templates/{id}", Key, get(templates::show)),
        route(M::DELETE, "/templates/{id}", Key, delete(templates::delete)),
        route(M::POST, "/vms", Key, post(vms::create)),
        route(M::GET, "/vms", Key, get(vms::list)),
        route(M::GET, "/vms/{id}", Key, get(vms::show)),
        route(M::DELETE, "/vms/{id}", Key, delete(vms::delete)),
        route(M::POST, "/vms/{id}/stop", Key, post(vms::stop)),
        route(M::POST, "/vms/{id}/start", Key, post(vms::start)),
        route(M::GET, "/vms/{id}/logs", Key, get(vms::logs)),
        route(M::GET, "/vms/{id}/events", Key, get(vms::events)),
        route(M::POST, "/vms/{id}/exec", Key, post(exec::run)),
        route(M::GET, "/vms/{id}/exec", Key, get(exec_stream::upgrade)),
        route(M::PUT, "/vms/{id}/files", Key, routing::put(files::put)),
        route(M::GET, "/vms/{id}/files", Key, get(files::get)),
        route(M::DELETE, "/vms/{id}/files", Key, delete(files::delete)),
        route(M::GET, "/host/events", Admin, get(vms::host_events)),
        route(M::GET, "/events", Key, get(events::stream)),
        route(M::POST, "/vms/{id}/owner", Admin, post(owner::reassign)),
        route(M::POST, "/vms/{id}/snapshot", Key, post(snapshots::create)),
        route(M::POST, "/vms/{id}/fork", Key, post(fork::fork)),
        route(M::POST, "/vms/{id}/restore", Key, post(snapshots::restore)),
        route(M::GET, "/vms/{id}/snapshots", Key, get(snapshots::list)),
        route(M::DELETE, "/snapshots/{id}", Key, delete(snapshots::delete)),
        route(M::POST, "/vms/{id}/routes", Key, post(routes::create)),
        route(M::GET, "/vms/{id}/routes", Key, get(routes::list)),
        route(M::DELETE, "/routes/{id}", Key, delete(routes::delete)),
        route(M::POST, "/keys", Admin, post(keys::create)),
        route(M::GET, "/keys", Admin, get(keys::list)),
        route(M::GET, "/keys/me", Key, get(keys::me)),
        route(M::PATCH, "/keys/{id}", Admin, routing::patch(keys::update)),
        route(M::DELETE, "/keys/{id}", Admin, delete(keys::revoke)),
        route(M::GET, "/audit", Admin, get(audit::list)),
        // Public instead when HATCH_METRICS_PUBLIC=true (see `access_of`).
        route(M::GET, "/metrics", Admin, get(metrics::serve)),
    ]
}

/// (method, path, access) of every route in [`routes`].
pub fn route_table() -> Vec<(Method, &'static str, Access)> {
    routes().into_iter().map(|r| (r.method, r.path, r.access)).collect()
}

/// Who may call `route` with this configuration: the documented access,
/// except `GET /metrics` without a key when HATCH_METRICS_PUBLIC=true.
fn access_of(route: &Route, config: &Config) -> Access {
    if route.path == "/metrics" && config.metrics_public {
        Access::Public
    } else {
        route.access
    }
}

pub fn router(state: AppState) -> Router {
    let mut public: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    let mut protected: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for r in routes() {
        let (group, handler) = match access_of(&r, &state.config) {
            Access::Public => (&mut public, r.handler),
            Access::Key => (&mut protected, r.handler),
            // Inside `require_key` (below), which puts the caller in the request.
            Access::Admin => (
                &mut protected,
                r.handler.route_layer(axum::middleware::from_fn(auth::require_admin)),
            ),
        };
        let merged = match group.remove(r.path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        group.insert(r.path, merged);
    }
    let build = |group: BTreeMap<&'static str, MethodRouter<AppState>>| {
        group
            .into_iter()
            .fold(Router::new(), |router, (path, handler)| router.route(path, handler))
    };
    let protected =
        build(protected).route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_key));
    build(public)
        .merge(protected)
        // The dashboard's files: not API endpoints, and served without a key.
        .merge(ui::router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state)
}

/// Unknown paths also need a key, so the API's shape is not probed anonymously.
async fn no_route(State(state): State<AppState>, headers: HeaderMap) -> ApiError {
    match auth::authenticate(&state.store, &headers).await {
        Some(_) => ApiError::new(ErrorKind::NotFound, "no such endpoint (see GET /openapi.json)"),
        None => ApiError::unauthorized(),
    }
}

async fn method_not_allowed(State(state): State<AppState>, headers: HeaderMap) -> ApiError {
    match auth::authenticate(&state.store, &headers).await {
        Some(_) => ApiError::new(ErrorKind::MethodNotAllowed, "method not allowed on this endpoint"),
        None => ApiError::unauthorized(),
    }
}

/// One log line per request: method, path (never the query or headers, which
/// may carry secrets), status and duration; and its latency in
/// `hatch_api_request_duration_seconds` by route template (`/vms/{id}`,
/// `unmatched` for unknown paths) so that ids do not become series.
async fn log_request(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |matched| matched.as_str().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    tracing::info!(%method, %path, status, elapsed_ms = elapsed.as_millis() as u64, "request");
    // Methods outside the standard ones are one label, whatever a client sends.
    let method_label = match method {
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::HEAD | Method::OPTIONS => {
            method.as_str()
        }
        _ => "OTHER",
    };
    state
        .orch
        .metrics()
        .observe_api_request(method_label, &route, status, elapsed);
    response
}
