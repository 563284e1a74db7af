//! Snapshot artefacts in S3-compatible object storage, against a real S3
//! server (moto) the tests start inside their own network namespace: the
//! store itself (multipart upload of a file bigger than one part, sorted
//! listing, delete by prefix, clear errors, everything under its prefix),
//! an artefact unpacked straight from its download and a damaged one
//! refused, the start-up sweep's rules, a VM snapshotted into the bucket and
//! restored from it with its files, RAM and SSH port intact, two daemons
//! sharing one bucket, and a daemon that starts before its bucket answers.

use crate::common;

use common::daemon::hatch_command_in;
use common::e2e::{create_ready_vm, GuestState, Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use common::netns::TestNetns;
use common::s3::{TestS3, ACCESS_KEY, BUCKET, SECRET_KEY};
use common::snapshot::{dir_names, random_bytes, same_contents, sparse_file, MIB};
use hatch::snapshot::{pack, unpack_from, Compression, Keep, S3Store, SnapshotError, SnapshotStore, S3_PART_SIZE};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[test]
fn an_artefact_unpacks_as_it_downloads_and_a_damaged_one_is_refused() {
    let server = TestS3::standalone();
    let work = tempfile::tempdir().expect("tempdir");
    // Bigger than two upload parts once packed (random data barely compresses).
    let original = work.path().join("memory");
    let size = 3 * S3_PART_SIZE as u64;
    sparse_file(
        &original,
        size,
        &[
            (0, random_bytes(2 * S3_PART_SIZE + 12345)),
            (size - 10, b"end marker".to_vec()),
        ],
    );
    let packed = work.path().join("memory.zst");
    let restored = work.path().join("restored");
    let config = server.config();
    let key = "vm-a/snap-1/memory.zst";

    server.own_netns().block_on(|| async {
        let info = pack(&original, &packed, Compression::default()).await.expect("pack");
        assert!(info.compressed_bytes > 2 * S3_PART_SIZE as u64);
        let store = S3Store::new(&config, "host-a").expect("S3 client");
        store.put(key, &packed).await.expect("put");

        let download = store.open(key).await.expect("open");
        unpack_from(download, &info, &restored, Keep::Scratch)
            .await
            .expect("unpack from the bucket");
        assert!(same_contents(&original, &restored), "the restored file differs");
        std::fs::remove_file(&restored).unwrap();

        // One byte flipped in the bucket: refused, nothing unpacked.
        let mut damaged = std::fs::read(&packed).unwrap();
        damaged[S3_PART_SIZE + 7] ^= 1;
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let damaged_file = elsewhere.path().join("damaged");
        std::fs::write(&damaged_file, &damaged).unwrap();
        store.put(key, &damaged_file).await.expect("put the damaged copy");
        assert_eq!(server.object(&format!("host-a/{key}")), damaged);
        let download = store.open(key).await.expect("open");
        match unpack_from(download, &info, &restored, Keep::Scratch).await {
            Err(SnapshotError::Corrupt { artefact, reason }) => {
                assert_eq!(artefact, "memory.zst");
                assert!(reason.contains("SHA-256"), "{reason}");
            }
            other => panic!("a damaged artefact must be refused as corrupt: {other:?}"),
        }
        assert_eq!(
            dir_names(work.path()),
            ["memory", "memory.zst"],
            "nothing unpacked, no temporary left, no download kept"
        );

        match store.open("vm-a/snap-1/missing.zst").await {
            Err(SnapshotError::NotFound { key }) => assert!(key.ends_with("vm-a/snap-1/missing.zst"), "{key}"),
            Err(other) => panic!("a missing object must be NotFound: {other:?}"),
            Ok(_) => panic!("a missing object opened"),
        }
    });
}

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

    // Another host's objects, under a prefix that starts with this one's.
    let neighbour = "fleet/host-a2/vm-a/snap-1/state.zst";
    server.put_object(neighbour, b"not ours");

    server.own_netns().block_on(|| async {
        let store = S3Store::new(&config, "fleet/host-a").expect("S3 client");
        store.check_reachable().await.expect("the bucket answers");
        store.put("vm-a/snap-1/memory.zst", &big).await.expect("multipart put");
        store.put("vm-a/snap-1/state.zst", &small).await.expect("put");
        store.put("vm-a/snap-2/state.zst", &small).await.expect("put");
        store.put("vm-b/snap-9/state.zst", &small).await.expect("put");

        // What the server holds, seen without the code under test: every
        // object under the store's prefix.
        assert_eq!(server.object("fleet/host-a/vm-a/snap-1/memory.zst").len() as u64, size);
        assert!(
            server.etag("fleet/host-a/vm-a/snap-1/memory.zst").ends_with("-3"),
            "uploaded in three parts"
        );
        assert!(
            !server.etag("fleet/host-a/vm-a/snap-1/state.zst").contains('-'),
            "a small file goes up in one request"
        );
        assert_eq!(server.keys("fleet/host-a/vm-").len(), 4);
        assert_eq!(server.keys("vm-").len(), 0, "nothing outside the prefix");

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
        let own: Vec<String> = server
            .keys("fleet/host-a/")
            .iter()
            .map(|key| key.strip_prefix("fleet/host-a/").unwrap().to_string())
            .collect();
        assert_eq!(store.list("").await.expect("list all"), own, "its own objects only");

        assert_eq!(store.delete("vm-a/snap-1/").await.expect("delete"), 2);
        assert_eq!(
            server.keys(""),
            [
                "fleet/host-a/vm-a/snap-2/state.zst",
                "fleet/host-a/vm-b/snap-9/state.zst",
                neighbour
            ]
        );

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
        assert_eq!(server.keys(""), [neighbour], "another host's objects stay");
    });
}

