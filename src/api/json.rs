//! Request body and query extractors whose every rejection is a JSON
//! `ApiError` naming the offending field (axum's own answer in plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorKind};

/// A JSON body (`deny_unknown_fields` types name the unknown field). An
/// empty body reads as `{}` so that `POST /vms` with no body uses defaults.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("").to_string());
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorKind::TooLarge,
                    format!("request body is larger than {} bytes", super::MAX_BODY_BYTES),
                )
            } else {
                ApiError::new(
                    ErrorKind::InvalidJson,
                    format!("could not read the request body: {}", rejection.body_text()),
                )
            }
        })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        if body != b"{}" {
            if let Some(content_type) = content_type {
                let essence = content_type.split(';').next().unwrap_or("").trim();
                if !essence.eq_ignore_ascii_case("application/json") {
                    return Err(ApiError::new(
                        ErrorKind::UnsupportedMediaType,
                        format!("Content-Type must be application/json, not {content_type:?}"),
                    ));
                }
            }
        }
        parse_json(body).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde would also accept an array for a struct (fields by position).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            ErrorKind::InvalidJson,
            "the request body must be a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        json_error(e.inner(), &path)
    })?;
    deserializer.end().map_err(|e| json_error(&e, "."))?;
    Ok(value)
}

fn json_error(err: &serde_json::Error, path: &str) -> ApiError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::new(ErrorKind::InvalidJson, format!("malformed JSON: {err}"))
        }
        Category::Data => {
            let message = err.to_string();
            // serde reports unknown and missing fields by name, at the parent's path.
            let named = backticked(&message)
                .filter(|_| message.starts_with("unknown field") || message.starts_with("missing field"));
            // For unknown fields the path already ends with the name; for
            // missing ones it is the parent's.
            let field = match (named, path) {
                (Some(name), "." | "") => name.to_string(),
                (Some(name), path) if path == name || path.ends_with(&format!(".{name}")) => path.to_string(),
                (Some(name), parent) => format!("{parent}.{name}"),
                (None, "." | "") => {
                    return ApiError::new(ErrorKind::InvalidJson, format!("invalid request body: {message}"))
                }
                (None, path) => path.to_string(),
            };
            ApiError::invalid(field.clone(), format!("{field}: {}", strip_position(&message)))
        }
    }
}

/// The first `quoted` word in a serde message.
fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// The parameter a query rejection is about: the path axum puts before a
/// value's error (`...query string: list: provided string was not `true`
/// or `false``), else the name serde quotes (`unknown field `x``).
fn query_parameter(text: &str) -> Option<&str> {
    let path = text
        .split_once("query string: ")
        .and_then(|(_, rest)| rest.split_once(": "))
        .map(|(path, _)| path)
        .filter(|path| !path.is_empty() && !path.contains(' '));
    path.or_else(|| backticked(text))
}

/// serde_json appends " at line 1 column 20"; the field name says more.
fn strip_position(message: &str) -> &str {
    message.rfind(" at line ").map_or(message, |i| &message[..i])
}

/// Query parameters; unknown or malformed ones are a 400 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| {
                let text = rejection.body_text();
                match query_parameter(&text) {
                    Some(name) => ApiError::invalid(name, text.clone()),
                    None => ApiError::new(ErrorKind::InvalidField, text),
                }
            })
    }
}
