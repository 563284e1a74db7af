//! Live events with a real daemon and a real guest (QEMU TCG, `minimal`
//! image, one boot): followers of `GET /events` started before the VM
//! exists see its whole life in order (create, readiness, snapshot,
//! restore, delete) as it happens; a reconnect with `Last-Event-ID` (or
//! `?since=`) gets exactly the events after its cursor; a member's stream
//! shows only its own VMs; `hatch events -f` prints events as they happen.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::e2e::Topology;
use common::hatchd::{TestDaemon, TestKey};
use serde_json::{json, Value};

/// A process whose stdout lines are collected as they arrive.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn spawn(mut command: Command) -> Follower {
        let mut child = command.stdout(Stdio::piped()).spawn().expect("follower");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Follower { child, lines }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until the collected output satisfies `done`.
    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.text()) {
            assert!(Instant::now() < deadline, "never saw {what}; got:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl -N` on the stream, as a browser's EventSource would read it.
fn sse_follower(daemon: &TestDaemon, key: &str, path: &str) -> Follower {
    let mut command = Command::new("curl");
    command.args([
        "-sN",
        "--unix-socket",
        &daemon.socket.display().to_string(),
        "-H",
        &format!("Authorization: Bearer {key}"),
        &format!("http://hatch{path}"),
    ]);
    Follower::spawn(command)
}

/// One SSE message: (id, event, data).
fn messages(text: &str) -> Vec<(i64, String, Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_string()))
        };
        let (Some(id), Some(event), Some(data)) = (field("id:"), field("event:"), field("data:")) else {
            continue;
        };
        out.push((
            id.parse().expect("numeric id"),
            event,
            serde_json::from_str(&data).expect("JSON data"),
        ));
    }
    out
}

fn is_deletion(data: &Value, vm_id: &str) -> bool {
    data["vm_id"] == vm_id && data["kind"] == "state" && data["to_state"].is_null()
}

