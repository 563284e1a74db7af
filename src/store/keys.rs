//! `api_keys`: only a SHA-256 of each key is stored; the plaintext is shown
//! once, when the key is created.

use rand::RngCore;
use rusqlite::{params, Row};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::codec::{corrupt, map_unique, parse_opt_ts, parse_ts, query_all, ts};
use super::key_cache::ActiveKey;
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

/// How many columns `COLUMNS` names.
const COLUMN_COUNT: usize = 11;

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
        let conn = self.lock();
        conn.execute(
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
        self.keys.insert((hash(&plaintext), info.clone()));
        Ok((info, plaintext))
    }

    /// The active key matching `presented` if memory holds it (no SQLite):
    /// the answer for every key in use; `None` says only "look further"
    /// ([`Self::verify_api_key`]).
    pub fn cached_api_key(&self, presented: &str) -> Option<ApiKeyInfo> {
        self.keys.find(&hash(presented))
    }

    /// The active key matching `presented`, from memory (see
    /// [`key_cache`](super::key_cache)); a key not found there is looked
    /// for in the database, on the read connection.
    pub fn verify_api_key(&self, presented: &str) -> Result<Option<ApiKeyInfo>, StoreError> {
        let presented_hash = hash(presented);
        let generation = self.keys.generation();
        if let Some(found) = self.keys.find(&presented_hash) {
            return Ok(Some(found));
        }
        let active = active_keys(&self.read())?;
        let found = active
            .iter()
            .fold(None, |matched, (stored, info)| {
                if bool::from(stored.ct_eq(&presented_hash)) {
                    Some(info)
                } else {
                    matched
                }
            })
            .cloned();
        if found.is_some() {
            self.keys.replace_if_unchanged(generation, active);
        }
        Ok(found)
    }

    /// All keys, revoked ones included, oldest first.
    pub fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, rowid");
        query_all(&self.read(), &sql, &[], from_row)
    }

    /// Revokes an active key; false when there is no such active key.
    pub fn revoke_api_key(&self, id: &str) -> Result<bool, StoreError> {
        let conn = self.lock();
        let changed = conn.execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, ts(&now())],
        )?;
        self.keys.remove(id);
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
        let conn = self.lock();
        let changed = conn.execute(
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
        self.keys.set_quotas(id, *quotas);
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

/// Every active key with its hash: what [`KeyCache`](super::key_cache::KeyCache) holds.
pub(super) fn active_keys(conn: &rusqlite::Connection) -> Result<Vec<ActiveKey>, StoreError> {
    let sql = format!("SELECT {COLUMNS}, key_hash FROM api_keys WHERE revoked_at IS NULL");
    // A hash of another length can match no key (as before the cache), so it is left out.
    let keys = query_all(conn, &sql, &[], |row| {
        let stored: Vec<u8> = row.get(COLUMN_COUNT)?;
        match <[u8; 32]>::try_from(stored.as_slice()) {
            Ok(stored) => Ok(Some((stored, from_row(row)?))),
            Err(_) => Ok(None),
        }
    })?;
    Ok(keys.into_iter().flatten().collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(&Store::path_in(dir.path())).unwrap()
    }

    #[test]
    fn a_key_is_known_from_its_creation_until_its_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let (info, key) = store.create_api_key("ci", Role::Member, Quotas::default()).unwrap();
        assert_eq!(store.verify_api_key(&key).unwrap(), Some(info.clone()));
        assert_eq!(store.verify_api_key("hatch_not-a-key").unwrap(), None);

        let quotas = Quotas {
            max_vms: Some(2),
            ..Quotas::default()
        };
        assert!(store.set_api_key_quotas(&info.id, &quotas).unwrap());
        assert_eq!(store.verify_api_key(&key).unwrap().unwrap().quotas, quotas);

        assert!(store.revoke_api_key(&info.id).unwrap());
        assert_eq!(store.verify_api_key(&key).unwrap(), None, "refused at once");
        assert_eq!(open(&dir).verify_api_key(&key).unwrap(), None, "and after a restart");
    }

    /// `hatch key create --local` writes the database beside a running daemon.
    #[test]
    fn a_key_another_process_created_is_found_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = open(&dir);
        let (info, key) = open(&dir)
            .create_api_key("local", Role::Admin, Quotas::default())
            .unwrap();
        assert_eq!(daemon.verify_api_key(&key).unwrap(), Some(info.clone()));
        assert!(daemon.revoke_api_key(&info.id).unwrap());
        assert_eq!(daemon.verify_api_key(&key).unwrap(), None);
    }

    /// A reread of the database that started before a revocation must not
    /// bring the revoked key back.
    #[test]
    fn a_stale_reread_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let (info, key) = store.create_api_key("ci", Role::Member, Quotas::default()).unwrap();
        let generation = store.keys.generation();
        let before_revocation = active_keys(&store.read()).unwrap();
        assert!(store.revoke_api_key(&info.id).unwrap());
        assert!(!store.keys.replace_if_unchanged(generation, before_revocation));
        assert_eq!(store.verify_api_key(&key).unwrap(), None);
    }
}
