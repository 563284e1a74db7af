//! Snapshots end to end (QEMU TCG, `minimal` image): what a guest had in
//! RAM and on its filesystem survives snapshot and restore, the guest keeps
//! its IP, MAC and SSH port, older snapshots can be restored, a corrupt
//! artefact is refused, and a daemon killed mid-snapshot recovers cleanly.

use crate::common;

use std::time::Duration;

use common::e2e::{create_ready_vm, GuestState, Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use common::netns::wait_for;
use serde_json::{json, Value};

fn snapshot(daemon: &TestDaemon, vm: &VmView) -> Value {
    let (status, snapshot) = daemon.api("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert_eq!(status, 201, "{snapshot}\n{}", daemon.log());
    snapshot
}

fn restore(daemon: &TestDaemon, vm: &VmView, snapshot_id: Option<&str>) -> (u16, Value) {
    let body = snapshot_id.map(|id| json!({"snapshot_id": id}));
    daemon.api("POST", &format!("/vms/{}/restore", vm.id), body.as_ref())
}

/// The local (hot) copy of a snapshot of `vm`.
fn hot_copy(daemon: &TestDaemon, vm: &VmView, snapshot_id: &str) -> std::path::PathBuf {
    daemon.data_path().join("hot").join(&vm.id).join(snapshot_id)
}

fn flip_middle_byte(path: &std::path::Path) {
    flip_byte(path, |len| len / 2);
}

fn flip_byte(path: &std::path::Path, at: impl FnOnce(usize) -> usize) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let at = at(bytes.len());
    bytes[at] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

fn stored_state(daemon: &TestDaemon, vm: &VmView, snapshot_id: &str) -> std::path::PathBuf {
    daemon
        .data_path()
        .join("snapshots")
        .join(&vm.id)
        .join(snapshot_id)
        .join("state.zst")
}

/// A restore of `snapshot_id` from its stored artefact alone is refused as
/// corrupt, and the VM stays snapshotted with no VMM.
fn assert_restore_refused_as_corrupt(daemon: &TestDaemon, vm: &VmView) {
    let (status, error) = restore(daemon, vm, None);
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "snapshot_corrupt");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("state.zst"),
        "{error}"
    );
    let (_, vm_now) = daemon.api("GET", &format!("/vms/{}", vm.id), None);
    assert_eq!(vm_now["state"], "snapshotted");
    assert!(daemon.vmm_pids().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_keeps_ram_files_and_network_identity() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));

    let guest = GuestState::leave(&topo, &key, vm.ssh_port, "one");
    let uptime_before: f64 = topo
        .ssh(&key, "root", vm.ssh_port, "cut -d' ' -f1 /proc/uptime")
        .trim()
        .parse()
        .unwrap();

    let first = snapshot(&daemon, &vm);
    let first_id = first["id"].as_str().unwrap().to_string();
    // Answered once the hypervisor's save is on disk; stored in the background.
    assert_eq!(first["durable"], false, "{first}");
    let stored = daemon.wait_snapshot_durable(&vm.id, &first_id);
    assert!(
        stored["artefacts"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|x| x["sha256"].as_str().is_some_and(|s| s.len() == 64))),
        "{stored}"
    );
    let (_, snapped) = daemon.api("GET", &format!("/vms/{}", vm.id), None);
    assert_eq!(snapped["state"], "snapshotted");
    assert!(daemon.vmm_pids().is_empty(), "the VMM must be gone after a snapshot");
    let same = VmView::from(&snapped);
    assert_eq!(
        (same.guest_ip.as_str(), same.guest_mac.as_str(), same.ssh_port),
        (vm.guest_ip.as_str(), vm.guest_mac.as_str(), vm.ssh_port)
    );
    assert_eq!(restore(&daemon, &vm, Some("snap-none")).0, 400);

    let (status, restored) = restore(&daemon, &vm, None);
    assert_eq!(status, 200, "{restored}\n{}", daemon.log());
    assert_eq!(restored["state"], "running");
    assert_eq!(VmView::from(&restored).ssh_port, vm.ssh_port);
    guest.assert_survived(&topo, &key, vm.ssh_port);
    let uptime_after: f64 = topo
        .ssh(&key, "root", vm.ssh_port, "cut -d' ' -f1 /proc/uptime")
        .trim()
        .parse()
        .unwrap();
    assert!(
        uptime_after >= uptime_before,
        "the guest rebooted: uptime {uptime_after} < {uptime_before}"
    );
    let address = topo.ssh(&key, "root", vm.ssh_port, "ip -4 -o addr show eth0");
    assert!(address.contains(&format!("{}/", vm.guest_ip)), "{address}");

    // A second snapshot with other contents; restoring the first brings "one" back.
    topo.ssh(&key, "root", vm.ssh_port, "echo two > /root/marker");
    let second = snapshot(&daemon, &vm);
    let list = daemon.cli_json(&["snapshot", "list", &vm.id]);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec![second["id"].as_str().unwrap(), first_id.as_str()],
        "newest first"
    );
    let (status, _) = restore(&daemon, &vm, Some(&first_id));
    assert_eq!(status, 200);
    assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "cat /root/marker").trim(), "one");

    // A damaged local copy is noticed and the stored artefacts are loaded instead.
    topo.ssh(&key, "root", vm.ssh_port, "echo three > /root/marker");
    let third = snapshot(&daemon, &vm);
    let third_id = third["id"].as_str().unwrap();
    daemon.wait_snapshot_durable(&vm.id, third_id);
    flip_middle_byte(&hot_copy(&daemon, &vm, third_id).join("state"));
    let (status, restored) = restore(&daemon, &vm, None);
    assert_eq!(status, 200, "{restored}\n{}", daemon.log());
    assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "cat /root/marker").trim(), "three");
    let events = daemon.api("GET", &format!("/vms/{}/events", vm.id), None).1;
    assert!(
        events
            .to_string()
            .contains(&format!("local copy of snapshot {third_id} failed its checksum")),
        "{events:#}"
    );

    // A corrupt stored artefact, with no local copy to fall back on: restore
    // refuses with a clear error, and the VM stays snapshotted.
    let fourth = snapshot(&daemon, &vm);
    let fourth_id = fourth["id"].as_str().unwrap();
    daemon.wait_snapshot_durable(&vm.id, fourth_id);
    flip_middle_byte(&hot_copy(&daemon, &vm, fourth_id).join("state"));
    let state = stored_state(&daemon, &vm, fourth_id);
    flip_middle_byte(&state);
    assert_restore_refused_as_corrupt(&daemon, &vm);

    // Damage found only after QEMU has read every byte (zstd's own checksum
    // ends the stream): the loaded guest is never resumed. Repaired, the
    // same snapshot restores from the stored artefact, streamed.
    flip_middle_byte(&state);
    flip_byte(&state, |len| len - 1);
    assert_restore_refused_as_corrupt(&daemon, &vm);
    flip_byte(&state, |len| len - 1);
    let (status, restored) = restore(&daemon, &vm, None);
    assert_eq!(status, 200, "{restored}\n{}", daemon.log());
    assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "cat /root/marker").trim(), "three");
    assert_eq!(snapshot(&daemon, &vm)["durable"], false);
    let (status, _) = restore(&daemon, &vm, Some(&first_id));
    assert_eq!(status, 200, "an intact snapshot still restores");
    assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "cat /root/marker").trim(), "one");
    // Removed right after the restore has answered.
    let hot = daemon.data_path().join("hot").join(&vm.id);
    assert!(
        wait_for(Duration::from_secs(10), || (!hot.exists()).then_some(())).is_some(),
        "a running VM keeps no local snapshot copy"
    );

    // Deleting a snapshot, then the VM, leaves no artefact behind.
    assert_eq!(daemon.api("DELETE", &format!("/snapshots/{fourth_id}"), None).0, 204);
    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
    assert!(
        !daemon.data_path().join("snapshots").join(&vm.id).exists(),
        "snapshot artefacts leaked"
    );
    topo.assert_nothing_left(&daemon, &vm);
}

