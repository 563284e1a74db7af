//! Embedded SQLite state with versioned migrations. The source of truth.
//!
//! Two connections, each behind a mutex: one for every write (SQLite
//! serialises writers anyway, and the daemon's statements are short) and
//! one for reads, so a read never queues behind a write transaction. WAL
//! mode lets readers (that connection, and the CLI's `hatch image list`
//! without a daemon) run while the daemon writes; `synchronous=NORMAL`, safe
//! under WAL (a power cut may lose the last commits, never corrupt), makes a
//! commit a write to the log instead of an fsync. Statements are prepared
//! once per connection and cached.
//!
//! Every method is a synchronous SQLite call: async code hands them to a
//! blocking thread with [`Store::run`] (see `offload.rs`).

mod audit;
mod codec;
mod events;
mod images;
mod key_cache;
mod keys;
pub mod migrations;
mod offload;
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
/// Prepared statements kept per connection (the daemon uses a few dozen).
const STATEMENT_CACHE: usize = 64;

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
    /// A call handed to a blocking thread ([`Store::run`]) did not finish:
    /// it panicked, or the runtime shut down before it ran.
    #[error("database call did not finish: {0}")]
    Interrupted(String),
}

/// Handle to the database; cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// For reads: a connection of its own on a file, `conn` in memory.
    reader: Arc<Mutex<Connection>>,
    /// The active API keys, for authentication without SQLite.
    keys: Arc<key_cache::KeyCache>,
    /// This handle's statements belong on blocking threads (the daemon's
    /// own handles; see [`Store::off_workers`]).
    off_workers: bool,
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
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_error)?;
        let mut store = Self::setup(conn)?;
        // Opened after migrating, so it sees the schema as it now is.
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error)?;
        reader.busy_timeout(BUSY_TIMEOUT)?;
        reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        store.reader = Arc::new(Mutex::new(reader));
        Ok(store)
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
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrations::migrate(&mut conn, None)?;
        let keys = Arc::new(key_cache::KeyCache::new(keys::active_keys(&conn)?));
        let conn = Arc::new(Mutex::new(conn));
        Ok(Store {
            reader: conn.clone(),
            conn,
            keys,
            off_workers: false,
        })
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        migrations::current_version(&self.lock())
    }

    /// The connection for writes (and reads that must be in a write's
    /// transaction).
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.check_thread();
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (statements are atomic), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The connection for reads outside any transaction.
    fn read(&self) -> MutexGuard<'_, Connection> {
        self.check_thread();
        self.reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
