//! Bearer-key authentication, and the admin key made on first start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
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
pub fn authenticate(store: &Store, headers: &HeaderMap) -> Option<ApiKeyInfo> {
    let key = presented_key(headers)?;
    match store.verify_api_key(key) {
        Ok(found) => found,
        Err(err) => {
            tracing::error!(%err, "checking an API key failed");
            None
        }
    }
}

/// Middleware for every protected route.
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match authenticate(&state.store, request.headers()) {
        Some(_) => next.run(request).await,
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
    let (info, plaintext) = store.create_api_key("admin")?;
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
