//! The API's one error type and the one mapping from every subsystem error to
//! an HTTP status and a stable `code`. Body: `{"error": {"code", "message", "field"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::model::QuotaExceeded;
use crate::orch::OrchError;
use crate::store::StoreError;

/// What went wrong, as clients branch on it. Codes are part of the API contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidField,
    InvalidJson,
    Unauthorized,
    Forbidden,
    QuotaExceeded,
    RateLimited,
    NotFound,
    MethodNotAllowed,
    Conflict,
    InvalidState,
    TooLarge,
    UnsupportedMediaType,
    Unavailable,
    InsufficientCapacity,
    Timeout,
    SnapshotCorrupt,
    /// The guest agent is not connected (or its connection broke).
    AgentUnavailable,
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 18] = [
        ErrorKind::InvalidField,
        ErrorKind::InvalidJson,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::QuotaExceeded,
        ErrorKind::RateLimited,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Conflict,
        ErrorKind::InvalidState,
        ErrorKind::TooLarge,
        ErrorKind::UnsupportedMediaType,
        ErrorKind::Unavailable,
        ErrorKind::InsufficientCapacity,
        ErrorKind::Timeout,
        ErrorKind::SnapshotCorrupt,
        ErrorKind::AgentUnavailable,
        ErrorKind::Internal,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidField | ErrorKind::InvalidJson => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden | ErrorKind::QuotaExceeded => StatusCode::FORBIDDEN,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Conflict | ErrorKind::InvalidState | ErrorKind::AgentUnavailable => StatusCode::CONFLICT,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::InsufficientCapacity => StatusCode::INSUFFICIENT_STORAGE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::SnapshotCorrupt => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidField => "invalid_field",
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidState => "invalid_state",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::InsufficientCapacity => "insufficient_capacity",
            ErrorKind::Timeout => "timeout",
            ErrorKind::SnapshotCorrupt => "snapshot_corrupt",
            ErrorKind::AgentUnavailable => "agent_unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            field: None,
        }
    }

    pub fn field(kind: ErrorKind, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::field(ErrorKind::InvalidField, field, message)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what} {id} not found"))
    }

    /// Deliberately says nothing about why (missing, malformed, unknown or revoked key).
    pub fn unauthorized() -> Self {
        Self::new(
            ErrorKind::Unauthorized,
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    /// A member key asked for something only an admin may do.
    pub fn forbidden() -> Self {
        Self::new(ErrorKind::Forbidden, "this needs an admin key")
    }

    /// A create refused by a quota; `field` names the quota.
    pub fn quota(exceeded: QuotaExceeded) -> Self {
        Self::field(ErrorKind::QuotaExceeded, exceeded.kind.name(), exceeded.to_string())
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.kind == ErrorKind::Internal {
            tracing::error!(message = %self.message, "request failed");
        }
        let body = json!({
            "error": { "code": self.kind.code(), "message": self.message, "field": self.field }
        });
        (self.kind.status(), Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict { field } => {
                ApiError::field(ErrorKind::Conflict, field, format!("{field} is already in use"))
            }
            StoreError::Quota(exceeded) => ApiError::quota(exceeded),
            StoreError::Corrupt { .. }
            | StoreError::TooNew { .. }
            | StoreError::Io { .. }
            | StoreError::Open { .. }
            | StoreError::Sqlite(_)
            | StoreError::Interrupted(_) => ApiError::internal(err.to_string()),
        }
    }
}

impl From<OrchError> for ApiError {
    fn from(err: OrchError) -> Self {
        let message = err.to_string();
        match err {
            OrchError::NotFound { .. } => ApiError::new(ErrorKind::NotFound, message),
            OrchError::InvalidField { field, message } => ApiError::invalid(field, message),
            OrchError::Conflict { field, message } => ApiError {
                kind: ErrorKind::Conflict,
                message,
                field: field.map(Into::into),
            },
            OrchError::InvalidState { .. } => ApiError::new(ErrorKind::InvalidState, message),
            OrchError::Unavailable { message } => ApiError::new(ErrorKind::Unavailable, message),
            OrchError::Insufficient { field, message } => {
                ApiError::field(ErrorKind::InsufficientCapacity, field, message)
            }
            OrchError::TooLarge { field, message } => ApiError::field(ErrorKind::TooLarge, field, message),
            OrchError::Exhausted { message } => ApiError::new(ErrorKind::Unavailable, message),
            OrchError::Timeout { message } => ApiError::new(ErrorKind::Timeout, message),
            OrchError::AgentUnavailable { message } => ApiError::new(ErrorKind::AgentUnavailable, message),
            OrchError::Corrupt { message } => ApiError::new(ErrorKind::SnapshotCorrupt, message),
            OrchError::QuotaExceeded(exceeded) => ApiError::quota(exceeded),
            OrchError::Internal(message) => ApiError::internal(message),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