/// The start-up sweep at the store level: only objects under the store's
/// own prefix, shaped like Hatch's, owned by no snapshot and old enough.
#[test]
fn the_s3_sweep_takes_only_its_own_old_unreferenced_objects() {
    let server = TestS3::standalone();
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("state");
    std::fs::write(&file, b"device state").unwrap();
    let config = server.config();
    let foreign = ["host-b/vm-a/snap-2/state.zst", "other-tool/vm-a/snap-2/state.zst"];
    for key in foreign {
        server.put_object(key, b"not ours");
    }
    let referenced: HashSet<(String, String)> = [("vm-a".to_string(), "snap-1".to_string())].into();
    let hour = Duration::from_secs(3600);

    server.own_netns().block_on(|| async {
        let store = S3Store::new(&config, "host-a").expect("S3 client");
        for key in ["vm-a/snap-1/state.zst", "vm-a/snap-2/state.zst", "vm-a/notes/state.zst"] {
            store.put(key, &file).await.expect("put");
        }
        assert_eq!(
            store.sweep_orphans(&referenced, hour).await.expect("sweep"),
            0,
            "an unreferenced object younger than the minimum age is kept"
        );
        assert_eq!(server.keys("host-a/").len(), 3);

        // Let the objects age past a short minimum (S3 times have 1 s steps).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(
            store
                .sweep_orphans(&referenced, Duration::from_secs(1))
                .await
                .expect("sweep"),
            1,
            "an unreferenced object older than the minimum age is removed"
        );
        assert_eq!(
            server.keys(""),
            [
                "host-a/vm-a/notes/state.zst",
                "host-a/vm-a/snap-1/state.zst",
                foreign[0],
                foreign[1]
            ],
            "referenced, foreign-shaped and other hosts' objects stay"
        );
    });
}

