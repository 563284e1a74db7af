//! Image files are confined: `POST /images` takes kernel, initrd and rootfs
//! only as regular files (after following links) under the import
//! directories, never Hatch's own state; and a file swapped for a link to
//! that state after registration stops the VM from launching.

use crate::common;

use common::daemon::{fake_boot_files, TestApi};
use serde_json::{json, Value};

async fn register(api: &TestApi, rootfs: &std::path::Path) -> (u16, Value) {
    let (elf, _, initrd) = fake_boot_files(api.dir.path());
    api.call(
        "POST",
        "/images",
        Some(json!({ "name": "probe", "kernel_path": elf, "initrd_path": initrd, "rootfs_path": rootfs })),
    )
    .await
}

#[tokio::test]
async fn hatchs_own_files_and_anything_outside_the_import_dirs_are_refused() {
    let api = TestApi::start().await;
    let data = api.dir.path();
    // Hatch's own state, as it lies in the data directory.
    for dir in ["vms/vm-victim", "snapshots/vm-victim/snap-x"] {
        std::fs::create_dir_all(data.join(dir)).unwrap();
    }
    std::fs::write(data.join("vms/vm-victim/disk.img"), b"secret disk").unwrap();
    std::fs::write(data.join("snapshots/vm-victim/snap-x/memory.zst"), b"secret memory").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("file"), b"x").unwrap();
    std::os::unix::fs::symlink(outside.path().join("file"), data.join("escape")).unwrap();
    std::os::unix::fs::symlink(data.join("hatch.db"), data.join("db-link")).unwrap();

    let refused = [
        data.join("hatch.db"),
        data.join("vms/vm-victim/disk.img"),
        data.join("snapshots/vm-victim/snap-x/memory.zst"),
        data.join("db-link"),
        data.join("escape"),
        std::path::PathBuf::from("/etc/shadow"),
        data.join("vms"),
        std::path::PathBuf::from("/dev/zero"),
    ];
    for rootfs in &refused {
        let (status, body) = register(&api, rootfs).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (400, Some("rootfs_path")),
            "{}: {body}",
            rootfs.display()
        );
    }
    assert_eq!(
        api.call("GET", "/images", None).await.1,
        json!([]),
        "nothing registered"
    );

    // A file in an import directory is fine, and stored where it really is.
    std::fs::write(data.join("rootfs.img"), b"rootfs").unwrap();
    std::os::unix::fs::symlink(data.join("rootfs.img"), data.join("rootfs-link")).unwrap();
    let (status, image) = register(&api, &data.join("rootfs-link")).await;
    assert_eq!(status, 201, "{image}");
    assert_eq!(image["rootfs_path"], json!(data.join("rootfs.img")));

    // Swapped for a link to the database after registration: no VM boots from it.
    std::fs::remove_file(data.join("rootfs.img")).unwrap();
    std::os::unix::fs::symlink(data.join("hatch.db"), data.join("rootfs.img")).unwrap();
    let (status, body) = api
        .call(
            "POST",
            "/vms",
            Some(json!({ "image_id": image["id"], "enable_network": false })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (409, Some("image_id")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("Hatch's own state"),
        "{body}"
    );
    assert_eq!(api.call("GET", "/vms", None).await.1, json!([]));
}
