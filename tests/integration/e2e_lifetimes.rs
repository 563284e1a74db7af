//! VM lifetimes end to end (QEMU TCG, `minimal` image, real dnsmasq,
//! iptables and SSH): a VM past its `ttl_seconds` is deleted by itself,
//! running or snapshotted, and even when it expired while the daemon was
//! down, with the reason on its events and nothing left on the host; a VM
//! without routes is stopped or snapshotted after its own idle timeout and
//! comes back whole, unless an SSH session is open; `on_idle: "none"` keeps
//! a routed VM running; bad settings are refused naming the field.

use crate::common;

use std::time::Duration;

use common::e2e::{create_ready_vm, GuestState, Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::{json, Value};

const CHECK_FAST: (&str, &str) = ("HATCH_IDLE_CHECK_INTERVAL", "1s");

fn timestamp(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .with_timezone(&chrono::Utc)
}

/// `POST /vms` (answered once the VM runs, not once it is ready).
fn create_vm(daemon: &TestDaemon, image_id: &str, key: &TestKey, extra: Value) -> Value {
    let mut body = json!({"image_id": image_id, "ssh_authorized_keys": [key.public]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let (status, vm) = daemon.api("POST", "/vms", Some(&body));
    assert_eq!(status, 201, "{vm}\n{}", daemon.log());
    vm
}

fn wait_gone(daemon: &TestDaemon, id: &str, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while daemon.api("GET", &format!("/vms/{id}"), None).0 != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "{id} was never deleted ({what})\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The reason on the VM's `deleting` state event, and the state it left.
fn deletion_reason(daemon: &TestDaemon, id: &str) -> (String, String) {
    let events = daemon.events_of(id);
    let deleting = events
        .iter()
        .find(|e| e["kind"] == "state" && e["to_state"] == "deleting")
        .unwrap_or_else(|| panic!("no deleting event for {id}: {events:#?}"));
    assert!(
        events.iter().any(|e| e["kind"] == "state" && e["to_state"].is_null()),
        "{id}'s deletion is not recorded: {events:#?}"
    );
    (
        deleting["reason"].as_str().unwrap_or_default().to_string(),
        deleting["from_state"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn vms_past_their_ttl_are_deleted_running_or_snapshotted_and_across_a_restart() {
    let image = common::images::minimal_image().await;
    let (topo, mut daemon, image_id) = Topology::with_daemon(&image, &[CHECK_FAST]);
    let key = TestKey::generate();

    // Long enough to be snapshotted first and to expire while the daemon is down.
    let sleeper = create_vm(&daemon, &image_id, &key, json!({"ttl_seconds": 60}));
    let sleeper_id = sleeper["id"].as_str().unwrap().to_string();
    let (status, snapshot) = daemon.api("POST", &format!("/vms/{sleeper_id}/snapshot"), None);
    assert!(matches!(status, 200 | 201), "{snapshot}");
    let keeper = create_vm(&daemon, &image_id, &key, json!({}));
    assert!(keeper.get("expires_at").is_none(), "{keeper}");

    // Through the CLI: `--ttl 5s` is ttl_seconds 5.
    let short = daemon.cli_json(&["vm", "create", "--image", &image_id, "--no-ssh-key", "--ttl", "5s"]);
    let short_id = short["id"].as_str().unwrap().to_string();
    assert_eq!(short["ttl_seconds"], 5, "{short}");
    assert_eq!(
        timestamp(&short["expires_at"]) - timestamp(&short["created_at"]),
        chrono::Duration::seconds(5),
        "{short}"
    );
    wait_gone(&daemon, &short_id, "ttl_seconds 5");
    let (reason, from) = deletion_reason(&daemon, &short_id);
    assert!(reason.starts_with("ttl expired"), "{reason}");
    assert_eq!(from, "running");

    // The snapshotted VM expires while the daemon is down (kill -9: VMs
    // keep running); it goes once the daemon is back.
    let (_, now) = daemon.api("GET", &format!("/vms/{sleeper_id}"), None);
    assert_eq!(
        now["state"], "snapshotted",
        "expired before the restart could be tried: {now}"
    );
    let expires_at = timestamp(&now["expires_at"]);
    daemon.kill9();
    let wait = (expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
    std::thread::sleep(wait + Duration::from_secs(1));
    daemon.start_again();
    wait_gone(&daemon, &sleeper_id, "expired while the daemon was down");
    let (reason, from) = deletion_reason(&daemon, &sleeper_id);
    assert!(reason.starts_with("ttl expired: ttl_seconds 60"), "{reason}");
    assert_eq!(from, "snapshotted");

    // Only the VMs with a TTL went.
    let (_, kept) = daemon.api("GET", &format!("/vms/{}", keeper["id"].as_str().unwrap()), None);
    assert_eq!(kept["state"], "running", "{kept}");
    assert_eq!(
        daemon
            .api("DELETE", &format!("/vms/{}", keeper["id"].as_str().unwrap()), None)
            .0,
        204
    );
    let seen = [&short, &sleeper, &keeper].map(VmView::from);
    topo.assert_host_clean(&daemon, seen.iter());
}

#[tokio::test(flavor = "multi_thread")]
async fn vms_without_routes_are_stopped_or_snapshotted_by_their_own_idle_timeout_unless_in_use() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[CHECK_FAST, ("HATCH_IDLE_TIMEOUT", "5s")]);
    let key = TestKey::generate();
    let idle = json!({"idle_timeout_seconds": 20});

    // `stopper` is stopped when idle, but an SSH session holds it awake.
    let mut stop = idle.clone();
    stop["on_idle"] = json!("stop");
    let stopper = create_ready_vm(&daemon, &image_id, &key, stop);
    let session = topo.hold_ssh_session(&key, stopper.ssh_port);
    let (_, shown) = daemon.api("GET", &format!("/vms/{}", stopper.id), None);
    assert_eq!(
        (shown["on_idle"].as_str(), shown["idle_timeout_seconds"].as_u64()),
        (Some("stop"), Some(20))
    );

    // `sleeper` sets only a timeout: snapshotted when idle, routes or not.
    let sleeper = create_ready_vm(&daemon, &image_id, &key, idle);
    let state = GuestState::leave(&topo, &key, sleeper.ssh_port, "before-idle");

    // `awake` has a route and HATCH_IDLE_TIMEOUT is short, but it says never.
    let awake = create_ready_vm(&daemon, &image_id, &key, json!({"on_idle": "none"}));
    let (status, route) = daemon.api(
        "POST",
        &format!("/vms/{}/routes", awake.id),
        Some(&json!({"subdomain": "awake", "target_port": 8080})),
    );
    assert_eq!(status, 201, "{route}");

    let slept = daemon.wait_for_vm(&sleeper.id, "snapshotted when idle", Duration::from_secs(180), |v| {
        v["state"] == "snapshotted"
    });
    assert!(
        slept["idle_status"]
            .as_str()
            .is_some_and(|s| s.starts_with("suspended")),
        "{slept}"
    );
    let kept = daemon.wait_for_vm(&stopper.id, "kept by its SSH session", Duration::from_secs(60), |v| {
        v["idle_status"].as_str().is_some_and(|s| s.contains("SSH"))
    });
    assert_eq!(kept["state"], "running", "{kept}");

    // The session ends: the idle timeout runs out and the VM is stopped.
    drop(session);
    let stopped = daemon.wait_for_vm(&stopper.id, "stopped when idle", Duration::from_secs(180), |v| {
        v["state"] == "stopped"
    });
    assert!(
        stopped["idle_status"]
            .as_str()
            .is_some_and(|s| s.starts_with("stopped")),
        "{stopped}"
    );
    let reasons: Vec<Value> = daemon
        .events_of(&stopper.id)
        .into_iter()
        .filter(|e| e["kind"] == "state" && e["to_state"] == "stopping")
        .map(|e| e["reason"].clone())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.starts_with("idle: "))),
        "{reasons:?}"
    );

    // Both come back and answer.
    let (status, started) = daemon.api("POST", &format!("/vms/{}/start", stopper.id), None);
    assert_eq!((status, started["state"].as_str()), (200, Some("running")), "{started}");
    assert_eq!(topo.ssh(&key, "root", stopper.ssh_port, "hostname").trim(), stopper.id);
    let (status, restored) = daemon.api("POST", &format!("/vms/{}/restore", sleeper.id), None);
    assert_eq!(
        (status, restored["state"].as_str()),
        (200, Some("running")),
        "{restored}"
    );
    state.assert_survived(&topo, &key, sleeper.ssh_port);

    // Meanwhile the VM that said "none" was never idled.
    let (_, never) = daemon.api("GET", &format!("/vms/{}", awake.id), None);
    assert_eq!(never["state"], "running", "{never}");
    assert!(
        !daemon
            .events_of(&awake.id)
            .iter()
            .any(|e| e["kind"] == "idle" || e["to_state"] == "snapshotting"),
        "on_idle none was idled"
    );

    for vm in [&stopper, &sleeper, &awake] {
        assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
    }
    topo.assert_host_clean(&daemon, [&stopper, &sleeper, &awake]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_lifetimes_are_refused_naming_the_field_and_create_nothing() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let too_long = 365 * 24 * 3600 + 1;
    let cases = [
        (json!({"ttl_seconds": 0}), "ttl_seconds"),
        (json!({"ttl_seconds": -30}), "ttl_seconds"),
        (json!({"ttl_seconds": too_long}), "ttl_seconds"),
        (json!({"ttl_seconds": 1e30}), "ttl_seconds"),
        (json!({"ttl_seconds": 2.5}), "ttl_seconds"),
        (json!({"ttl_seconds": "60"}), "ttl_seconds"),
        (json!({"idle_timeout_seconds": 0}), "idle_timeout_seconds"),
        (json!({"idle_timeout_seconds": too_long}), "idle_timeout_seconds"),
        (json!({"on_idle": "hibernate"}), "on_idle"),
        (json!({"on_idle": true}), "on_idle"),
        (
            json!({"on_idle": "none", "idle_timeout_seconds": 60}),
            "idle_timeout_seconds",
        ),
    ];
    for (extra, field) in cases {
        for (path, mut body) in [
            ("/vms", json!({"image_id": image_id})),
            ("/templates", json!({"name": "t", "image_id": image_id})),
        ] {
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            let (status, error) = daemon.api("POST", path, Some(&body));
            assert_eq!(
                (status, error["error"]["field"].as_str()),
                (400, Some(field)),
                "{path} {body}: {error}"
            );
        }
    }
    let (_, vms) = daemon.api("GET", "/vms", None);
    let (_, templates) = daemon.api("GET", "/templates", None);
    assert_eq!((vms, templates), (json!([]), json!([])));
    topo.assert_host_clean(&daemon, &[] as &[VmView]);

    // A template's settings reach the VMs made from it; the VM's own win.
    let (status, template) = daemon.api(
        "POST",
        "/templates",
        Some(&json!({"name": "short", "image_id": image_id, "ttl_seconds": 600, "on_idle": "stop"})),
    );
    assert_eq!(status, 201, "{template}");
    assert_eq!(
        (template["ttl_seconds"].as_u64(), template["on_idle"].as_str()),
        (Some(600), Some("stop"))
    );
    let (status, vm) = daemon.api(
        "POST",
        "/vms?async=true",
        Some(&json!({"template_id": template["id"], "enable_network": false, "on_idle": "none"})),
    );
    assert_eq!(status, 202, "{vm}");
    assert_eq!(
        (vm["ttl_seconds"].as_u64(), vm["on_idle"].as_str()),
        (Some(600), Some("none")),
        "{vm}"
    );
    assert!(vm["expires_at"].is_string(), "{vm}");
    let id = vm["id"].as_str().unwrap();
    daemon.wait_for_vm(id, "running", Duration::from_secs(120), |v| v["state"] == "running");
    assert_eq!(daemon.api("DELETE", &format!("/vms/{id}"), None).0, 204);
}
