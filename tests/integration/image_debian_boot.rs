//! The `debian` image built by Hatch boots under QEMU (TCG) from its
//! labelled ext4 root through its own initrd; cloud-init applies the NoCloud
//! seed, so the `debian` user can log in over SSH with the seeded key and
//! use sudo; systemd starts hatch-agent with its transport modules loaded.

use crate::common;

use std::time::Duration;

use common::hatchd::TestKey;
use common::images::{debian_image, make_seed_disk, Disk, TcgGuest};
use common::netns::TestNetns;

#[tokio::test(flavor = "multi_thread")]
async fn boots_from_labelled_root_and_accepts_ssh_as_debian() {
    let image = debian_image().await;
    assert_eq!(image.login_user, "debian");
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("vm-disk.ext4");
    hatch::image::prepare_vm_disk(&image, &disk).await.expect("per-VM disk");

    let key = TestKey::generate();
    let meta_data = format!(
        "instance-id: vm-debian\nlocal-hostname: vm-debian\npublic-keys:\n  - \"{}\"\n",
        key.public
    );
    let seed = make_seed_disk(
        dir.path(),
        &[("meta-data", &meta_data), ("user-data", "#cloud-config\n")],
    );
    let netns = TestNetns::new();
    let disks = [
        Disk {
            path: disk,
            read_only: false,
        },
        Disk {
            path: seed,
            read_only: true,
        },
    ];
    let kernel = image.kernel_path.as_deref().expect("ELF vmlinux");
    let initrd = image.initrd_path.as_deref().expect("initrd");
    let mut guest = TcgGuest::boot_with(
        kernel,
        initrd,
        &image.boot_args,
        &disks,
        Some((netns.name(), 2223)),
        true,
    );
    guest
        .wait_for("root file system /dev/vd", Duration::from_secs(180))
        .await;

    let out = key.ssh_until_ok(
        &netns,
        "debian",
        "127.0.0.1",
        2223,
        "hostname; sudo -n id -u; . /etc/os-release; echo $VERSION_CODENAME",
        Duration::from_secs(420),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["vm-debian", "0", "bookworm"], "serial:\n{}", guest.tail());
    let root = key.ssh_until_ok(
        &netns,
        "debian",
        "127.0.0.1",
        2223,
        "findmnt -no SOURCE,OPTIONS /",
        Duration::from_secs(30),
    );
    assert!(root.contains("rw"), "root is not mounted read-write: {root}");
    // Enabled, started at least once (a stub agent exits and is restarted,
    // a real one keeps running), its modules loaded by modules-load.d.
    let agent = key.ssh_until_ok(
        &netns,
        "debian",
        "127.0.0.1",
        2223,
        // Fails (and is retried) until the agent has started once.
        "systemctl is-enabled hatch-agent; \
         started=$(systemctl show -p ExecMainStartTimestampMonotonic --value hatch-agent); \
         [ \"$started\" != 0 ] || exit 1; echo \"$started\"; \
         cut -d' ' -f1 /proc/modules | grep -x -e virtio_console -e vmw_vsock_virtio_transport | sort; \
         test -c /dev/virtio-ports/org.hatch.agent.0 && echo agent-port",
        Duration::from_secs(30),
    );
    let lines: Vec<&str> = agent.lines().collect();
    assert_eq!(lines.len(), 5, "{agent}");
    assert_eq!(lines[0], "enabled", "{agent}");
    assert!(
        lines[1].parse::<u64>().is_ok_and(|t| t > 0),
        "hatch-agent never started: {agent}"
    );
    assert_eq!(
        lines[2..],
        ["virtio_console", "vmw_vsock_virtio_transport", "agent-port"],
        "{agent}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn per_vm_disks_are_sparse_writable_copies() {
    use std::os::unix::fs::MetadataExt;
    let image = debian_image().await;
    let base = image.rootfs_path.clone().expect("rootfs");
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk.ext4");
    hatch::image::prepare_vm_disk(&image, &disk).await.expect("copy");
    let (base_meta, disk_meta) = (std::fs::metadata(&base).unwrap(), std::fs::metadata(&disk).unwrap());
    assert_eq!(disk_meta.len(), base_meta.len());
    assert_ne!(
        disk_meta.ino(),
        base_meta.ino(),
        "the VM must not write into the shared base"
    );
    assert!(disk_meta.mode() & 0o200 != 0, "the copy must be writable");
    assert!(disk_meta.blocks() * 512 < disk_meta.len() / 2, "the copy is not sparse");
    // The copy is the same file system: e2fsck finds it clean and labelled.
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn"])
        .arg(&disk)
        .output()
        .expect("e2fsck");
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
    let label = std::process::Command::new("e2label")
        .arg(&disk)
        .output()
        .expect("e2label");
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), hatch::image::ROOT_LABEL);

    let again = hatch::image::prepare_vm_disk(&image, &disk).await;
    assert!(
        matches!(again, Err(hatch::image::ImageError::Invalid { field: "dest", .. })),
        "{again:?}"
    );
    let minimal = common::images::minimal_image().await;
    let none = hatch::image::prepare_vm_disk(&minimal, &dir.path().join("x")).await;
    assert!(
        matches!(
            none,
            Err(hatch::image::ImageError::Invalid {
                field: "rootfs_path",
                ..
            })
        ),
        "{none:?}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "failed copies left files"
    );
}