/// A full disk: the snapshot fails with a clear error, the VM keeps running
/// with its state and nothing half-written is kept or listed; the idle
/// monitor's own attempt fails the same way and says so on the VM, and
/// suspends it once there is space again.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_the_snapshot_cleanly_and_idle_suspends_once_space_returns() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(
        &image,
        &[("HATCH_IDLE_TIMEOUT", "2s"), ("HATCH_IDLE_CHECK_INTERVAL", "1s")],
    );
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));
    let guest = GuestState::leave(&topo, &key, vm.ssh_port, "full-disk");

    // The artefact store and the snapshots' local copies on 1 MiB
    // filesystems, for the daemon only.
    let store = daemon.data_path().join("snapshots");
    let hot = daemon.data_path().join("hot");
    for dir in [&store, &hot] {
        std::fs::create_dir_all(dir).unwrap();
        let dir = dir.to_str().unwrap();
        daemon.in_mount_namespace(&["mount", "-t", "tmpfs", "-o", "size=1m", "hatch-test-full", dir]);
    }
    let store = store.to_str().unwrap().to_string();
    let hot = hot.to_str().unwrap().to_string();

    let (status, error) = daemon.api("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert_eq!(status, 503, "{error}\n{}", daemon.log());
    assert!(
        error["error"]["message"].as_str().is_some_and(|m| m.contains("space")),
        "{error}"
    );
    let (_, now) = daemon.api("GET", &format!("/vms/{}", vm.id), None);
    assert_eq!(now["state"], "running", "{now}");
    assert_eq!(daemon.vmm_pids().len(), 1);
    guest.assert_survived(&topo, &key, vm.ssh_port);
    let (_, snapshots) = daemon.api("GET", &format!("/vms/{}/snapshots", vm.id), None);
    assert_eq!(snapshots, json!([]));
    let leftovers = daemon.in_mount_namespace(&["find", &store, &hot, "-type", "f"]);
    assert_eq!(leftovers, "", "half-written artefacts kept");
    let vm_dir = daemon.data_path().join("vms").join(&vm.id);
    let scratch: Vec<_> = std::fs::read_dir(&vm_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("work-"))
        .collect();
    assert!(scratch.is_empty(), "snapshot scratch left behind: {scratch:?}");

    // With a route, the idle monitor tries too: it fails, and says so.
    let (status, route) = daemon.api(
        "POST",
        &format!("/vms/{}/routes", vm.id),
        Some(&json!({"subdomain": "full", "target_port": 8080})),
    );
    assert_eq!(status, 201, "{route}");
    let kept = daemon.wait_for_vm(&vm.id, "a failed idle suspension", Duration::from_secs(120), |v| {
        v["state"] == "running"
            && v["idle_status"]
                .as_str()
                .is_some_and(|s| s.contains("suspending failed"))
    });
    assert!(kept["idle_status"].as_str().unwrap().contains("space"), "{kept}");

    // Space for the local copy again (the store still full): the next idle
    // check suspends it; the snapshot cannot be stored yet, so it stays
    // local, and the VM restores whole from it.
    daemon.in_mount_namespace(&["umount", &hot]);
    let suspended = daemon.wait_for_vm(
        &vm.id,
        "snapshotted by the idle monitor",
        Duration::from_secs(180),
        |v| v["state"] == "snapshotted",
    );
    assert!(
        suspended["idle_status"]
            .as_str()
            .is_some_and(|s| s.starts_with("suspended")),
        "{suspended}"
    );
    let (_, snapshots) = daemon.api("GET", &format!("/vms/{}/snapshots", vm.id), None);
    assert_eq!(snapshots[0]["durable"], false, "{snapshots}");
    assert_eq!(restore(&daemon, &vm, None).0, 200, "{}", daemon.log());
    guest.assert_survived(&topo, &key, vm.ssh_port);
    // Running again, its disk moved on: a snapshot never stored is gone.
    let (_, snapshots) = daemon.api("GET", &format!("/vms/{}/snapshots", vm.id), None);
    assert_eq!(snapshots, json!([]));
    daemon.in_mount_namespace(&["umount", &store]);
    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
    topo.assert_nothing_left(&daemon, &vm);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_mid_snapshot_recovers_to_a_consistent_vm() {
    let image = common::images::minimal_image().await;
    let (topo, mut daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));
    topo.ssh(&key, "root", vm.ssh_port, "echo kept > /root/marker");

    // Kill the daemon while the snapshot request is in flight.
    let socket = daemon.socket.clone();
    let admin = daemon.admin_key();
    let path = format!("http://hatch/vms/{}/snapshot", vm.id);
    let request = std::thread::spawn(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-X", "POST", "--unix-socket"])
            .arg(&socket)
            .args(["-H", &format!("Authorization: Bearer {admin}"), &path])
            .output()
    });
    // The guest waits only for the hypervisor's save, so the kill lands
    // in it or in the background pass that stores the snapshot after.
    daemon.wait_for_vm(&vm.id, "snapshotting", Duration::from_secs(30), |v| {
        v["state"] == "snapshotting" || v["state"] == "snapshotted"
    });
    daemon.restart();
    let _ = request.join();

    // Consistent: either running (resumed) or snapshotted with a complete snapshot.
    let (_, now) = daemon.api("GET", &format!("/vms/{}", vm.id), None);
    let (_, snapshots) = daemon.api("GET", &format!("/vms/{}/snapshots", vm.id), None);
    match now["state"].as_str() {
        Some("running") => {
            assert_eq!(daemon.vmm_pids().len(), 1);
            assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "cat /root/marker").trim(), "kept");
        }
        Some("snapshotted") => {
            assert!(daemon.vmm_pids().is_empty());
            assert_eq!(snapshots.as_array().map(Vec::len), Some(1), "{snapshots}");
            assert_eq!(restore(&daemon, &vm, None).0, 200);
            assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "cat /root/marker").trim(), "kept");
        }
        other => panic!(
            "after a crash mid-snapshot the VM is {other:?}: {now}\n{}",
            daemon.log()
        ),
    }
    // No half-written artefacts: every file under snapshots/ belongs to a listed snapshot.
    let listed: Vec<String> = snapshots
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str().map(String::from))
        .collect();
    let vm_dir = daemon.data_path().join("snapshots").join(&vm.id);
    for entry in std::fs::read_dir(&vm_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(listed.contains(&name), "stray snapshot data {name} after the restart");
    }
    assert!(std::fs::read_dir(daemon.data_path().join("vms").join(&vm.id))
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with("work-")));
    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
    topo.assert_nothing_left(&daemon, &vm);
}