/// A bucket that does not answer is reported at once (no minute of
/// retries), naming the settings, and is asked again on the next use.
#[test]
fn an_unreachable_bucket_is_reported_quickly_and_asked_again() {
    let ns = TestNetns::new();
    let mut args = hatch::config::ServeArgs::defaults();
    args.s3_endpoint = Some(TestS3::loopback_endpoint());
    args.s3_bucket = Some(BUCKET.to_string());
    args.s3_access_key = Some(ACCESS_KEY.to_string());
    args.s3_secret_key = Some(SECRET_KEY.to_string());
    let config = hatch::config::Config::from_args(&args).unwrap().s3.unwrap();
    let store = S3Store::new(&config, "host-a").expect("S3 client");

    let started = Instant::now();
    let (reachable, available, health) = ns.block_on(|| async {
        (
            store.check_reachable().await,
            store.ensure_available().await,
            store.health().await,
        )
    });
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    for error in [reachable.unwrap_err(), available.unwrap_err()] {
        assert!(matches!(error, SnapshotError::S3Unreachable { .. }), "{error:?}");
        assert!(error.to_string().contains("HATCH_S3_ENDPOINT"), "{error}");
    }
    assert_eq!((health.kind, health.ok), ("s3", false), "{health:?}");
    assert!(health.detail.contains("HATCH_S3_ENDPOINT"), "{}", health.detail);

    // The server comes up where the store points: the next use works.
    let server = TestS3::start_in(ns.name());
    ns.block_on(|| async {
        store.ensure_available().await.expect("asked again, the bucket answers");
        let health = store.health().await;
        assert!(health.ok, "{health:?}");
        assert!(health.detail.contains("under host-a/"), "{}", health.detail);
    });
    drop(server);
}

/// `hatch doctor` asks the bucket and names the settings when it does not
/// answer, without calling the host unfit (the daemon starts anyway);
/// invalid S3 settings still stop `hatch serve`, naming the variable.
#[test]
fn doctor_names_an_unreachable_bucket_and_serve_refuses_only_invalid_settings() {
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
    let with = |name: &'static str, value: &str| {
        let mut env = good.clone();
        env.retain(|(k, _)| *k != name);
        env.push((name, value.to_string()));
        env
    };
    let run = |args: &[&str], env: &[(&str, String)]| {
        let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        hatch_command_in(Some(ns), args, &vars).output().expect("run hatch")
    };

    let doctor = run(&["doctor", "--json"], &good);
    let report: Value = serde_json::from_slice(&doctor.stdout).expect("doctor JSON");
    let storage = storage_check(&report);
    assert_eq!(storage["ok"], true, "{storage}");
    assert!(storage["detail"].as_str().unwrap().contains(BUCKET), "{storage}");
    assert!(
        !data.path().join("host-id").exists(),
        "doctor makes no host id (serve does, at its first start)"
    );

    let bad = with("HATCH_S3_BUCKET", "no-such-bucket");
    let bad_doctor = run(&["doctor", "--json"], &bad);
    assert_eq!(
        bad_doctor.status.success(),
        doctor.status.success(),
        "an unreachable bucket does not stop the daemon, so it does not fail doctor"
    );
    let report: Value = serde_json::from_slice(&bad_doctor.stdout).expect("doctor JSON");
    let storage = storage_check(&report);
    assert_eq!(storage["ok"], false, "{storage}");
    let detail = storage["detail"].as_str().unwrap();
    assert!(
        detail.contains("HATCH_S3_BUCKET") && detail.contains("503"),
        "{storage}"
    );

    let serve = run(&["serve"], &with("HATCH_S3_PREFIX", "../other-host"));
    assert!(!serve.status.success(), "serve must refuse an unsafe prefix");
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert!(stderr.contains("HATCH_S3_PREFIX"), "{stderr}");
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
    let prefix = host_prefix(&daemon);
    let stored = artefact_keys(&daemon, &prefix, &vm.id, &snapshot);
    assert_eq!(
        s3.keys(&format!("{prefix}/{}/", vm.id)),
        stored,
        "the artefacts are in the bucket, under the host id"
    );
    // Each object is what the snapshot record says (size of the stored artefact).
    for artefact in snapshot["artefacts"].as_array().unwrap() {
        let key = format!(
            "{prefix}/{}/{snapshot_id}/{}",
            vm.id,
            artefact["name"].as_str().unwrap()
        );
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
        s3.keys(&format!("{prefix}/{}/", vm.id)).is_empty(),
        "deleting the snapshot removes its objects"
    );
    api_ok(&daemon, "DELETE", &format!("/vms/{}", vm.id), None, 204);
    topo.assert_nothing_left(&daemon, &vm);
}

