//! `api_keys`: only a SHA-256 of each key is stored; the plaintext is shown
//! once, when the key is created.

use rand::RngCore;
use rusqlite::{params, Row};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::codec::{corrupt, map_unique, parse_opt_ts, parse_ts, query_all, ts};
use super::{Store, StoreError};
use crate::model::{now, random_id, QuotaKind, Quotas, Role, Timestamp, Usage};

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
    pub role: Role,
    /// Limits on what the key's objects may hold; null: unlimited.
    pub quotas: Quotas,
    pub created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

const COLUMNS: &str =
    "id, name, prefix, created_at, revoked_at, role, max_vms, max_vcpus, max_mem_mib, max_snapshots, max_routes";

fn from_row(row: &Row<'_>) -> Result<ApiKeyInfo, StoreError> {
    let created_at: String = row.get(3)?;
    let role: String = row.get(5)?;
    let mut quotas = Quotas::default();
    for (i, kind) in QuotaKind::ALL.into_iter().enumerate() {
        let limit: Option<i64> = row.get(6 + i)?;
        quotas.set(kind, limit.map(|l| l.max(0) as u64));
    }
    Ok(ApiKeyInfo {
        id: row.get(0)?,
        name: row.get(1)?,
        prefix: row.get(2)?,
        role: Role::parse(&role).ok_or_else(|| corrupt("api_keys", format!("role {role:?}")))?,
        quotas,
        created_at: parse_ts("api_keys", &created_at)?,
        revoked_at: parse_opt_ts("api_keys", row.get(4)?)?,
    })
}

fn quota_param(limit: Option<u64>) -> Option<i64> {
    limit.map(|l| l.min(i64::MAX as u64) as i64)
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
    pub fn create_api_key(&self, name: &str, role: Role, quotas: Quotas) -> Result<(ApiKeyInfo, String), StoreError> {
        let plaintext = new_plaintext();
        let info = ApiKeyInfo {
            id: random_id("key", 10),
            name: name.to_string(),
            prefix: plaintext[..DISPLAY_PREFIX_LEN].to_string(),
            role,
            quotas,
            created_at: now(),
            revoked_at: None,
        };
        self.lock()
            .execute(
                "INSERT INTO api_keys (id, name, key_hash, prefix, created_at, role, \
                 max_vms, max_vcpus, max_mem_mib, max_snapshots, max_routes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    info.id,
                    info.name,
                    hash(&plaintext).to_vec(),
                    info.prefix,
                    ts(&info.created_at),
                    role.as_str(),
                    quota_param(quotas.max_vms),
                    quota_param(quotas.max_vcpus),
                    quota_param(quotas.max_mem_mib),
                    quota_param(quotas.max_snapshots),
                    quota_param(quotas.max_routes),
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
        query_all(&self.read(), &sql, &[], from_row)
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

    /// A key by id (revoked ones too).
    pub fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyInfo>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1");
        Ok(query_all(&self.read(), &sql, &[&id], from_row)?.pop())
    }

    /// Replaces a key's quotas; false when there is no such key.
    pub fn set_api_key_quotas(&self, id: &str, quotas: &Quotas) -> Result<bool, StoreError> {
        let changed = self.lock().execute(
            "UPDATE api_keys SET max_vms = ?2, max_vcpus = ?3, max_mem_mib = ?4, max_snapshots = ?5, \
             max_routes = ?6 WHERE id = ?1",
            params![
                id,
                quota_param(quotas.max_vms),
                quota_param(quotas.max_vcpus),
                quota_param(quotas.max_mem_mib),
                quota_param(quotas.max_snapshots),
                quota_param(quotas.max_routes),
            ],
        )?;
        Ok(changed > 0)
    }

    /// The quotas of the key that owns something; unlimited for objects
    /// owned by no key (admin-owned) or by a key that no longer exists.
    pub fn quotas_of(&self, owner: Option<&str>) -> Result<Quotas, StoreError> {
        match owner {
            Some(id) => Ok(self.get_api_key(id)?.map(|k| k.quotas).unwrap_or_default()),
            None => Ok(Quotas::default()),
        }
    }

    /// What a key's objects hold now. Snapshots being written count too, so
    /// that two concurrent snapshots cannot both pass a quota.
    pub fn usage_of(&self, key_id: &str) -> Result<Usage, StoreError> {
        usage(&self.lock(), key_id)
    }
}

pub(super) fn usage(conn: &rusqlite::Connection, key_id: &str) -> Result<Usage, StoreError> {
    let (vms, vcpus, mem_mib): (i64, i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(vcpu_count), 0), COALESCE(SUM(mem_mib), 0) FROM vms WHERE owner_key_id = ?1",
        [key_id],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    let count = |table: &str| -> Result<i64, StoreError> {
        Ok(conn.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE owner_key_id = ?1"),
            [key_id],
            |row| row.get(0),
        )?)
    };
    Ok(Usage {
        vms: vms as u64,
        vcpus: vcpus as u64,
        mem_mib: mem_mib as u64,
        snapshots: count("snapshots")? as u64,
        routes: count("routes")? as u64,
    })
}
