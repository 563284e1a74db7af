//! The local snapshot store on a real directory: objects appear whole or
//! not at all, and put/get/list/delete behave like an object store.

use crate::common;

use common::snapshot::{dir_names, random_bytes};
use hatch::snapshot::{LocalStore, SnapshotError, SnapshotStore};

struct Fixture {
    _dir: tempfile::TempDir,
    store: LocalStore,
    work: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::under_data_dir(&dir.path().join("data"));
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir work");
    Fixture { _dir: dir, store, work }
}

impl Fixture {
    async fn put_bytes(&self, key: &str, bytes: &[u8]) {
        let local = self.work.join("upload");
        std::fs::write(&local, bytes).expect("write upload");
        self.store.put(key, &local).await.expect("put");
    }

    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, SnapshotError> {
        let local = self.work.join("download");
        self.store.get(key, &local).await?;
        Ok(std::fs::read(&local).expect("read download"))
    }
}

#[tokio::test]
async fn put_get_list_and_delete_by_prefix() {
    let f = fixture();
    let disk = random_bytes(300_000);
    f.put_bytes("vm-a/snap-1/disk.zst", &disk).await;
    f.put_bytes("vm-a/snap-1/state.zst", b"state").await;
    f.put_bytes("vm-a/snap-2/disk.zst", b"newer").await;
    f.put_bytes("vm-b/snap-9/disk.zst", b"other vm").await;

    assert_eq!(f.get_bytes("vm-a/snap-1/disk.zst").await.expect("get"), disk);
    assert_eq!(
        f.store.list("vm-a/").await.expect("list"),
        ["vm-a/snap-1/disk.zst", "vm-a/snap-1/state.zst", "vm-a/snap-2/disk.zst"]
    );
    assert_eq!(f.store.list("").await.expect("list all").len(), 4);

    // Overwriting replaces the object.
    f.put_bytes("vm-a/snap-2/disk.zst", b"replaced").await;
    assert_eq!(f.get_bytes("vm-a/snap-2/disk.zst").await.expect("get"), b"replaced");

    assert_eq!(f.store.delete("vm-a/snap-1/").await.expect("delete"), 2);
    assert_eq!(
        f.store.list("").await.expect("list"),
        ["vm-a/snap-2/disk.zst", "vm-b/snap-9/disk.zst"]
    );
    assert!(matches!(
        f.get_bytes("vm-a/snap-1/disk.zst").await,
        Err(SnapshotError::NotFound { .. })
    ));
    // The emptied snapshot directory is gone too, the VM's directory stays.
    assert_eq!(dir_names(&f.store.root().join("vm-a")), ["snap-2"]);

    assert_eq!(f.store.delete("vm-").await.expect("delete rest"), 2);
    assert!(f.store.list("").await.expect("list").is_empty());
    assert_eq!(dir_names(f.store.root()), Vec::<String>::new());
}

#[tokio::test]
async fn half_written_objects_are_never_listed_and_are_swept() {
    let f = fixture();
    f.put_bytes("vm-a/snap-1/disk.zst", b"complete").await;
    // What a daemon killed in the middle of a put leaves behind.
    let partial = f.store.root().join("vm-a/snap-1/.mem.zst.Xy12Ab.partial");
    std::fs::write(&partial, b"half").expect("write partial");

    assert_eq!(f.store.list("vm-a/").await.expect("list"), ["vm-a/snap-1/disk.zst"]);
    assert_eq!(f.store.sweep_partials().await.expect("sweep"), 1);
    assert!(!partial.exists());
    assert_eq!(dir_names(&f.store.root().join("vm-a/snap-1")), ["disk.zst"]);
}

#[tokio::test]
async fn bad_keys_missing_objects_and_empty_delete_are_errors() {
    let f = fixture();
    let local = f.work.join("x");
    std::fs::write(&local, b"x").expect("write");
    for key in ["../escape", "/etc/passwd", "vm-a/../../x", "vm-a/.hidden", "a b", ""] {
        assert!(
            matches!(f.store.put(key, &local).await, Err(SnapshotError::InvalidKey { .. })),
            "{key:?}"
        );
    }
    assert!(!f.store.root().exists(), "nothing may be written for a bad key");
    assert!(matches!(
        f.get_bytes("vm-a/none").await,
        Err(SnapshotError::NotFound { .. })
    ));
    assert!(matches!(
        f.store.delete("").await,
        Err(SnapshotError::InvalidKey { .. })
    ));
    assert!(matches!(
        f.store.put("vm-a/k", &f.work.join("does-not-exist")).await,
        Err(SnapshotError::Io { .. })
    ));
    assert!(!f.store.root().exists(), "a failed put leaves nothing behind");
}
