//! Embedded SQLite state with versioned migrations. The source of truth.
//!
//! One connection behind a mutex: SQLite serialises writers anyway, and the
//! daemon's queries are short. WAL mode lets the CLI read the same file
//! (`hatch image list` without a daemon) while the daemon writes.

mod audit;
mod codec;
mod events;
mod images;
mod keys;
pub mod migrations;
mod routes;
mod snapshots;
mod templates;
mod vms;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

pub use audit::{AuditEntry, AUDIT_KEPT};
pub use events::{EventFilter, EventKind, HostEvent, LogEvent, VmEvent};
pub use keys::ApiKeyInfo;

/// How long a writer waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A UNIQUE or PRIMARY KEY constraint rejected the row; `field` names the column.
    #[error("{field} is already in use")]
    Conflict { field: &'static str },
    /// The insert would take its owner past a quota; nothing was written.
    #[error("{0}")]
    Quota(crate::model::QuotaExceeded),
    /// A stored value could not be decoded (written by a newer or broken version).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// The database was migrated by a newer Hatch than this one.
    #[error("database schema version {found} is newer than this hatch supports ({supported})")]
    TooNew { found: u32, supported: u32 },
    #[error("cannot create database directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Handle to the database; cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database file and migrates it to the latest version.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_error)?;
        // VM user_data may hold secrets: owner only (SQLite gives the -wal
        // and -shm files the same mode). Not our file (a reader such as the
        // CLI): leave it alone.
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        // WAL keeps readers (the CLI) from blocking the daemon's writes.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_error)?;
        Self::setup(conn)
    }

    /// A private database that lives as long as this handle (for tests and tools).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::setup(Connection::open_in_memory()?)
    }

    /// The database file inside a data directory.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("hatch.db")
    }

    fn setup(mut conn: Connection) -> Result<Store, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::migrate(&mut conn, None)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        migrations::current_version(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (statements are atomic), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
