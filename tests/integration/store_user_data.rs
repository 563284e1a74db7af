//! user_data is stored as bytes: binary user data round-trips, and rows
//! written as TEXT before migration 4 read back as the same bytes.

use crate::common;

use common::daemon::{sample_template, sample_vm};
use hatch::model::UserData;
use hatch::store::migrations::migrate;
use hatch::store::Store;
use rusqlite::Connection;

const GZIP_BYTES: &[u8] = &[0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xff, 0x00];

#[test]
fn binary_user_data_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::path_in(dir.path())).unwrap();
    let mut template = sample_template("img-x");
    template.user_data = Some(UserData::from(GZIP_BYTES));
    store.insert_template(&template).unwrap();
    assert_eq!(store.get_template(&template.id).unwrap(), Some(template));
    let mut vm = sample_vm("img-x", 1);
    vm.user_data = Some(UserData::from(GZIP_BYTES));
    store.insert_vm(&vm, None).unwrap();
    assert_eq!(
        store.get_vm(&vm.id).unwrap().unwrap().user_data.unwrap().as_bytes(),
        GZIP_BYTES
    );
}

#[test]
fn text_rows_from_before_migration_4_keep_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = Store::path_in(dir.path());
    let text = "#cloud-config\nhostname: café\n";
    {
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, Some(3)).unwrap();
        conn.execute(
            "INSERT INTO templates (id, name, image_id, vcpu_count, mem_mib, user_data, ssh_authorized_keys, created_at) \
             VALUES ('tpl-old', 'old', 'img-old', 1, 256, ?1, '[]', '2026-01-01T00:00:00.000000Z')",
            [text],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO vms (id, state, image_id, vcpu_count, mem_mib, enable_network, user_data, \
             ssh_authorized_keys, hypervisor, created_at, updated_at) VALUES ('vm-old', 'stopped', 'img-old', 1, 256, \
             0, ?1, '[]', 'qemu', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
            [text],
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let template = store.get_template("tpl-old").unwrap().unwrap();
    assert_eq!(template.user_data.unwrap().as_text(), Some(text));
    let vm = store.get_vm("vm-old").unwrap().unwrap();
    assert_eq!(vm.user_data.unwrap().as_bytes(), text.as_bytes());
    let conn = Connection::open(&path).unwrap();
    for table in ["templates", "vms"] {
        let kind: String = conn
            .query_row(&format!("SELECT typeof(user_data) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(kind, "blob", "{table}: migrated to bytes");
    }
}