/// The prefix a daemon keeps its objects under by default: its host id.
fn host_prefix(daemon: &TestDaemon) -> String {
    let id = std::fs::read_to_string(daemon.data_path().join("host-id")).expect("host-id in the data dir");
    id.trim().to_string()
}

/// The bucket keys of a snapshot's artefacts, sorted, once it is stored.
fn artefact_keys(daemon: &TestDaemon, prefix: &str, vm_id: &str, snapshot: &Value) -> Vec<String> {
    let snapshot_id = snapshot["id"].as_str().expect("snapshot id");
    let snapshot = daemon.wait_snapshot_durable(vm_id, snapshot_id);
    let mut keys: Vec<String> = snapshot["artefacts"]
        .as_array()
        .expect("artefacts")
        .iter()
        .map(|a| format!("{prefix}/{vm_id}/{snapshot_id}/{}", a["name"].as_str().unwrap()))
        .collect();
    keys.sort();
    assert!(keys.iter().any(|k| k.ends_with("/state.zst")), "{snapshot}");
    keys
}

/// Two hosts (each its own daemon, data directory and network namespace)
/// share one bucket: each writes under its own host id, and neither's
/// start-up sweep touches the other's objects, even unreferenced old ones;
/// its own unreferenced objects go only once older than the minimum age.
#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_share_a_bucket_and_sweep_only_their_own_old_orphans() {
    let image = common::images::minimal_image().await;
    let topo = Topology::new();
    // The bucket lives on host A; host B (the topology's other namespace)
    // reaches it over their link.
    let s3 = TestS3::start_shared_in(topo.host_ns());
    let env_a = s3.env();
    let env_a: Vec<(&str, &str)> = env_a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env_b = s3.env_at(topo.host_addr());
    let env_b: Vec<(&str, &str)> = env_b.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut daemon_a = TestDaemon::start(topo.host_ns(), &env_a);
    let mut daemon_b = TestDaemon::start(topo.client_ns(), &env_b);
    let key = TestKey::generate();
    let mut snapshots = Vec::new();
    for daemon in [&daemon_a, &daemon_b] {
        let health = api_ok(daemon, "GET", "/healthz", None, 200);
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["snapshot_storage"]["kind"], "s3", "{health}");
        let image_id = topo.register_image(daemon, &image);
        let vm = create_ready_vm(daemon, &image_id, &key, json!({}));
        let snapshot = api_ok(daemon, "POST", &format!("/vms/{}/snapshot", vm.id), None, 201);
        snapshots.push(artefact_keys(daemon, &host_prefix(daemon), &vm.id, &snapshot));
    }
    let (prefix_a, prefix_b) = (host_prefix(&daemon_a), host_prefix(&daemon_b));
    assert_ne!(prefix_a, prefix_b, "each data directory has its own host id");
    assert!(prefix_a.starts_with("host-"), "{prefix_a}");
    assert_eq!(
        s3.keys(&format!("{prefix_a}/")),
        snapshots[0],
        "A writes under its prefix"
    );
    assert_eq!(
        s3.keys(&format!("{prefix_b}/")),
        snapshots[1],
        "B writes under its prefix"
    );

    // Unreferenced objects shaped like Hatch's: each host's own, and one
    // outside both prefixes.
    let orphan_a = format!("{prefix_a}/vm-gone/snap-gone/state.zst");
    let orphan_b = format!("{prefix_b}/vm-gone/snap-gone/state.zst");
    let stranger = "vm-gone/snap-gone/state.zst".to_string();
    for orphan in [&orphan_a, &orphan_b, &stranger] {
        s3.put_object(orphan, b"no record owns this");
    }
    let everything = |s3: &TestS3| {
        let mut all: Vec<String> = snapshots.concat();
        all.extend([orphan_a.clone(), orphan_b.clone(), stranger.clone()]);
        all.sort();
        assert_eq!(s3.keys(""), all);
    };

    // The default minimum age (an hour): a young orphan of its own stays.
    daemon_a.restart();
    daemon_b.restart();
    everything(&s3);
    let id_a = host_prefix(&daemon_a);
    assert_eq!(id_a, prefix_a, "the host id is reused after a restart");

    // A short minimum age: each sweep takes its own orphan and nothing else
    // (the other host's objects are unreferenced old orphans to it, too).
    std::thread::sleep(Duration::from_millis(2100));
    daemon_a.restart_with(&[("HATCH_SNAPSHOT_SWEEP_MIN_AGE", "1s")]);
    let mut left: Vec<String> = snapshots.concat();
    left.extend([orphan_b.clone(), stranger.clone()]);
    left.sort();
    assert_eq!(s3.keys(""), left, "A's sweep took A's orphan only\n{}", daemon_a.log());
    daemon_b.restart_with(&[("HATCH_SNAPSHOT_SWEEP_MIN_AGE", "1s")]);
    left.retain(|k| *k != orphan_b);
    assert_eq!(s3.keys(""), left, "B's sweep took B's orphan only\n{}", daemon_b.log());
    drop(daemon_b);
    drop(daemon_a);
}

