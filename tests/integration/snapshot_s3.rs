//! Snapshot artefacts in S3-compatible object storage, against a real S3
//! server (moto) the tests start inside their own network namespace: the
//! store itself (multipart upload of a file bigger than one part, sorted
//! listing, delete by prefix, clear errors), the daemon refusing to start
//! with a bucket it cannot reach, and a VM snapshotted into the bucket and
//! restored from it with its files, RAM and SSH port intact.

use crate::common;

use common::daemon::hatch_command_in;
use common::e2e::{create_ready_vm, GuestState, Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use common::s3::{TestS3, BUCKET};
use common::snapshot::{dir_names, random_bytes, same_contents, sparse_file, MIB};
use hatch::snapshot::{S3Store, SnapshotError, SnapshotStore, S3_PART_SIZE};
use serde_json::{json, Value};

#[test]
fn s3_store_round_trips_lists_and_deletes_by_prefix() {
    let server = TestS3::standalone();
    let work = tempfile::tempdir().expect("tempdir");
    // Bigger than two upload parts, mostly holes, data at both ends and
    // across a part boundary.
    let part = S3_PART_SIZE as u64;
    let big = work.path().join("memory");
    let size = 2 * part + 3 * MIB + 123;
    sparse_file(
        &big,
        size,
        &[
            (0, random_bytes(4096)),
            (part - 100, random_bytes(300)),
            (size - 5000, random_bytes(5000)),
        ],
    );
    let small = work.path().join("state");
    std::fs::write(&small, b"device state").unwrap();
    let downloads = work.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();
    let config = server.config();

    server.own_netns().block_on(|| async {
        let store = S3Store::new(&config).expect("S3 client");
        store.check_reachable().await.expect("the bucket answers");
        store.put("vm-a/snap-1/memory.zst", &big).await.expect("multipart put");
        store.put("vm-a/snap-1/state.zst", &small).await.expect("put");
        store.put("vm-a/snap-2/state.zst", &small).await.expect("put");
        store.put("vm-b/snap-9/state.zst", &small).await.expect("put");

        // What the server holds, seen without the code under test.
        assert_eq!(server.object("vm-a/snap-1/memory.zst").len() as u64, size);
        assert!(
            server.etag("vm-a/snap-1/memory.zst").ends_with("-3"),
            "uploaded in three parts"
        );
        assert!(
            !server.etag("vm-a/snap-1/state.zst").contains('-'),
            "a small file goes up in one request"
        );
        assert_eq!(server.keys("vm-").len(), 4);

        let back = downloads.join("memory");
        store.get("vm-a/snap-1/memory.zst", &back).await.expect("get");
        assert!(
            same_contents(&big, &back),
            "the downloaded file differs from the uploaded one"
        );
        assert_eq!(
            dir_names(&downloads),
            ["memory"],
            "no temporary file is left beside the download"
        );

        assert_eq!(
            store.list("vm-a/").await.expect("list"),
            [
                "vm-a/snap-1/memory.zst",
                "vm-a/snap-1/state.zst",
                "vm-a/snap-2/state.zst"
            ]
        );
        assert_eq!(
            store.list("vm-a/snap-").await.expect("list"),
            store.list("vm-a/").await.expect("list")
        );
        assert_eq!(store.list("").await.expect("list all"), server.keys(""));

        assert_eq!(store.delete("vm-a/snap-1/").await.expect("delete"), 2);
        assert_eq!(server.keys(""), ["vm-a/snap-2/state.zst", "vm-b/snap-9/state.zst"]);

        let missing = downloads.join("missing");
        match store.get("vm-a/snap-1/memory.zst", &missing).await {
            Err(error @ SnapshotError::NotFound { .. }) => {
                assert!(error.to_string().contains("vm-a/snap-1/memory.zst"), "{error}")
            }
            other => panic!("a missing object must be NotFound: {other:?}"),
        }
        assert!(!missing.exists());
        assert_eq!(dir_names(&downloads), ["memory"]);
        assert!(matches!(store.delete("").await, Err(SnapshotError::InvalidKey { .. })));
        assert!(matches!(
            store.put("../escape", &small).await,
            Err(SnapshotError::InvalidKey { .. })
        ));
        assert!(matches!(
            store.put("vm-a/x", &work.path().join("none")).await,
            Err(SnapshotError::Io { .. })
        ));

        assert_eq!(store.delete("vm-").await.expect("delete the rest"), 2);
        assert!(server.keys("").is_empty());
    });
}

#[test]
fn an_unreachable_bucket_is_named_by_serve_and_doctor() {
    let server = TestS3::standalone();
    let ns = server.own_netns();
    let data = tempfile::tempdir().expect("data dir");
    let data_dir = data.path().display().to_string();
    let socket = format!("unix:{}/api.sock", data_dir);
    let mut good = server.env();
    good.extend([
        ("HATCH_DATA_DIR", data_dir),
        ("HATCH_URL", socket.clone()),
        ("HATCH_HTTP_ADDR", socket),
    ]);
    let mut bad = good.clone();
    for (name, value) in bad.iter_mut() {
        if *name == "HATCH_S3_BUCKET" {
            *value = "no-such-bucket".to_string();
        }
    }
    let run = |args: &[&str], env: &[(&str, String)]| {
        let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        hatch_command_in(Some(ns), args, &vars).output().expect("run hatch")
    };

    let doctor = run(&["doctor", "--json"], &good);
    let report: Value = serde_json::from_slice(&doctor.stdout).expect("doctor JSON");
    let storage = storage_check(&report);
    assert_eq!(storage["ok"], true, "{storage}");
    assert!(storage["detail"].as_str().unwrap().contains(BUCKET), "{storage}");

    let doctor = run(&["doctor", "--json"], &bad);
    assert!(
        !doctor.status.success(),
        "doctor must fail when the daemon could not start"
    );
    let report: Value = serde_json::from_slice(&doctor.stdout).expect("doctor JSON");
    let storage = storage_check(&report);
    assert_eq!(storage["ok"], false, "{storage}");
    assert!(
        storage["detail"].as_str().unwrap().contains("HATCH_S3_BUCKET"),
        "{storage}"
    );

    let serve = run(&["serve"], &bad);
    assert!(!serve.status.success(), "serve must refuse an unreachable bucket");
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert!(
        stderr.contains("no-such-bucket") && stderr.contains("HATCH_S3_BUCKET"),
        "{stderr}"
    );
}

fn api_ok(daemon: &TestDaemon, method: &str, path: &str, body: Option<&Value>, expected: u16) -> Value {
    let (status, answer) = daemon.api(method, path, body);
    assert_eq!(status, expected, "{method} {path}: {answer}\n{}", daemon.log());
    answer
}

/// The "snapshot storage" entry of `hatch doctor --json`.
fn storage_check(report: &Value) -> Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "snapshot storage"))
        .cloned()
        .unwrap_or_else(|| panic!("no storage check: {report:#}"))
}

