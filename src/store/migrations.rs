//! Versioned schema migrations.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Each one is
//! applied in its own transaction together with the version bump, so a crash
//! leaves the database at a whole version. Never edit a released migration;
//! append a new one.

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;

pub const MIGRATIONS: &[&str] = &[
    // 1: core objects, state-change history and API keys.
    r#"
    CREATE TABLE images (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        profile       TEXT NOT NULL,
        kernel_path   TEXT,
        bzimage_path  TEXT,
        initrd_path   TEXT,
        rootfs_path   TEXT,
        login_user    TEXT NOT NULL,
        boot_args     TEXT NOT NULL,
        size_bytes    INTEGER NOT NULL,
        created_at    TEXT NOT NULL
    );
    CREATE INDEX images_name ON images(name);

    CREATE TABLE templates (
        id                  TEXT PRIMARY KEY,
        name                TEXT NOT NULL,
        image_id            TEXT NOT NULL,
        vcpu_count          INTEGER NOT NULL,
        mem_mib             INTEGER NOT NULL,
        user_data           TEXT,
        ssh_authorized_keys TEXT NOT NULL,
        created_at          TEXT NOT NULL
    );

    CREATE TABLE vms (
        id                  TEXT PRIMARY KEY,
        state               TEXT NOT NULL,
        image_id            TEXT NOT NULL,
        vcpu_count          INTEGER NOT NULL,
        mem_mib             INTEGER NOT NULL,
        enable_network      INTEGER NOT NULL,
        guest_ip            TEXT UNIQUE,
        guest_mac           TEXT UNIQUE,
        tap_name            TEXT UNIQUE,
        ssh_port            INTEGER UNIQUE,
        user_data           TEXT,
        ssh_authorized_keys TEXT NOT NULL,
        hypervisor          TEXT NOT NULL,
        pid                 INTEGER,
        state_reason        TEXT,
        ready_at            TEXT,
        created_at          TEXT NOT NULL,
        updated_at          TEXT NOT NULL
    );
    CREATE INDEX vms_image ON vms(image_id);

    CREATE TABLE vm_events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        vm_id       TEXT NOT NULL,
        from_state  TEXT,
        to_state    TEXT NOT NULL,
        reason      TEXT,
        at          TEXT NOT NULL
    );
    CREATE INDEX vm_events_vm ON vm_events(vm_id, id);

    CREATE TABLE api_keys (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        key_hash    BLOB NOT NULL UNIQUE,
        prefix      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        revoked_at  TEXT
    );
    "#,
    // 2: snapshots and proxy routes (used by the snapshot and proxy subsystems).
    r#"
    CREATE TABLE snapshots (
        id          TEXT PRIMARY KEY,
        vm_id       TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        hypervisor  TEXT NOT NULL,
        files       TEXT NOT NULL,
        sizes       TEXT NOT NULL,
        sha256s     TEXT NOT NULL,
        total_bytes INTEGER NOT NULL DEFAULT 0,
        complete    INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX snapshots_vm ON snapshots(vm_id, created_at);

    CREATE TABLE routes (
        id          TEXT PRIMARY KEY,
        vm_id       TEXT NOT NULL,
        subdomain   TEXT NOT NULL UNIQUE,
        target_port INTEGER NOT NULL,
        auto_wake   INTEGER NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX routes_vm ON routes(vm_id);
    "#,
    // 3: what the idle monitor saw and decided, shown on the VM.
    r#"
    ALTER TABLE vms ADD COLUMN last_activity_at TEXT;
    ALTER TABLE vms ADD COLUMN idle_status TEXT;
    "#,
    // 4: user_data is bytes (gzip-compressed user data is binary): values
    // stored as TEXT become BLOBs of the same bytes (SQLite keeps a BLOB as
    // a BLOB whatever the column's declared type, so no table rebuild).
    r#"
    UPDATE templates SET user_data = CAST(user_data AS BLOB) WHERE typeof(user_data) = 'text';
    UPDATE vms SET user_data = CAST(user_data AS BLOB) WHERE typeof(user_data) = 'text';
    "#,
    // 5: the per-VM controller: a VM's restart policy and the snapshot it
    // was suspended with; events that are repairs, not state changes; and
    // host-wide events (repairs of shared host state).
    r#"
    ALTER TABLE vms ADD COLUMN restart_policy TEXT NOT NULL DEFAULT 'never';
    ALTER TABLE vms ADD COLUMN snapshot_id TEXT;
    UPDATE vms SET snapshot_id = (
        SELECT s.id FROM snapshots s WHERE s.vm_id = vms.id AND s.complete = 1
        ORDER BY s.created_at DESC, s.rowid DESC LIMIT 1
    ) WHERE state = 'snapshotted';
    ALTER TABLE vm_events ADD COLUMN kind TEXT NOT NULL DEFAULT 'state';
    CREATE TABLE host_events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        kind    TEXT NOT NULL,
        detail  TEXT NOT NULL,
        at      TEXT NOT NULL
    );
    "#,
    // 6: tenancy. Keys get a role and quotas (NULL: unlimited); keys that
    // existed before were all full administrators and stay admins. VMs,
    // snapshots, routes and templates record their owning key: existing
    // rows go to the oldest active admin key (NULL, admin-owned, when
    // there is none). Every mutating request is recorded in `audit_log`.
    r#"
    ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
    ALTER TABLE api_keys ADD COLUMN max_vms INTEGER;
    ALTER TABLE api_keys ADD COLUMN max_vcpus INTEGER;
    ALTER TABLE api_keys ADD COLUMN max_mem_mib INTEGER;
    ALTER TABLE api_keys ADD COLUMN max_snapshots INTEGER;
    ALTER TABLE api_keys ADD COLUMN max_routes INTEGER;
    ALTER TABLE vms ADD COLUMN owner_key_id TEXT;
    ALTER TABLE snapshots ADD COLUMN owner_key_id TEXT;
    ALTER TABLE routes ADD COLUMN owner_key_id TEXT;
    ALTER TABLE templates ADD COLUMN owner_key_id TEXT;
    CREATE TEMP TABLE first_admin AS
        SELECT id FROM api_keys WHERE revoked_at IS NULL AND role = 'admin'
        ORDER BY created_at, rowid LIMIT 1;
    UPDATE vms SET owner_key_id = (SELECT id FROM first_admin);
    UPDATE snapshots SET owner_key_id = (SELECT id FROM first_admin);
    UPDATE routes SET owner_key_id = (SELECT id FROM first_admin);
    UPDATE templates SET owner_key_id = (SELECT id FROM first_admin);
    DROP TABLE first_admin;
    CREATE INDEX vms_owner ON vms(owner_key_id);
    CREATE INDEX snapshots_owner ON snapshots(owner_key_id);
    CREATE INDEX routes_owner ON routes(owner_key_id);
    CREATE INDEX templates_owner ON templates(owner_key_id);
    CREATE TABLE audit_log (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      TEXT NOT NULL,
        key_id  TEXT,
        method  TEXT NOT NULL,
        path    TEXT NOT NULL,
        status  INTEGER NOT NULL
    );
    "#,
    // 7: a networked VM's egress policy (`internet`, `none` or a JSON list
    // of CIDRs) and a template's (NULL: not set).
    r#"
    ALTER TABLE vms ADD COLUMN egress TEXT NOT NULL DEFAULT 'internet';
    ALTER TABLE templates ADD COLUMN egress TEXT;
    "#,
    // 8: one event log with one cursor. VM events and host-wide events
    // (`vm_id` NULL) share the table and its id, which is the cursor of
    // `GET /events`; each row records the VM's owner when it was written,
    // so a member still sees the events of its VM once the VM is deleted
    // (events now outlive their VM). Host rows are interleaved with the VM
    // rows by time.
    r#"
    CREATE TABLE events (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        vm_id        TEXT,
        owner_key_id TEXT,
        kind         TEXT NOT NULL,
        from_state   TEXT,
        to_state     TEXT,
        reason       TEXT,
        at           TEXT NOT NULL
    );
    INSERT INTO events (vm_id, owner_key_id, kind, from_state, to_state, reason, at)
        SELECT e.vm_id, v.owner_key_id, e.kind, e.from_state, e.to_state, e.reason, e.at
        FROM (
            SELECT vm_id, kind, from_state, to_state, reason, at, 0 AS source, id FROM vm_events
            UNION ALL
            SELECT NULL, kind, NULL, NULL, detail, at, 1, id FROM host_events
        ) e LEFT JOIN vms v ON v.id = e.vm_id
        ORDER BY e.at, e.source, e.id;
    DROP TABLE vm_events;
    DROP TABLE host_events;
    CREATE INDEX events_vm ON events(vm_id, id);
    CREATE INDEX events_owner ON events(owner_key_id, id);
    "#,
    // 9: lifetimes. A VM's (and a template's) `ttl_seconds`,
    // `idle_timeout_seconds` and `on_idle` (`snapshot`, `stop`, `none`);
    // NULL: not set, which keeps the behaviour VMs had before.
    r#"
    ALTER TABLE vms ADD COLUMN ttl_seconds INTEGER;
    ALTER TABLE vms ADD COLUMN idle_timeout_seconds INTEGER;
    ALTER TABLE vms ADD COLUMN on_idle TEXT;
    -- A template's are the defaults of VMs made from it.
    ALTER TABLE templates ADD COLUMN ttl_seconds INTEGER;
    ALTER TABLE templates ADD COLUMN idle_timeout_seconds INTEGER;
    ALTER TABLE templates ADD COLUMN on_idle TEXT;
    "#,
    // 10: a snapshot is restorable as soon as its local hot copy exists
    // (`durable` 0) and durable once its artefacts are checksummed in their
    // final store; `hot_checksums` holds the hot files' XXH3-128 checksums (a JSON map),
    // checked before the hot copy is loaded. Existing snapshots were
    // written durable.
    r#"
    ALTER TABLE snapshots ADD COLUMN durable INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE snapshots ADD COLUMN hot_checksums TEXT NOT NULL DEFAULT '{}';
    "#,
    // 11: warm pools. A template keeps `warm_pool_size` VMs booted and
    // snapshotted; such a pool VM names its template in
    // `pool_template_id` (NULL for every other VM, and once taken).
    r#"
    ALTER TABLE templates ADD COLUMN warm_pool_size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE vms ADD COLUMN pool_template_id TEXT;
    CREATE INDEX vms_pool_template ON vms(pool_template_id);
    "#,
];

/// The version a fully migrated database is at.
pub fn latest_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// The version recorded in the database (0 for a new, empty one).
pub fn current_version(conn: &Connection) -> Result<u32, StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let version: Option<u32> = conn
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .optional()?;
    Ok(version.unwrap_or(0))
}

/// Applies pending migrations up to `target` (the latest when `None`).
pub fn migrate(conn: &mut Connection, target: Option<u32>) -> Result<u32, StoreError> {
    let target = target.unwrap_or_else(latest_version).min(latest_version());
    let mut version = current_version(conn)?;
    if version > latest_version() {
        return Err(StoreError::TooNew {
            found: version,
            supported: latest_version(),
        });
    }
    while version < target {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [version + 1])?;
        tx.commit()?;
        version += 1;
        tracing::info!(version, "database migrated");
    }
    Ok(version)
}
