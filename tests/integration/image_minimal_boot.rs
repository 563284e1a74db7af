//! The `minimal` image built by Hatch boots under QEMU (TCG), applies a
//! NoCloud seed, accepts SSH, runs hatch-agent with its transport modules
//! loaded and shuts down on the ACPI power button.

use crate::common;

use std::time::Duration;

use common::hatchd::TestKey;
use common::images::{make_seed_disk, minimal_image, Disk, TcgGuest};
use common::netns::TestNetns;

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

fn initrd(image: &hatch::model::Image) -> &std::path::Path {
    image.initrd_path.as_deref().expect("minimal image has an initramfs")
}

#[tokio::test(flavor = "multi_thread")]
async fn boots_to_ready_counts_heartbeats_and_powers_off_on_acpi_button() {
    let image = minimal_image().await;
    let kernel = image.kernel_path.as_deref().expect("ELF vmlinux");
    let mut guest = TcgGuest::boot(kernel, initrd(&image), "hatch.heartbeat=1", &[], None);
    guest.wait_for("hatch-minimal: ready", BOOT_TIMEOUT).await;
    guest.wait_for("hatch-heartbeat 3", Duration::from_secs(60)).await;
    assert!(guest.serial().contains("no CIDATA seed disk"), "{}", guest.tail());
    // /init starts the agent (after the modules, before "ready").
    assert!(
        guest.serial().contains("hatch-init: hatch-agent started"),
        "{}",
        guest.tail()
    );

    let reply = guest.qmp("system_powerdown");
    assert!(reply.contains("return"), "system_powerdown: {reply}");
    let status = guest.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "QEMU did not exit cleanly: {status:?}\n{}",
        guest.tail()
    );
    assert!(guest.serial().contains("hatch-init: shutting down"), "{}", guest.tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn bzimage_boots_too_without_heartbeat() {
    let image = minimal_image().await;
    let bzimage = image.bzimage_path.as_deref().expect("bzImage");
    let mut guest = TcgGuest::boot(bzimage, initrd(&image), "", &[], None);
    guest.wait_for("hatch-minimal: ready", BOOT_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !guest.serial().contains("hatch-heartbeat"),
        "heartbeat without hatch.heartbeat=1:\n{}",
        guest.tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_sets_hostname_and_runs_shell_user_data() {
    let image = minimal_image().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = make_seed_disk(
        dir.path(),
        &[
            (
                "meta-data",
                "instance-id: vm-seedtest\nlocal-hostname: \"seeded-host\"\n",
            ),
            (
                "user-data",
                "#!/bin/sh\necho \"user-data-ran-on $(hostname)\" >/dev/console\n",
            ),
        ],
    );
    let disks = [Disk {
        path: seed,
        read_only: true,
    }];
    let kernel = image.kernel_path.as_deref().expect("ELF vmlinux");
    let mut guest = TcgGuest::boot(kernel, initrd(&image), "", &disks, None);
    guest.wait_for("hatch-minimal: ready", BOOT_TIMEOUT).await;
    guest
        .wait_for("user-data-ran-on seeded-host", Duration::from_secs(60))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_accepts_keys_from_meta_data_and_cloud_config() {
    let image = minimal_image().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (meta_key, config_key, stranger) = (TestKey::generate(), TestKey::generate(), TestKey::generate());
    let meta_data = format!(
        "instance-id: vm-ssh\nlocal-hostname: vm-ssh\npublic-keys:\n  - \"{}\"\n",
        meta_key.public
    );
    let user_data = format!("#cloud-config\nssh_authorized_keys:\n  - {}\n", config_key.public);
    let seed = make_seed_disk(dir.path(), &[("meta-data", &meta_data), ("user-data", &user_data)]);
    let netns = TestNetns::new();
    let kernel = image.kernel_path.as_deref().expect("ELF vmlinux");
    let disks = [Disk {
        path: seed,
        read_only: true,
    }];
    let mut guest = TcgGuest::boot_with(kernel, initrd(&image), "", &disks, Some((netns.name(), 2222)), true);
    guest.wait_for("hatch-minimal: ready", BOOT_TIMEOUT).await;

    let hostname = meta_key.ssh_until_ok(&netns, "root", "127.0.0.1", 2222, "hostname", Duration::from_secs(60));
    assert_eq!(hostname.trim(), "vm-ssh");
    let address = config_key.ssh_until_ok(
        &netns,
        "root",
        "127.0.0.1",
        2222,
        "ip -4 -o addr show eth0",
        Duration::from_secs(30),
    );
    assert!(address.contains("inet 10.0.2.15/"), "eth0 has no DHCP lease: {address}");
    // hatch-agent's transports are loaded and the agent is installed.
    let agent = config_key.ssh_until_ok(
        &netns,
        "root",
        "127.0.0.1",
        2222,
        // The agent's virtio-serial port is linked by name, as udev would.
        "cut -d' ' -f1 /proc/modules | sort; test -x /usr/sbin/hatch-agent && echo agent-installed; \
         test -c /dev/virtio-ports/org.hatch.agent.0 && echo agent-port",
        Duration::from_secs(30),
    );
    for wanted in [
        "virtio_console",
        "vsock",
        "vmw_vsock_virtio_transport_common",
        "vmw_vsock_virtio_transport",
        "agent-installed",
        "agent-port",
    ] {
        assert!(agent.lines().any(|l| l == wanted), "{wanted} missing: {agent}");
    }

    let out = stranger.ssh_once(&netns, "root", "127.0.0.1", 2222, "true");
    assert!(!out.status.success(), "a key that is in no seed was accepted");
    drop(guest);
}

/// Firecracker's SendCtrlAltDel reaches init as SIGINT (init turns the
/// kernel's Ctrl-Alt-Del reboot into a signal); the guest then syncs and
/// reboots, which ends the VMM. QEMU microvm has no keyboard controller,
/// so the signal is sent from inside the guest here.
#[tokio::test(flavor = "multi_thread")]
async fn sigint_to_init_shuts_the_guest_down() {
    let image = minimal_image().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = make_seed_disk(
        dir.path(),
        &[
            ("meta-data", "instance-id: vm-sigint\n"),
            (
                "user-data",
                // One write of a marker: other writers (the agent) may share the console's line.
                "#!/bin/sh\necho \"ctrl-alt-del=$(cat /proc/sys/kernel/ctrl-alt-del)\" >/dev/console\nkill -INT 1\n",
            ),
        ],
    );
    let kernel = image.kernel_path.as_deref().expect("ELF vmlinux");
    let mut guest = TcgGuest::boot(
        kernel,
        initrd(&image),
        "",
        &[Disk {
            path: seed,
            read_only: true,
        }],
        None,
    );
    let status = guest.wait_exit(BOOT_TIMEOUT).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "QEMU did not exit cleanly: {status:?}\n{}",
        guest.tail()
    );
    let serial = guest.serial();
    assert!(
        serial.contains("ctrl-alt-del=0"),
        "ctrl-alt-del not routed to init: {}",
        guest.tail()
    );
    assert!(serial.contains("hatch-init: shutting down"), "{}", guest.tail());
}
