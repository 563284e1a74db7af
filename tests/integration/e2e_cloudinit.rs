//! cloud-init injection end to end: the seed Hatch builds is read by the
//! guest (the `minimal` image's subset, and real cloud-init in `debian`).

use crate::common;

use std::time::Duration;

use base64::Engine;
use common::cloudinit::gzip;
use common::e2e::{create_ready_vm, Topology, VmView};
use common::hatchd::TestKey;
use serde_json::json;
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread")]
async fn minimal_image_runs_shell_user_data_and_installs_given_keys() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let user_data = "#!/bin/sh\necho \"user-data ran as $(id -u)\" > /root/marker\n";

    let vm = create_ready_vm(&daemon, &image_id, &key, json!({"user_data": user_data}));
    // The key given through ssh_authorized_keys logs in; the script left its marker.
    let marker = topo.ssh(&key, "root", vm.ssh_port, "cat /root/marker");
    assert_eq!(marker.trim(), "user-data ran as 0");
    // user_data reaches the guest byte for byte (the minimal init keeps the seed's files).
    let seen = topo.ssh(&key, "root", vm.ssh_port, "cat /var/lib/hatch/seed/user-data");
    assert_eq!(seen, user_data);
    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
}

/// `gzip -c script > f.gz; hatch vm create --user-data f.gz`: the CLI sends
/// it as `user_data_base64`, the seed disk the guest reads holds the gzip
/// bytes exactly, and the minimal init gunzips and runs it (as cloud-init would).
#[tokio::test(flavor = "multi_thread")]
async fn minimal_image_runs_gzip_user_data_sent_by_the_cli() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let compressed = gzip(b"#!/bin/sh\necho \"gzip user-data ran\" > /root/gzip-marker\n");
    let files = tempfile::tempdir().expect("tempdir");
    let user_data_file = files.path().join("user-data.gz");
    std::fs::write(&user_data_file, &compressed).expect("write user data");
    let public_key_file = key.private.with_extension("pub");

    let vm = daemon.cli_json(&[
        "vm",
        "create",
        "--image",
        &image_id,
        "--user-data",
        user_data_file.to_str().expect("utf-8 path"),
        "--ssh-key",
        public_key_file.to_str().expect("utf-8 path"),
        "--wait",
        "--timeout",
        "180",
    ]);
    let vm = VmView::from(&vm);
    let marker = topo.ssh(&key, "root", vm.ssh_port, "cat /root/gzip-marker");
    assert_eq!(marker.trim(), "gzip user-data ran");
    // The guest's copy of the seed's user-data is the gzip file, byte for byte.
    let seen = topo.ssh(&key, "root", vm.ssh_port, "sha256sum /var/lib/hatch/seed/user-data");
    let expected = hex::encode(Sha256::digest(&compressed));
    assert_eq!(seen.split_whitespace().next(), Some(expected.as_str()), "{seen}");
    let (_, shown) = daemon.api("GET", &format!("/vms/{}", vm.id), None);
    assert_eq!(
        shown["user_data_base64"],
        json!(base64::engine::general_purpose::STANDARD.encode(&compressed))
    );
    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn debian_image_applies_cloud_config_with_real_cloud_init() {
    let image = common::images::debian_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let user_data = format!(
        "#cloud-config\nssh_authorized_keys:\n  - {}\nwrite_files:\n  - path: /etc/hatch-e2e\n    content: written by cloud-init\n",
        key.public
    );

    let (status, vm) = daemon.api(
        "POST",
        "/vms?wait=ready&timeout=600",
        Some(&json!({"image_id": image_id, "user_data": user_data, "mem_mib": 512})),
    );
    assert_eq!(status, 201, "{vm}\n{}", daemon.log());
    let vm = VmView::from(&vm);
    let status = wait_cloud_init_done(&topo, &key, vm.ssh_port);
    assert!(status.contains("status: done"), "cloud-init status: {status}");
    let content = topo.ssh(&key, "debian", vm.ssh_port, "cat /etc/hatch-e2e");
    assert_eq!(content.trim(), "written by cloud-init");
    assert_eq!(topo.ssh(&key, "debian", vm.ssh_port, "hostname").trim(), vm.id);
    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
}

/// `cloud-init status --wait` over SSH (retrying while sshd starts).
fn wait_cloud_init_done(topo: &Topology, key: &TestKey, port: u16) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    loop {
        let status = topo.ssh(key, "debian", port, "cloud-init status --wait --long || true");
        if status.contains("status: done") || status.contains("status: error") || std::time::Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}
