//! Disk snapshots end to end (QEMU TCG; the `minimal` kernel and initramfs
//! registered with a root filesystem, which the guest sees as /dev/vda):
//! a VM's disk starts as a clone of the image's rootfs, a stored snapshot
//! keeps only the blocks the guest changed, restoring it from the stored
//! copy brings /dev/vda back byte for byte (SHA-256 inside the guest), and
//! a restore whose base image changed or vanished is refused with a clear
//! error while the VM stays snapshotted.

use crate::common;

use std::io::Write;
use std::path::Path;

use common::e2e::{create_ready_vm, Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use rand::RngCore;
use serde_json::{json, Value};

const MIB: usize = 1 << 20;
/// Incompressible data in the image's rootfs: what a full copy would store.
const ROOTFS_DATA: usize = 8 * MIB;

/// A 64 MiB sparse "root filesystem" with random data in its first 8 MiB.
fn make_rootfs(path: &Path) -> Vec<u8> {
    let mut data = vec![0u8; ROOTFS_DATA];
    rand::thread_rng().fill_bytes(&mut data);
    let mut file = std::fs::File::create_new(path).expect("rootfs");
    file.write_all(&data).unwrap();
    file.set_len(64 * MIB as u64).unwrap();
    data
}

/// SHA-256 of /dev/vda as the guest reads it from the disk (its page cache
/// dropped first, so a restored RAM image cannot answer for the disk).
fn vda_sha256(topo: &Topology, key: &TestKey, vm: &VmView) -> String {
    let out = topo.ssh(
        key,
        "root",
        vm.ssh_port,
        "sync && echo 3 > /proc/sys/vm/drop_caches && sha256sum /dev/vda",
    );
    let sum = out.split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(sum.len(), 64, "no checksum from the guest: {out}");
    sum
}

/// Writes `text` over the image's data at 4 KiB and random bytes into a
/// hole at 19 MiB, then syncs.
fn guest_writes(topo: &Topology, key: &TestKey, vm: &VmView, text: &str) {
    topo.ssh(
        key,
        "root",
        vm.ssh_port,
        &format!(
            "printf '{text}' | dd of=/dev/vda bs=1 seek=4096 conv=notrunc 2>/dev/null && \
             dd if=/dev/urandom of=/dev/vda bs=65536 count=2 seek=300 conv=notrunc 2>/dev/null && sync && echo done"
        ),
    );
}

fn snapshot_durably(daemon: &TestDaemon, vm: &VmView) -> Value {
    let (status, snapshot) = daemon.api("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert_eq!(status, 201, "{snapshot}\n{}", daemon.log());
    daemon.wait_snapshot_durable(&vm.id, snapshot["id"].as_str().unwrap())
}

fn restore_named(daemon: &TestDaemon, vm: &VmView, snapshot_id: &str) -> (u16, Value) {
    let body = json!({"snapshot_id": snapshot_id});
    daemon.api("POST", &format!("/vms/{}/restore", vm.id), Some(&body))
}

fn assert_refused_naming(daemon: &TestDaemon, vm: &VmView, snapshot_id: &str, image_id: &str, why: &str) {
    let (status, error) = restore_named(daemon, vm, snapshot_id);
    assert_eq!(status, 409, "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(image_id) && message.contains(why),
        "the error must name the image and say why: {error}"
    );
    let (_, now) = daemon.api("GET", &format!("/vms/{}", vm.id), None);
    assert_eq!(now["state"], "snapshotted", "{now}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_disk_snapshot_restores_byte_identical_and_needs_its_base_image_unchanged() {
    let minimal = common::images::minimal_image().await;
    let files = tempfile::tempdir_in(common::images::shared_dir()).expect("tempdir");
    let rootfs = files.path().join("rootfs.img");
    let original = make_rootfs(&rootfs);
    let mut with_disk = minimal.clone();
    with_disk.name = "minimal-with-disk".into();
    with_disk.rootfs_path = Some(rootfs.clone());

    let topo = Topology::new();
    let daemon = TestDaemon::start(topo.host_ns(), &[]);
    let image_id = topo.register_image(&daemon, &with_disk);
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));

    // The guest's disk starts as the image.
    let out = topo.ssh(
        &key,
        "root",
        vm.ssh_port,
        &format!("head -c {ROOTFS_DATA} /dev/vda | sha256sum"),
    );
    let image_head = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&original))
    };
    assert!(
        out.starts_with(&image_head),
        "the disk is not a copy of the image: {out}"
    );

    guest_writes(&topo, &key, &vm, "snapshot one");
    let first_sum = vda_sha256(&topo, &key, &vm);
    let first = snapshot_durably(&daemon, &vm);
    let first_id = first["id"].as_str().unwrap().to_string();
    let disk = first["artefacts"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "disk-diff.zst"))
        .unwrap_or_else(|| panic!("no disk diff stored: {first}"))
        .clone();
    assert_eq!(disk["base"]["image_id"], image_id.as_str(), "{disk}");
    let stored = disk["compressed_bytes"].as_u64().unwrap();
    eprintln!(
        "disk snapshot: {stored} bytes stored for a {} MiB disk whose image holds {} MiB of data",
        disk["size_bytes"].as_u64().unwrap() >> 20,
        ROOTFS_DATA >> 20
    );
    assert!(
        stored < (ROOTFS_DATA / 8) as u64,
        "only the changed blocks are stored: {disk}"
    );

    // Running again, the guest changes its disk and is snapshotted again;
    // the older snapshot comes back from the stored copy, disk and all.
    let (status, body) = daemon.api("POST", &format!("/vms/{}/restore", vm.id), None);
    assert_eq!(status, 200, "{body}");
    guest_writes(&topo, &key, &vm, "snapshot two");
    assert_ne!(vda_sha256(&topo, &key, &vm), first_sum);
    snapshot_durably(&daemon, &vm);
    let (status, body) = restore_named(&daemon, &vm, &first_id);
    assert_eq!(status, 200, "{body}\n{}", daemon.log());
    assert_eq!(vda_sha256(&topo, &key, &vm), first_sum, "the restored disk differs");

    // The image's rootfs edited in place, then removed: a restore from the
    // stored copy is refused, naming the image, and the VM stays snapshotted.
    snapshot_durably(&daemon, &vm);
    let mut edited = original.clone();
    edited[5 * MIB] ^= 0xff;
    std::fs::write(&rootfs, &edited).unwrap();
    assert_refused_naming(&daemon, &vm, &first_id, &image_id, "has changed");
    std::fs::remove_file(&rootfs).unwrap();
    assert_refused_naming(&daemon, &vm, &first_id, &image_id, "rootfs");

    // The image as it was: the same snapshot restores, byte for byte.
    std::fs::write(&rootfs, &original).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&rootfs)
        .unwrap()
        .set_len(64 * MIB as u64)
        .unwrap();
    let (status, body) = restore_named(&daemon, &vm, &first_id);
    assert_eq!(status, 200, "{body}\n{}", daemon.log());
    assert_eq!(vda_sha256(&topo, &key, &vm), first_sum);

    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
    topo.assert_nothing_left(&daemon, &vm);
}
