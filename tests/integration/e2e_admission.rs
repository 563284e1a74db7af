//! Host admission with real guests (QEMU TCG, `minimal` image): a VM is
//! created, started or restored only while the memory VMs hold stays within
//! HATCH_MEM_OVERCOMMIT × the host's memory; a refusal is 507
//! `insufficient_capacity` naming `mem_mib` and leaves nothing behind.
//! vCPUs are not limited by the host's CPUs: the networking guide's own
//! example (4 vCPUs, 8192 MiB) is accepted on a 2-core host.

use crate::common;

use common::e2e::{create_ready_vm, Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::{json, Value};

fn host_memory_mib() -> u64 {
    hatch::vmm::host::memory_mib().expect("/proc/meminfo")
}

fn assert_refused_for_memory(status: u16, body: &Value) {
    assert_eq!(
        (status, body["error"]["code"].as_str(), body["error"]["field"].as_str()),
        (507, Some("insufficient_capacity"), Some("mem_mib")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("HATCH_MEM_OVERCOMMIT"),
        "{body}"
    );
}

fn vm_count(daemon: &TestDaemon) -> usize {
    daemon.api("GET", "/vms", None).1.as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_past_the_overcommit_limit_is_refused_on_create_and_restore() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[("HATCH_MEM_OVERCOMMIT", "0.1")]);
    let limit = host_memory_mib() * 10 / 100;
    let key = TestKey::generate();
    let held = create_ready_vm(&daemon, &image_id, &key, json!({"mem_mib": 256}));

    // One MiB too many: refused, nothing made.
    let too_much = limit - 256 + 1;
    let (status, body) = daemon.api(
        "POST",
        "/vms",
        Some(&json!({"image_id": image_id, "mem_mib": too_much})),
    );
    assert_refused_for_memory(status, &body);
    assert_eq!(vm_count(&daemon), 1);
    let vm_dirs = std::fs::read_dir(daemon.data_path().join("vms")).unwrap().count();
    assert_eq!(vm_dirs, 1, "a refused create left a directory");
    let links = topo.on_host("ip", &["-o", "link", "show"]);
    assert_eq!(links.matches("fctap-").count(), 1, "{links}");

    // A snapshotted VM holds no memory: another VM may take it, and then
    // the snapshotted one cannot come back until that one goes.
    assert_eq!(daemon.api("POST", &format!("/vms/{}/snapshot", held.id), None).0, 201);
    let (status, other) = daemon.api(
        "POST",
        "/vms",
        Some(&json!({"image_id": image_id, "mem_mib": limit - 128, "enable_network": false})),
    );
    assert_eq!(status, 201, "{other}");
    let (status, body) = daemon.api("POST", &format!("/vms/{}/restore", held.id), None);
    assert_refused_for_memory(status, &body);
    let (_, still) = daemon.api("GET", &format!("/vms/{}", held.id), None);
    assert_eq!(
        still["state"], "snapshotted",
        "a refused restore must leave the snapshot as it was"
    );

    assert_eq!(
        daemon
            .api("DELETE", &format!("/vms/{}", other["id"].as_str().unwrap()), None)
            .0,
        204
    );
    let (status, restored) = daemon.api("POST", &format!("/vms/{}/restore", held.id), None);
    assert_eq!(
        (status, restored["state"].as_str()),
        (200, Some("running")),
        "{restored}"
    );
    assert_eq!(topo.ssh(&key, "root", held.ssh_port, "hostname").trim(), held.id);

    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", held.id), None).0, 204);
    topo.assert_nothing_left(&daemon, &VmView::from(&restored));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guides_example_of_4_vcpus_and_8_gib_is_accepted_on_a_small_host() {
    let image = common::images::minimal_image().await;
    let (_topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let body = json!({"image_id": image_id, "enable_network": false, "vcpu_count": 4, "mem_mib": 8192});
    let (status, vm) = daemon.api("POST", "/vms", Some(&body));
    if host_memory_mib() < 8192 {
        // Not enough memory here: the refusal must say why.
        assert_refused_for_memory(status, &vm);
        return;
    }
    assert_eq!(
        (status, vm["state"].as_str()),
        (201, Some("running")),
        "{vm}\n{}",
        daemon.log()
    );
    assert_eq!(vm["vcpu_count"], 4);
    assert_eq!(
        daemon
            .api("DELETE", &format!("/vms/{}", vm["id"].as_str().unwrap()), None)
            .0,
        204
    );
}

#[tokio::test]
async fn a_disk_larger_than_the_free_space_is_refused_before_anything_is_made() {
    let api = common::daemon::TestApi::start().await;
    let (elf, _, initrd) = common::daemon::fake_boot_files(api.dir.path());
    // A sparse file: a terabyte of apparent size costs nothing here, but a
    // VM's copy may grow to all of it.
    let rootfs = api.dir.path().join("huge-rootfs.img");
    std::fs::File::create(&rootfs).unwrap().set_len(1 << 40).unwrap();
    let (status, image) = api
        .call(
            "POST",
            "/images",
            Some(json!({ "name": "huge", "kernel_path": elf, "initrd_path": initrd, "rootfs_path": rootfs })),
        )
        .await;
    assert_eq!(status, 201, "{image}");
    let (status, body) = api
        .call(
            "POST",
            "/vms",
            Some(json!({ "image_id": image["id"], "enable_network": false })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str(), body["error"]["field"].as_str()),
        (507, Some("insufficient_capacity"), Some("image_id")),
        "{body}"
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("free"), "{body}");
    assert_eq!(api.call("GET", "/vms", None).await.1, json!([]));
    let vm_dirs = std::fs::read_dir(api.dir.path().join("vms")).map_or(0, |d| d.count());
    assert_eq!(vm_dirs, 0);
}