/// A daemon whose bucket does not answer yet starts anyway: /healthz says
/// so, a snapshot is refused with 503 `unavailable` naming HATCH_S3_* and
/// leaves the VM running; once the server is up, the same daemon snapshots
/// into it.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_starts_before_its_bucket_and_snapshots_once_it_answers() {
    let image = common::images::minimal_image().await;
    let topo = Topology::new();
    let env = TestS3::env_for(TestS3::loopback_endpoint());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = TestDaemon::start(topo.host_ns(), &env);

    let health = api_ok(&daemon, "GET", "/healthz", None, 200);
    assert_eq!(health["status"], "degraded", "{health}");
    let storage = &health["snapshot_storage"];
    assert_eq!(
        (&storage["kind"], &storage["ok"]),
        (&json!("s3"), &json!(false)),
        "{health}"
    );
    assert!(
        storage["detail"].as_str().unwrap().contains("HATCH_S3_ENDPOINT"),
        "{health}"
    );
    assert!(health["vms"]["total"].is_number(), "the usual fields stay: {health}");

    let image_id = topo.register_image(&daemon, &image);
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));
    let pids = daemon.vmm_pids();
    let (status, answer) = daemon.api("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("HATCH_S3_"),
        "{answer}"
    );
    let after = api_ok(&daemon, "GET", &format!("/vms/{}", vm.id), None, 200);
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(daemon.vmm_pids(), pids, "the VMM was left alone");
    assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "echo alive").trim(), "alive");

    let s3 = TestS3::start_in(topo.host_ns());
    let snapshot = api_ok(&daemon, "POST", &format!("/vms/{}/snapshot", vm.id), None, 201);
    let prefix = host_prefix(&daemon);
    let stored = artefact_keys(&daemon, &prefix, &vm.id, &snapshot);
    assert_eq!(s3.keys(""), stored, "no restart needed");
    let health = api_ok(&daemon, "GET", "/healthz", None, 200);
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["snapshot_storage"]["ok"], true, "{health}");
    let restored = api_ok(&daemon, "POST", &format!("/vms/{}/restore", vm.id), None, 200);
    assert_eq!(restored["state"], "running");
    api_ok(&daemon, "DELETE", &format!("/vms/{}", vm.id), None, 204);
    drop(daemon);
}
