//! `api_keys`: only a SHA-256 of each key is stored; the plaintext is shown
//! once, when the key is created.

use rand::RngCore;
use rusqlite::{params, Row};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::codec::{map_unique, parse_opt_ts, parse_ts, query_all, ts};
use super::{Store, StoreError};
use crate::model::{now, random_id, Timestamp};

/// Every key starts with this, so leaked keys are recognisable.
const KEY_PREFIX: &str = "hatch_";
/// How much of the key is kept in clear for display (`hatch_ab12cd34`).
const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 8;

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

const COLUMNS: &str = "id, name, prefix, created_at, revoked_at";

fn from_row(row: &Row<'_>) -> Result<ApiKeyInfo, StoreError> {
    let created_at: String = row.get(3)?;
    Ok(ApiKeyInfo {
        id: row.get(0)?,
        name: row.get(1)?,
        prefix: row.get(2)?,
        created_at: parse_ts("api_keys", &created_at)?,
        revoked_at: parse_opt_ts("api_keys", row.get(4)?)?,
    })
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn new_plaintext() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

impl Store {
    /// Creates a key; returns its listing and the plaintext (shown once).
    pub fn create_api_key(&self, name: &str) -> Result<(ApiKeyInfo, String), StoreError> {
        let plaintext = new_plaintext();
        let info = ApiKeyInfo {
            id: random_id("key", 10),
            name: name.to_string(),
            prefix: plaintext[..DISPLAY_PREFIX_LEN].to_string(),
            created_at: now(),
            revoked_at: None,
        };
        self.lock()
            .execute(
                "INSERT INTO api_keys (id, name, key_hash, prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    info.id,
                    info.name,
                    hash(&plaintext).to_vec(),
                    info.prefix,
                    ts(&info.created_at)
                ],
            )
            .map_err(|e| map_unique(e, &["id"]))?;
        Ok((info, plaintext))
    }

    /// The active key matching `presented`, comparing every stored hash in
    /// constant time (no early exit that would reveal how much matched).
    pub fn verify_api_key(&self, presented: &str) -> Result<Option<ApiKeyInfo>, StoreError> {
        let presented_hash = hash(presented);
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT id, key_hash FROM api_keys WHERE revoked_at IS NULL")?;
        let mut rows = stmt.query([])?;
        let mut matched: Option<String> = None;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let stored: Vec<u8> = row.get(1)?;
            if bool::from(stored.ct_eq(&presented_hash)) {
                matched = Some(id);
            }
        }
        drop(rows);
        drop(stmt);
        match matched {
            Some(id) => {
                let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1");
                Ok(query_all(&conn, &sql, &[&id], from_row)?.pop())
            }
            None => Ok(None),
        }
    }

    /// All keys, revoked ones included, oldest first.
    pub fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, rowid");
        query_all(&self.lock(), &sql, &[], from_row)
    }

    /// Revokes an active key; false when there is no such active key.
    pub fn revoke_api_key(&self, id: &str) -> Result<bool, StoreError> {
        let changed = self.lock().execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, ts(&now())],
        )?;
        Ok(changed > 0)
    }

    pub fn count_active_api_keys(&self) -> Result<u64, StoreError> {
        let count: i64 =
            self.lock()
                .query_row("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL", [], |row| {
                    row.get(0)
                })?;
        Ok(count as u64)
    }
}
