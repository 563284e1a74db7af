//! The `debian` image built by Hatch boots under QEMU (TCG) from its
//! labelled ext4 root through its own initrd; cloud-init applies the NoCloud
//! seed, so the `debian` user can log in over SSH with the seeded key and
//! use sudo.

mod common;

use std::time::Duration;

use common::images::{debian_image, make_seed_disk, Disk, SshKey, TcgGuest, TestNetns};

#[tokio::test(flavor = "multi_thread")]
async fn boots_from_labelled_root_and_accepts_ssh_as_debian() {
    let image = debian_image().await;
    assert_eq!(image.login_user, "debian");
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("vm-disk.ext4");
    hatch::image::prepare_vm_disk(&image, &disk).await.expect("per-VM disk");

    let key = SshKey::generate();
    let meta_data = format!("instance-id: vm-debian\nlocal-hostname: vm-debian\npublic-keys:\n  - \"{}\"\n", key.public);
    let seed = make_seed_disk(dir.path(), &[("meta-data", &meta_data), ("user-data", "#cloud-config\n")]);
    let netns = TestNetns::new();
    let disks = [Disk { path: disk, read_only: false }, Disk { path: seed, read_only: true }];
    let kernel = image.kernel_path.as_deref().expect("ELF vmlinux");
    let initrd = image.initrd_path.as_deref().expect("initrd");
    let mut guest = TcgGuest::boot(kernel, initrd, &image.boot_args, &disks, Some((&netns.name, 2223)));
    guest.wait_for("root file system /dev/vd", Duration::from_secs(180)).await;

    let out = key
        .run(&netns, "debian", 2223, "hostname; sudo -n id -u; . /etc/os-release; echo $VERSION_CODENAME", Duration::from_secs(420))
        .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["vm-debian", "0", "bookworm"], "serial:\n{}", guest.tail());
    let root = key.run(&netns, "debian", 2223, "findmnt -no SOURCE,OPTIONS /", Duration::from_secs(30)).await;
    assert!(root.contains("rw"), "root is not mounted read-write: {root}");
}
