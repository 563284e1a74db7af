//! Versioned migrations: a database left at an older version upgrades in
//! place and keeps its rows; a newer one is refused.

use crate::common;

use common::daemon::sample_vm;
use hatch::store::migrations::{current_version, latest_version, migrate};
use hatch::store::{Store, StoreError};
use rusqlite::Connection;

#[test]
fn new_database_is_at_latest_version_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = Store::path_in(dir.path());
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), latest_version());
    assert!(latest_version() >= 2);
    let conn = Connection::open(&path).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
}

#[test]
fn every_older_version_upgrades_and_keeps_rows() {
    for start in 1..latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = Store::path_in(dir.path());
        let vm = sample_vm("img-old", 1);
        {
            let mut conn = Connection::open(&path).unwrap();
            assert_eq!(migrate(&mut conn, Some(start)).unwrap(), start);
            assert_eq!(current_version(&conn).unwrap(), start);
            // Write a VM through the old schema with plain SQL.
            conn.execute(
                "INSERT INTO vms (id, state, image_id, vcpu_count, mem_mib, enable_network, ssh_authorized_keys, \
                 hypervisor, created_at, updated_at) VALUES (?1, 'stopped', 'img-old', 1, 256, 0, '[]', 'qemu', \
                 '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
                [&vm.id],
            )
            .unwrap();
            let tables: i64 = conn
                .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'routes'", [], |r| {
                    r.get(0)
                })
                .unwrap();
            // Version 2 added the routes table; a database at 1 has none yet.
            assert_eq!(tables, i64::from(start >= 2), "routes table at version {start}");
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), latest_version());
        let kept = store.get_vm(&vm.id).unwrap().expect("row kept across the upgrade");
        assert_eq!(kept.state, hatch::model::VmState::Stopped);
        // Version 3's idle columns exist and start empty for old rows.
        assert_eq!((kept.last_activity_at, kept.idle_status), (None, None));
        // Version 9's lifetime settings are unset for old rows: behaviour as before.
        assert_eq!((kept.lifetime, kept.expires_at), (Default::default(), None));
        let conn = Connection::open(&path).unwrap();
        let routes: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('routes', 'snapshots')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(routes, 2);
    }
}

#[test]
fn a_database_from_a_newer_hatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = Store::path_in(dir.path());
    drop(Store::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE schema_version SET version = version + 1", [])
        .unwrap();
    drop(conn);
    match Store::open(&path) {
        Err(StoreError::TooNew { found, supported }) => {
            assert_eq!((found, supported), (latest_version() + 1, latest_version()))
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[test]
fn a_failing_migration_leaves_the_previous_version() {
    // Plant a table that migration 2 wants to create: it must fail as a whole.
    let dir = tempfile::tempdir().unwrap();
    let path = Store::path_in(dir.path());
    let mut conn = Connection::open(&path).unwrap();
    migrate(&mut conn, Some(1)).unwrap();
    conn.execute_batch("CREATE TABLE routes (x INTEGER)").unwrap();
    assert!(migrate(&mut conn, None).is_err());
    assert_eq!(current_version(&conn).unwrap(), 1);
    let snapshots: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'snapshots'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(snapshots, 0, "the failed migration's other statements were rolled back");
}

#[test]
fn existing_keys_stay_admins_and_existing_objects_go_to_the_oldest_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = Store::path_in(dir.path());
    {
        let mut conn = Connection::open(&path).unwrap();
        assert_eq!(migrate(&mut conn, Some(5)).unwrap(), 5);
        for (id, hash, created, revoked) in [
            (
                "key-revoked",
                1,
                "2025-01-01T00:00:00.000000000Z",
                Some("2025-02-01T00:00:00.000000000Z"),
            ),
            ("key-first", 2, "2025-03-01T00:00:00.000000000Z", None),
            ("key-second", 3, "2025-04-01T00:00:00.000000000Z", None),
        ] {
            conn.execute(
                "INSERT INTO api_keys (id, name, key_hash, prefix, created_at, revoked_at) VALUES (?1, 'k', ?2, 'hatch_', ?3, ?4)",
                rusqlite::params![id, vec![hash as u8; 32], created, revoked],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO vms (id, state, image_id, vcpu_count, mem_mib, enable_network, ssh_authorized_keys, \
             hypervisor, created_at, updated_at) VALUES ('vm-old', 'stopped', 'img', 1, 256, 0, '[]', 'qemu', \
             '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z');
             INSERT INTO templates (id, name, image_id, vcpu_count, mem_mib, ssh_authorized_keys, created_at) \
             VALUES ('tpl-old', 't', 'img', 1, 256, '[]', '2026-01-01T00:00:00.000000Z');
             INSERT INTO snapshots (id, vm_id, created_at, hypervisor, files, sizes, sha256s, complete) \
             VALUES ('snap-old', 'vm-old', '2026-01-01T00:00:00.000000Z', 'qemu', '[]', '[]', '[]', 1);
             INSERT INTO routes (id, vm_id, subdomain, target_port, auto_wake, created_at) \
             VALUES ('rt-old', 'vm-old', 'old', 80, 1, '2026-01-01T00:00:00.000000Z');",
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let keys = store.list_api_keys().unwrap();
    assert!(keys.iter().all(|k| k.role == hatch::model::Role::Admin), "{keys:?}");
    assert!(keys.iter().all(|k| k.quotas == hatch::model::Quotas::default()));
    let first = Some("key-first".to_string());
    assert_eq!(store.get_vm("vm-old").unwrap().unwrap().owner_key_id, first);
    assert_eq!(store.get_template("tpl-old").unwrap().unwrap().owner_key_id, first);
    assert_eq!(store.get_snapshot("snap-old").unwrap().unwrap().owner_key_id, first);
    assert_eq!(store.get_route("rt-old").unwrap().unwrap().owner_key_id, first);
    assert!(store.list_audit(10).unwrap().is_empty());
}
