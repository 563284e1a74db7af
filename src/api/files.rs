//! `/vms/{id}/files?path=…`: files in the guest through its agent.
//! `PUT` streams the body into the file (written beside it and renamed
//! over it, so readers never see half a file); `GET` streams it back, or
//! lists a directory with `list=true`; `DELETE` removes it.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::agent::{agent_error, session, validate_guest_path};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::json::ApiQuery;
use super::AppState;
use crate::agent::files;
use crate::agent::proto::{DirEntry, WriteFileRequest};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    pub path: Option<String>,
    /// Octal permission bits for `PUT` (e.g. `0755`); 0644 when absent.
    pub mode: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `GET` lists the directory instead of reading a file.
    pub list: Option<bool>,
}

impl FileQuery {
    fn path(&self) -> ApiResult<String> {
        let path = self
            .path
            .as_deref()
            .ok_or_else(|| ApiError::invalid("path", "is required: ?path=/absolute/path"))?;
        validate_guest_path("path", path)
    }
}

/// `mode` as octal permission bits.
pub fn parse_mode(text: &str) -> ApiResult<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777 && !digits.is_empty())
        .ok_or_else(|| ApiError::invalid("mode", "must be octal permission bits, e.g. 0644 or 0755"))
}

#[derive(Debug, Serialize)]
pub struct Written {
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub path: String,
    pub entries: Vec<DirEntry>,
}

pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<FileQuery>,
    body: Body,
) -> ApiResult<Json<Written>> {
    let mut body = Some(body);
    let written = write_file(&state, &caller, &id, &query, &mut body).await;
    if written.is_err() {
        if let Some(unread) = body {
            drain(unread).await;
        }
    }
    written.map(Json)
}

/// Checks the request and streams the body into the guest; takes the body
/// out of `body` only once the guest is ready for it.
async fn write_file(
    state: &AppState,
    caller: &Caller,
    id: &str,
    query: &FileQuery,
    body: &mut Option<Body>,
) -> ApiResult<Written> {
    let path = query.path()?;
    let mode = query.mode.as_deref().map(parse_mode).transpose()?;
    if query.list.is_some() {
        return Err(ApiError::invalid("list", "applies to GET only"));
    }
    let session = session(state, caller, id).await?;
    let request = WriteFileRequest {
        path: path.clone(),
        mode,
        uid: query.uid,
        gid: query.gid,
    };
    let body = body.take().unwrap_or_default();
    let bytes = files::write(&session.conversation, request, body.into_data_stream())
        .await
        .map_err(|e| agent_error(e, "path"))?;
    Ok(Written { path, bytes })
}

/// Reads (and drops) some of an upload refused before it was read: an HTTP
/// client still sending its body when the answer comes and the connection
/// closes sees a write error instead of the answer.
async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let mut left = DRAIN_LIMIT_BYTES;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
        left = left.saturating_sub(chunk.len());
        if left == 0 {
            break;
        }
    }
}

/// How much of a refused upload is read before answering, at most.
const DRAIN_LIMIT_BYTES: usize = 16 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<FileQuery>,
) -> ApiResult<Response> {
    let path = query.path()?;
    if query.mode.is_some() || query.uid.is_some() || query.gid.is_some() {
        return Err(ApiError::invalid("mode", "mode, uid and gid apply to PUT only"));
    }
    let session = session(&state, &caller, &id).await?;
    if query.list == Some(true) {
        let entries = files::list(&session.conversation, path.clone())
            .await
            .map_err(|e| agent_error(e, "path"))?;
        return Ok(Json(Listing { path, entries }).into_response());
    }
    let (info, content) = files::read(&session.conversation, path)
        .await
        .map_err(|e| agent_error(e, "path"))?;
    // The session (and the activity it holds) lives as long as the body.
    let body = content.into_stream().map(move |chunk| {
        let _held = &session;
        chunk.map_err(std::io::Error::other)
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    headers.insert("x-file-mode", header_text(&format!("{:04o}", info.mode & 0o7777)));
    headers.insert("x-file-uid", HeaderValue::from(info.uid));
    headers.insert("x-file-gid", HeaderValue::from(info.gid));
    Ok(response)
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<FileQuery>,
) -> ApiResult<StatusCode> {
    let path = query.path()?;
    let session = session(&state, &caller, &id).await?;
    files::delete(&session.conversation, path)
        .await
        .map_err(|e| agent_error(e, "path"))?;
    Ok(StatusCode::NO_CONTENT)
}

fn header_text(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_permission_bits() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("755").unwrap(), 0o755);
        assert_eq!(parse_mode("0o4755").unwrap(), 0o4755);
        for bad in ["", "0o", "888", "rwx", "17777", "-1"] {
            assert_eq!(parse_mode(bad).unwrap_err().field.as_deref(), Some("mode"), "{bad:?}");
        }
    }
}