/// The stream read to its end (`follow=false`), with extra headers.
fn read_all(daemon: &TestDaemon, key: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let mut args = vec![
        "-sS".to_string(),
        "--max-time".into(),
        "60".into(),
        "--unix-socket".into(),
        daemon.socket.display().to_string(),
        "-H".into(),
        format!("Authorization: Bearer {key}"),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    for header in headers {
        args.extend(["-H".to_string(), header.to_string()]);
    }
    args.push(format!("http://hatch{path}"));
    let output = Command::new("curl").args(&args).output().expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

fn member(daemon: &TestDaemon, name: &str) -> String {
    let (status, key) = daemon.api("POST", "/keys", Some(&json!({ "name": name, "role": "member" })));
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn followers_see_a_vms_life_live_in_order_and_resume_after_their_cursor() {
    let image = common::images::minimal_image().await;
    let (_topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let admin = daemon.admin_key();
    let owner = member(&daemon, "owner");
    let other = member(&daemon, "other");

    // Every follower starts before the VM exists.
    let all = sse_follower(&daemon, &admin, "/events");
    let owners = sse_follower(&daemon, &owner, "/events");
    let others = sse_follower(&daemon, &other, "/events");
    let mut cli = Command::new(env!("CARGO_BIN_EXE_hatch"));
    cli.args(["events", "-f"])
        .env("HATCH_URL", format!("unix:{}", daemon.socket.display()))
        .env("HATCH_API_KEY", &admin);
    let cli = Follower::spawn(cli);
    std::thread::sleep(Duration::from_millis(500));

    // The owner (a member) creates the VM and waits for it to be ready.
    let body = json!({ "image_id": image_id, "ssh_authorized_keys": [key.public] });
    let (status, vm) = daemon.request_with_key("POST", "/vms?wait=ready&timeout=180", Some(&body), Some(&owner));
    assert_eq!(status, 201, "{vm}\n{}", daemon.log());
    let id = vm["id"].as_str().unwrap().to_string();

    // `hatch events -f` printed the boot as it happened, before anything else was asked.
    cli.wait_for(
        "the VM's ready line from hatch events -f",
        Duration::from_secs(10),
        |text| text.lines().any(|l| l.contains(&id) && l.contains(" ready ")),
    );
    assert!(
        cli.text()
            .lines()
            .any(|l| l.contains(&id) && l.contains(" state creating→running")),
        "{}",
        cli.text()
    );

    // Someone else's VM does not exist for another member; bad filters name their field.
    let (status, body) = daemon.request_with_key("GET", &format!("/events?vm={id}"), None, Some(&other));
    assert_eq!(status, 404, "{body}");
    for (path, field) in [
        ("/events?since=abc", "since"),
        ("/events?since=-1", "since"),
        ("/events?follow=maybe", "follow"),
        ("/events?colour=red", "colour"),
    ] {
        let (status, body) = daemon.api("GET", path, None);
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (400, Some(field)),
            "{path}: {body}"
        );
    }
    let (status, body) = daemon.api_with_headers("GET", "/events", None, &["Last-Event-ID: x"]);
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("Last-Event-ID")),
        "{body}"
    );

    // Snapshot, restore, delete.
    let (status, snap) = daemon.api("POST", &format!("/vms/{id}/snapshot"), None);
    assert_eq!(status, 201, "{snap}");
    let (status, restored) = daemon.api("POST", &format!("/vms/{id}/restore"), None);
    assert_eq!(
        (status, restored["state"].as_str()),
        (200, Some("running")),
        "{restored}"
    );
    assert_eq!(daemon.api("DELETE", &format!("/vms/{id}"), None).0, 204);

    all.wait_for("the VM's deletion", Duration::from_secs(10), |text| {
        messages(text).iter().any(|(_, _, d)| is_deletion(d, &id))
    });
    let seen = messages(&all.text());
    let ids: Vec<i64> = seen.iter().map(|(i, _, _)| *i).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids must increase: {ids:?}");
    for (_, event, data) in &seen {
        assert_eq!(Some(event.as_str()), data["kind"].as_str(), "event: is the kind");
    }
    // The VM's life, in order (other events may come between).
    let expected: &[(&str, Value)] = &[
        ("state", json!("creating")),
        ("state", json!("running")),
        ("ready", json!("running")),
        ("state", json!("snapshotting")),
        ("state", json!("snapshotted")),
        ("state", json!("restoring")),
        ("state", json!("running")),
        ("state", json!("deleting")),
        ("state", Value::Null),
    ];
    let mine: Vec<&(i64, String, Value)> = seen.iter().filter(|(_, _, d)| d["vm_id"] == id.as_str()).collect();
    let mut next = 0;
    for (_, event, data) in &mine {
        if next < expected.len() && event == expected[next].0 && data["to_state"] == expected[next].1 {
            next += 1;
        }
    }
    assert_eq!(next, expected.len(), "the VM's events, in order: {mine:#?}");
    let deleted_at = seen.iter().find(|(_, _, d)| is_deletion(d, &id)).unwrap().0;

    // Reconnecting after the snapshot gets exactly what came after it.
    let cursor = mine
        .iter()
        .find(|(_, e, d)| e == "state" && d["to_state"] == "snapshotted")
        .unwrap()
        .0;
    let after: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|i| *i > cursor && *i <= deleted_at)
        .collect();
    let header = format!("Last-Event-ID: {cursor}");
    let (status, resumed) = read_all(&daemon, &admin, "/events?follow=false", &[&header]);
    assert_eq!(status, 200, "{resumed}");
    let resumed: Vec<i64> = messages(&resumed)
        .iter()
        .map(|m| m.0)
        .filter(|i| *i <= deleted_at)
        .collect();
    assert_eq!(resumed, after);
    let (_, since) = read_all(&daemon, &admin, &format!("/events?follow=false&since={cursor}"), &[]);
    let since: Vec<i64> = messages(&since)
        .iter()
        .map(|m| m.0)
        .filter(|i| *i <= deleted_at)
        .collect();
    assert_eq!(since, after);
    // `since=now`: nothing of what is recorded, only what comes next.
    let (status, from_now) = read_all(&daemon, &admin, "/events?follow=false&since=now", &[]);
    assert_eq!(status, 200, "{from_now}");
    assert!(messages(&from_now).iter().all(|m| m.0 > deleted_at), "{from_now}");

    // The owner saw its VM's whole life (and no host-wide events); the
    // other member saw nothing of it.
    owners.wait_for("the deletion on the owner's stream", Duration::from_secs(10), |text| {
        messages(text).iter().any(|(_, _, d)| is_deletion(d, &id))
    });
    let owner_seen = messages(&owners.text());
    assert!(
        owner_seen.iter().all(|(_, _, d)| d["vm_id"] == id.as_str()),
        "{owner_seen:#?}"
    );
    assert_eq!(owner_seen.len(), mine.len());
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !others.text().contains(&id),
        "another member's stream shows the VM: {}",
        others.text()
    );
    // The owner's replay of one VM ends with its deletion.
    let (status, replay) = read_all(&daemon, &owner, "/events?follow=false&since=0", &[]);
    assert_eq!(status, 200);
    assert_eq!(messages(&replay).len(), mine.len());
}
