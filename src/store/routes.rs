//! The `routes` table: subdomains are unique across all VMs.

use rusqlite::{params, Row};

use super::codec::{map_unique, parse_ts, query_all, ts};
use super::{Store, StoreError};
use crate::model::Route;

const COLUMNS: &str = "id, vm_id, subdomain, target_port, auto_wake, created_at";

fn from_row(row: &Row<'_>) -> Result<Route, StoreError> {
    let created_at: String = row.get(5)?;
    Ok(Route {
        id: row.get(0)?,
        vm_id: row.get(1)?,
        subdomain: row.get(2)?,
        target_port: row.get(3)?,
        auto_wake: row.get(4)?,
        created_at: parse_ts("routes", &created_at)?,
    })
}

impl Store {
    /// A taken subdomain is `StoreError::Conflict { field: "subdomain" }`.
    pub fn insert_route(&self, route: &Route) -> Result<(), StoreError> {
        self.lock()
            .execute(
                &format!("INSERT INTO routes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    route.id,
                    route.vm_id,
                    route.subdomain,
                    route.target_port,
                    route.auto_wake,
                    ts(&route.created_at)
                ],
            )
            .map_err(|e| map_unique(e, &["id", "subdomain"]))?;
        Ok(())
    }

    pub fn get_route(&self, id: &str) -> Result<Option<Route>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM routes WHERE id = ?1");
        Ok(query_all(&self.lock(), &sql, &[&id], from_row)?.pop())
    }

    pub fn route_by_subdomain(&self, subdomain: &str) -> Result<Option<Route>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM routes WHERE subdomain = ?1");
        Ok(query_all(&self.lock(), &sql, &[&subdomain], from_row)?.pop())
    }

    /// A VM's routes, oldest first.
    pub fn list_routes(&self, vm_id: &str) -> Result<Vec<Route>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM routes WHERE vm_id = ?1 ORDER BY created_at, rowid");
        query_all(&self.lock(), &sql, &[&vm_id], from_row)
    }

    pub fn delete_route(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().execute("DELETE FROM routes WHERE id = ?1", [id])? > 0)
    }

    pub fn delete_routes_of(&self, vm_id: &str) -> Result<usize, StoreError> {
        Ok(self.lock().execute("DELETE FROM routes WHERE vm_id = ?1", [vm_id])?)
    }
}
