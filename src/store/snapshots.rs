//! The `snapshots` table. A row is written before any artefact (complete =
//! 0) so that a crash mid-snapshot leaves a record to clean up, and is
//! marked complete only once every artefact is stored.

use rusqlite::{params, Row};

use super::codec::{corrupt, parse_ts, query_all, ts};
use super::{Store, StoreError};
use crate::model::{check_quota, QuotaKind, Quotas, Snapshot};
use crate::snapshot::ArtefactInfo;

const COLUMNS: &str =
    "id, vm_id, created_at, hypervisor, files, total_bytes, complete, owner_key_id, durable, hot_checksums";

fn from_row(row: &Row<'_>) -> Result<Snapshot, StoreError> {
    let created_at: String = row.get(2)?;
    let files: String = row.get(4)?;
    let artefacts: Vec<ArtefactInfo> =
        serde_json::from_str(&files).map_err(|e| corrupt("snapshots", format!("files: {e}")))?;
    Ok(Snapshot {
        id: row.get(0)?,
        vm_id: row.get(1)?,
        created_at: parse_ts("snapshots", &created_at)?,
        hypervisor: row.get(3)?,
        artefacts,
        total_bytes: row.get(5)?,
        complete: row.get(6)?,
        owner_key_id: row.get(7)?,
        durable: row.get(8)?,
        hot_checksums: serde_json::from_str(&row.get::<_, String>(9)?)
            .map_err(|e| corrupt("snapshots", format!("hot_checksums: {e}")))?,
    })
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

/// Inserts or updates a snapshot row; the owner is set only on insert.
fn upsert(conn: &rusqlite::Connection, snapshot: &Snapshot) -> Result<(), StoreError> {
    let sizes: Vec<u64> = snapshot.artefacts.iter().map(|a| a.compressed_bytes).collect();
    let sums: Vec<&str> = snapshot.artefacts.iter().map(|a| a.sha256.as_str()).collect();
    conn.execute(
        "INSERT INTO snapshots (id, vm_id, created_at, hypervisor, files, sizes, sha256s, total_bytes, complete, owner_key_id, durable, hot_checksums)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT(id) DO UPDATE SET created_at = ?3, files = ?5, sizes = ?6, sha256s = ?7, total_bytes = ?8, complete = ?9, durable = ?11, hot_checksums = ?12",
        params![
            snapshot.id,
            snapshot.vm_id,
            ts(&snapshot.created_at),
            snapshot.hypervisor,
            json(&snapshot.artefacts),
            json(&sizes),
            json(&sums),
            snapshot.total_bytes,
            snapshot.complete,
            snapshot.owner_key_id,
            snapshot.durable,
            json(&snapshot.hot_checksums),
        ],
    )?;
    Ok(())
}

impl Store {
    /// Records a snapshot (complete or not) with its artefacts so far.
    pub fn upsert_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        upsert(&self.lock(), snapshot)
    }

    /// Records a new snapshot (not yet complete) if its owner's
    /// `max_snapshots` allows one more, in one step under the store's lock,
    /// so two concurrent snapshots cannot both pass the quota.
    pub fn reserve_snapshot(&self, snapshot: &Snapshot, quotas: &Quotas) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if let Some(owner) = &snapshot.owner_key_id {
            let usage = super::keys::usage(&tx, owner)?;
            check_quota(quotas, &usage, QuotaKind::Snapshots, 1).map_err(StoreError::Quota)?;
        }
        upsert(&tx, snapshot)?;
        tx.commit()?;
        Ok(())
    }

    /// A complete snapshot by id.
    pub fn get_snapshot(&self, id: &str) -> Result<Option<Snapshot>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE id = ?1 AND complete = 1");
        Ok(query_all(&self.read(), &sql, &[&id], from_row)?.pop())
    }

    /// A VM's complete snapshots, newest first.
    pub fn list_snapshots(&self, vm_id: &str) -> Result<Vec<Snapshot>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM snapshots WHERE vm_id = ?1 AND complete = 1 ORDER BY created_at DESC, rowid DESC"
        );
        query_all(&self.read(), &sql, &[&vm_id], from_row)
    }

    /// Bytes held by all complete snapshots (the sum of their `total_bytes`).
    pub fn snapshot_bytes_stored(&self) -> Result<u64, StoreError> {
        let sums = query_all(
            &self.read(),
            "SELECT COALESCE(SUM(total_bytes), 0) FROM snapshots WHERE complete = 1",
            &[],
            |row| Ok(row.get::<_, i64>(0)?),
        )?;
        Ok(sums.first().copied().unwrap_or(0).max(0) as u64)
    }

    /// Snapshots a crash left half-written.
    pub fn list_incomplete_snapshots(&self) -> Result<Vec<Snapshot>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE complete = 0");
        query_all(&self.read(), &sql, &[], from_row)
    }

    /// Every snapshot id (complete or not), for finding stray artefacts.
    pub fn all_snapshot_ids(&self) -> Result<Vec<(String, String)>, StoreError> {
        query_all(&self.read(), "SELECT vm_id, id FROM snapshots", &[], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
    }

    /// First step of deleting a snapshot: it is no longer listed or
    /// restorable, and the reconciler removes its artefacts and record if
    /// the deletion is cut short.
    pub fn mark_snapshot_deleting(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .execute("UPDATE snapshots SET complete = 0 WHERE id = ?1", [id])?
            > 0)
    }

    /// Records what the background pass made of a complete snapshot (hot
    /// checksums, artefacts, durability); false when the snapshot is no
    /// longer complete (being deleted), which is then left alone.
    pub fn update_complete_snapshot(&self, snapshot: &Snapshot) -> Result<bool, StoreError> {
        let sizes: Vec<u64> = snapshot.artefacts.iter().map(|a| a.compressed_bytes).collect();
        let sums: Vec<&str> = snapshot.artefacts.iter().map(|a| a.sha256.as_str()).collect();
        Ok(self.lock().execute(
            "UPDATE snapshots SET files = ?2, sizes = ?3, sha256s = ?4, total_bytes = ?5, durable = ?6, hot_checksums = ?7
             WHERE id = ?1 AND complete = 1",
            params![
                snapshot.id,
                json(&snapshot.artefacts),
                json(&sizes),
                json(&sums),
                snapshot.total_bytes,
                snapshot.durable,
                json(&snapshot.hot_checksums),
            ],
        )? > 0)
    }

    /// Complete snapshots whose artefacts are not yet stored.
    pub fn list_local_snapshots(&self) -> Result<Vec<Snapshot>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE complete = 1 AND durable = 0");
        query_all(&self.lock(), &sql, &[], from_row)
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().execute("DELETE FROM snapshots WHERE id = ?1", [id])? > 0)
    }
}
