//! Bearer-key authentication, roles, rate limits and the audit log; and the
//! admin key made on first start.
//!
//! [`require_key`] wraps every protected route: it finds the key, takes a
//! rate-limit token for mutating requests, puts the [`Caller`] into the
//! request for handlers, and records mutating requests in the audit log.
//! [`require_admin`] additionally wraps admin-only routes (403 `forbidden`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorKind};
use super::AppState;
use crate::model::{Quotas, Role};
use crate::store::{ApiKeyInfo, Store, StoreError};

/// The key a request presents, if any (`Authorization: Bearer <key>`).
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

/// Whether the request carries an active key. Errors count as "no" (and are
/// logged), so a broken database never lets a request through.
/// A key in use is found in memory; only one memory does not hold (wrong,
/// revoked, or made by another process) is looked up on a blocking thread.
pub async fn authenticate(store: &Store, headers: &HeaderMap) -> Option<ApiKeyInfo> {
    let key = presented_key(headers)?;
    if let Some(found) = store.cached_api_key(key) {
        return Some(found);
    }
    let key = key.to_string();
    match store.run(move |store| store.verify_api_key(&key)).await {
        Ok(found) => found,
        Err(err) => {
            tracing::error!(%err, "checking an API key failed");
            None
        }
    }
}

/// The key that made a request, as handlers see it.
#[derive(Debug, Clone)]
pub struct Caller(pub ApiKeyInfo);

impl Caller {
    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub fn is_admin(&self) -> bool {
        self.0.role == Role::Admin
    }

    /// Whether this key may see an object owned by `owner` (admins see
    /// everything; members only what they own).
    pub fn can_see(&self, owner: Option<&str>) -> bool {
        self.is_admin() || owner == Some(self.id())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}

/// Requests that change something: rate-limited and audited.
pub fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Middleware for every protected route.
pub async fn require_key(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(key) = authenticate(&state.store, request.headers()).await else {
        return ApiError::unauthorized().into_response();
    };
    let mutating = is_mutating(request.method());
    let (method, path) = (request.method().to_string(), request.uri().path().to_string());
    let response = match mutating.then(|| state.limiter.take(&key.id)) {
        Some(Err(wait)) => rate_limited(wait),
        _ => {
            request.extensions_mut().insert(Caller(key.clone()));
            next.run(request).await
        }
    };
    if mutating {
        record_audit(&state.store, key.id, method, path, response.status().as_u16()).await;
    }
    response
}

/// Writes the audit row before the answer goes out (as a client reading
/// `GET /audit` next expects), on a blocking thread: the insert waits for
/// the write connection, which a VM's transition may hold, and must not
/// stall a runtime worker (and the reads queued on it) meanwhile.
async fn record_audit(store: &Store, key_id: String, method: String, path: String, status: u16) {
    let (logged_method, logged_path) = (method.clone(), path.clone());
    let recorded = store.run(move |store| store.record_audit(Some(&key_id), &method, &path, status));
    if let Err(err) = recorded.await {
        tracing::error!(%err, method = %logged_method, path = %logged_path, "recording the audit entry failed");
    }
}

/// 429 `rate_limited` with `Retry-After` in whole seconds (at least 1).
fn rate_limited(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = ApiError::new(
        ErrorKind::RateLimited,
        format!("too many requests from this key; retry in {seconds} s (HATCH_RATE_LIMIT)"),
    )
    .into_response();
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Middleware for admin-only routes, inside [`require_key`].
pub async fn require_admin(request: Request, next: Next) -> Response {
    match request.extensions().get::<Caller>() {
        Some(caller) if caller.is_admin() => next.run(request).await,
        Some(_) => ApiError::forbidden().into_response(),
        None => ApiError::unauthorized().into_response(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminKeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// On a first start (no active keys), creates an admin key and writes it to
/// `path` with mode 0600. Returns the path when a key was created.
pub fn ensure_admin_key(store: &Store, path: &Path) -> Result<Option<PathBuf>, AdminKeyError> {
    if store.count_active_api_keys()? > 0 {
        return Ok(None);
    }
    let write_error = |source| AdminKeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    // If the file cannot be written the key is revoked again, so a failure
    // never leaves an active key that nobody holds.
    let (info, plaintext) = store.create_api_key("admin", Role::Admin, Quotas::default())?;
    let written = (|| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // A stale file from an earlier install would keep its old mode; replace it.
        let _ = std::fs::remove_file(path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(format!("{plaintext}\n").as_bytes())?;
        file.sync_all()
    })();
    if let Err(source) = written {
        store.revoke_api_key(&info.id)?;
        return Err(write_error(source));
    }
    tracing::info!(path = %path.display(), "created the admin API key");
    Ok(Some(path.to_path_buf()))
}
