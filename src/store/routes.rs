//! The `routes` table: subdomains are unique across all VMs.

use rusqlite::{params, Row};

use super::codec::{map_unique, parse_ts, query_all, ts};
use super::{Store, StoreError};
use crate::model::{check_quota, QuotaKind, Quotas, Route};

const COLUMNS: &str = "id, vm_id, subdomain, target_port, auto_wake, created_at, owner_key_id";

fn from_row(row: &Row<'_>) -> Result<Route, StoreError> {
    let created_at: String = row.get(5)?;
    Ok(Route {
        id: row.get(0)?,
        vm_id: row.get(1)?,
        subdomain: row.get(2)?,
        target_port: row.get(3)?,
        auto_wake: row.get(4)?,
        created_at: parse_ts("routes", &created_at)?,
        owner_key_id: row.get(6)?,
    })
}

impl Store {
    /// A taken subdomain is `StoreError::Conflict { field: "subdomain" }`.
    pub fn insert_route(&self, route: &Route) -> Result<(), StoreError> {
        self.insert_route_within(route, &Quotas::default())
    }

    /// Inserts the route if its owner's `max_routes` allows one more, in one
    /// step under the store's lock (so concurrent creates cannot both pass).
    pub fn insert_route_within(&self, route: &Route, quotas: &Quotas) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if let Some(owner) = &route.owner_key_id {
            let usage = super::keys::usage(&tx, owner)?;
            check_quota(quotas, &usage, QuotaKind::Routes, 1).map_err(StoreError::Quota)?;
        }
        tx.execute(
            &format!("INSERT INTO routes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                route.id,
                route.vm_id,
                route.subdomain,
                route.target_port,
                route.auto_wake,
                ts(&route.created_at),
                route.owner_key_id,
            ],
        )
        .map_err(|e| map_unique(e, &["id", "subdomain"]))?;
        tx.commit()?;
        Ok(())
    }

    pub fn get_route(&self, id: &str) -> Result<Option<Route>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM routes WHERE id = ?1");
        Ok(query_all(&self.read(), &sql, &[&id], from_row)?.pop())
    }

    pub fn route_by_subdomain(&self, subdomain: &str) -> Result<Option<Route>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM routes WHERE subdomain = ?1");
        Ok(query_all(&self.read(), &sql, &[&subdomain], from_row)?.pop())
    }

    /// A VM's routes, oldest first.
    pub fn list_routes(&self, vm_id: &str) -> Result<Vec<Route>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM routes WHERE vm_id = ?1 ORDER BY created_at, rowid");
        query_all(&self.read(), &sql, &[&vm_id], from_row)
    }

    /// Every route, oldest first.
    pub fn list_all_routes(&self) -> Result<Vec<Route>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM routes ORDER BY created_at, rowid");
        query_all(&self.read(), &sql, &[], from_row)
    }

    pub fn delete_route(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().execute("DELETE FROM routes WHERE id = ?1", [id])? > 0)
    }

    pub fn delete_routes_of(&self, vm_id: &str) -> Result<usize, StoreError> {
        Ok(self.lock().execute("DELETE FROM routes WHERE vm_id = ?1", [vm_id])?)
    }
}