/// One VM boot: snapshot into the bucket, restore from it, delete.
#[tokio::test(flavor = "multi_thread")]
async fn a_vm_snapshotted_to_s3_restores_with_ram_files_and_port() {
    let image = common::images::minimal_image().await;
    let topo = Topology::new();
    let s3 = TestS3::start_in(topo.host_ns());
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = TestDaemon::start(topo.host_ns(), &env);
    let image_id = topo.register_image(&daemon, &image);
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));

    let guest = GuestState::leave(&topo, &key, vm.ssh_port, "in-s3");

    let snapshot = api_ok(&daemon, "POST", &format!("/vms/{}/snapshot", vm.id), None, 201);
    let snapshot_id = snapshot["id"].as_str().expect("snapshot id").to_string();
    let names: Vec<&str> = snapshot["artefacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    let mut expected: Vec<String> = names
        .iter()
        .map(|name| format!("{}/{snapshot_id}/{name}", vm.id))
        .collect();
    expected.sort();
    assert!(names.contains(&"state.zst"), "{snapshot}");
    assert_eq!(
        s3.keys(&format!("{}/", vm.id)),
        expected,
        "the artefacts are in the bucket"
    );
    // Each object is what the snapshot record says (size of the stored artefact).
    for artefact in snapshot["artefacts"].as_array().unwrap() {
        let key = format!("{}/{snapshot_id}/{}", vm.id, artefact["name"].as_str().unwrap());
        assert_eq!(
            Some(s3.object(&key).len() as u64),
            artefact["compressed_bytes"].as_u64(),
            "{key}"
        );
    }
    let local = daemon.data_path().join("snapshots");
    assert!(
        !local.exists() || dir_names(&local).is_empty(),
        "artefacts must not be stored locally: {:?}",
        dir_names(&local)
    );
    assert!(daemon.vmm_pids().is_empty(), "the VMM must be gone after a snapshot");

    let restored = api_ok(&daemon, "POST", &format!("/vms/{}/restore", vm.id), None, 200);
    assert_eq!(restored["state"], "running");
    assert_eq!(VmView::from(&restored).ssh_port, vm.ssh_port);
    guest.assert_survived(&topo, &key, vm.ssh_port);

    api_ok(&daemon, "DELETE", &format!("/snapshots/{snapshot_id}"), None, 204);
    assert!(
        s3.keys(&format!("{}/", vm.id)).is_empty(),
        "deleting the snapshot removes its objects"
    );
    api_ok(&daemon, "DELETE", &format!("/vms/{}", vm.id), None, 204);
    topo.assert_nothing_left(&daemon, &vm);
}
