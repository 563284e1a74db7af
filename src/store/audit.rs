//! `audit_log`: one row per mutating API request (who, what, the answer).
//! The newest [`AUDIT_KEPT`] rows are kept.

use rusqlite::{params, Row};
use serde::Serialize;

use super::codec::{parse_ts, query_all, ts};
use super::{Store, StoreError};
use crate::model::{now, Timestamp};

/// How many audit rows are kept; older ones are pruned as new ones arrive.
pub const AUDIT_KEPT: i64 = 100_000;
/// Pruning runs once every this many rows.
const PRUNE_EVERY: i64 = 1_000;

/// One mutating request as the API answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Timestamp,
    /// The key that made the request (null when none was valid).
    pub key_id: Option<String>,
    pub method: String,
    /// The path only: never the query string or the body.
    pub path: String,
    pub status: u16,
}

fn from_row(row: &Row<'_>) -> Result<AuditEntry, StoreError> {
    let at: String = row.get(1)?;
    Ok(AuditEntry {
        id: row.get(0)?,
        at: parse_ts("audit_log", &at)?,
        key_id: row.get(2)?,
        method: row.get(3)?,
        path: row.get(4)?,
        status: row.get(5)?,
    })
}

impl Store {
    pub fn record_audit(&self, key_id: Option<&str>, method: &str, path: &str, status: u16) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO audit_log (at, key_id, method, path, status) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ts(&now()), key_id, method, path, status],
        )?;
        let id = conn.last_insert_rowid();
        if id % PRUNE_EVERY == 0 {
            conn.execute("DELETE FROM audit_log WHERE id <= ?1", [id - AUDIT_KEPT])?;
        }
        Ok(())
    }

    /// The newest `limit` entries, newest first.
    pub fn list_audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        query_all(
            &self.read(),
            "SELECT id, at, key_id, method, path, status FROM audit_log ORDER BY id DESC LIMIT ?1",
            &[&limit],
            from_row,
        )
    }
}
