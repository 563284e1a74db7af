//! Conversions between domain values and SQLite columns, shared by the tables.

use chrono::SecondsFormat;
use rusqlite::ErrorCode;

use super::StoreError;
use crate::model::{Lifetime, LifetimeSeconds, OnIdle, Timestamp, UserData};

/// Fixed-width RFC 3339 (nanoseconds, `Z`: lossless), so text order is time order.
pub fn ts(value: &Timestamp) -> String {
    value.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub fn opt_ts(value: &Option<Timestamp>) -> Option<String> {
    value.as_ref().map(ts)
}

pub fn parse_ts(table: &'static str, text: &str) -> Result<Timestamp, StoreError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| corrupt(table, format!("timestamp {text:?}: {e}")))
}

pub fn parse_opt_ts(table: &'static str, text: Option<String>) -> Result<Option<Timestamp>, StoreError> {
    text.map(|t| parse_ts(table, &t)).transpose()
}

pub fn corrupt(table: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.into(),
    }
}

/// user_data is stored as a BLOB of its exact bytes.
pub fn user_data_param(value: &Option<UserData>) -> Option<Vec<u8>> {
    value.as_ref().map(|data| data.as_bytes().to_vec())
}

/// Reads a user_data column. Rows from before migration 4 may hold TEXT
/// (always UTF-8 there): its bytes are the user data.
pub fn user_data_column(
    table: &'static str,
    row: &rusqlite::Row<'_>,
    index: usize,
) -> Result<Option<UserData>, StoreError> {
    use rusqlite::types::ValueRef;
    match row.get_ref(index)? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(bytes) | ValueRef::Text(bytes) => Ok(Some(UserData::from(bytes))),
        other => Err(corrupt(table, format!("user_data of type {:?}", other.data_type()))),
    }
}

pub fn string_list(value: &[String]) -> String {
    serde_json::Value::from(value.to_vec()).to_string()
}

pub fn parse_string_list(table: &'static str, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(table, format!("string list {text:?}: {e}")))
}

/// Maps a constraint violation to `Conflict` naming the column, for the
/// columns callers can act on; every other error passes through.
pub fn map_unique(err: rusqlite::Error, known: &[&'static str]) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, Some(message)) = &err {
        if failure.code == ErrorCode::ConstraintViolation {
            // SQLite says e.g. "UNIQUE constraint failed: vms.guest_ip".
            let column = message.rsplit('.').next().unwrap_or_default().trim();
            if let Some(field) = known.iter().find(|k| **k == column) {
                return StoreError::Conflict { field };
            }
        }
    }
    StoreError::Sqlite(err)
}

/// Runs a query and decodes every row with `decode`.
pub fn query_all<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
    decode: fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// The `ttl_seconds`, `idle_timeout_seconds` and `on_idle` columns, in
/// that order (NULL: not set).
pub fn lifetime_params(lifetime: &Lifetime) -> [Box<dyn rusqlite::ToSql>; 3] {
    [
        Box::new(lifetime.ttl_seconds.map(LifetimeSeconds::get)),
        Box::new(lifetime.idle_timeout_seconds.map(LifetimeSeconds::get)),
        Box::new(lifetime.on_idle.map(OnIdle::as_str)),
    ]
}

/// Reads the three lifetime columns starting at `first`.
pub fn lifetime_columns(table: &'static str, row: &rusqlite::Row<'_>, first: usize) -> Result<Lifetime, StoreError> {
    let seconds = |index: usize, name: &str| -> Result<Option<LifetimeSeconds>, StoreError> {
        row.get::<_, Option<u32>>(index)?
            .map(|value| LifetimeSeconds::new(value.into()).map_err(|e| corrupt(table, format!("{name}: {e}"))))
            .transpose()
    };
    let on_idle: Option<String> = row.get(first + 2)?;
    Ok(Lifetime {
        ttl_seconds: seconds(first, "ttl_seconds")?,
        idle_timeout_seconds: seconds(first + 1, "idle_timeout_seconds")?,
        on_idle: on_idle
            .map(|text| OnIdle::parse(&text).ok_or_else(|| corrupt(table, format!("on_idle {text:?}"))))
            .transpose()?,
    })
}
