//! The subdomain proxy and idle management end to end (QEMU TCG, `minimal`
//! image, busybox httpd in the guest): requests reach the guest by Host
//! header, an idle routed VM is snapshotted, a VM with an SSH session open
//! through its port is not, and requests wake a snapshotted VM with exactly
//! one restore and no 5xx.

use crate::common;

use std::time::{Duration, Instant};

use common::e2e::{create_ready_vm, Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::json;

const HTTPD: &str =
    "mkdir -p /www && echo \"hello from $(hostname)\" > /www/index.html && busybox httpd -p 8080 -h /www";

/// `curl` through the proxy (on the host's loopback) with a Host header.
fn through_proxy(topo: &Topology, subdomain: &str) -> (u16, String) {
    curl_through_proxy(topo, subdomain, &[])
}

/// Like [`through_proxy`] with more curl arguments (e.g. `-d` for a POST).
fn curl_through_proxy(topo: &Topology, subdomain: &str, extra: &[&str]) -> (u16, String) {
    let host = format!("Host: {subdomain}.localhost");
    let mut args = vec!["-sS", "--max-time", "120", "-H", &host, "-w", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push("http://127.0.0.1:9090/");
    let out = topo.on_host("curl", &args);
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

fn web_vm(daemon: &TestDaemon, topo: &Topology, image_id: &str, key: &TestKey) -> VmView {
    let vm = create_ready_vm(daemon, image_id, key, json!({}));
    topo.ssh(key, "root", vm.ssh_port, HTTPD);
    vm
}

/// A route makes the VM a candidate for the idle monitor.
fn add_route(daemon: &TestDaemon, vm: &VmView, subdomain: &str) {
    let (status, route) = daemon.api(
        "POST",
        &format!("/vms/{}/routes", vm.id),
        Some(&json!({"subdomain": subdomain, "target_port": 8080})),
    );
    assert_eq!(status, 201, "{route}");
}

/// Whether the guest agent set the clock since the VM's last restore.
fn clock_set_since_last_restore(daemon: &TestDaemon, vm: &VmView) -> bool {
    let (_, events) = daemon.api("GET", &format!("/vms/{}/events", vm.id), None);
    let events = events.as_array().unwrap();
    let Some(restored) = events
        .iter()
        .rposition(|e| e["kind"] == "state" && e["to_state"] == "restoring")
    else {
        return false;
    };
    events[restored..]
        .iter()
        .any(|e| e["kind"] == "agent" && e["reason"].as_str().is_some_and(|r| r.contains("clock set")))
}

fn restores(daemon: &TestDaemon, vm: &VmView) -> usize {
    let (_, events) = daemon.api("GET", &format!("/vms/{}/events", vm.id), None);
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state" && e["to_state"] == "restoring")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_vms_sleep_ssh_keeps_them_awake_and_requests_wake_them_once() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(
        &image,
        &[("HATCH_IDLE_TIMEOUT", "8s"), ("HATCH_IDLE_CHECK_INTERVAL", "1s")],
    );
    let key = TestKey::generate();

    let web = web_vm(&daemon, &topo, &image_id, &key);
    let shell = web_vm(&daemon, &topo, &image_id, &key);

    // An SSH session held open through the forwarded port keeps `shell` awake.
    let session = topo.hold_ssh_session(&key, shell.ssh_port);
    add_route(&daemon, &web, "web");
    add_route(&daemon, &shell, "shell");
    let listed = daemon.cli_json(&["route", "list", &web.id]);
    assert_eq!(listed[0]["subdomain"], "web", "{listed}");
    assert_eq!(through_proxy(&topo, "web"), (200, format!("hello from {}\n", web.id)));
    assert_eq!(through_proxy(&topo, "nope").0, 404);
    let (status, error) = daemon.api(
        "POST",
        &format!("/vms/{}/routes", web.id),
        Some(&json!({"subdomain": "web", "target_port": 80})),
    );
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (409, Some("subdomain")),
        "{error}"
    );
    let (status, _) = daemon.api(
        "POST",
        &format!("/vms/{}/routes", web.id),
        Some(&json!({"subdomain": "admin", "target_port": 80})),
    );
    assert_eq!(status, 400);

    // `web` gets no traffic: it is snapshotted once idle.
    let slept = daemon.wait_for_vm(
        &web.id,
        "snapshotted by the idle monitor",
        Duration::from_secs(120),
        |v| v["state"] == "snapshotted",
    );
    assert!(
        slept["idle_status"]
            .as_str()
            .is_some_and(|s| s.starts_with("suspended")),
        "{slept}"
    );
    let (_, kept) = daemon.api("GET", &format!("/vms/{}", shell.id), None);
    assert_eq!(
        kept["state"], "running",
        "a VM with an SSH session was suspended: {kept}"
    );
    assert!(
        kept["idle_status"].as_str().is_some_and(|s| s.contains("SSH")),
        "{kept}"
    );

    // 20 concurrent requests to the sleeping VM: one restore, every answer right.
    let before = restores(&daemon, &web);
    let started = Instant::now();
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20).map(|_| scope.spawn(|| through_proxy(&topo, "web"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("woke {} in {:?}", web.id, started.elapsed());
    for answer in &answers {
        assert_eq!(
            answer,
            &(200, format!("hello from {}\n", web.id)),
            "a request during the wake failed"
        );
    }
    assert_eq!(
        restores(&daemon, &web) - before,
        1,
        "exactly one restore for 20 requests"
    );
    // The agent's hello and the clock, held until the first answer, follow.
    assert!(
        common::netns::wait_for(Duration::from_secs(20), || clock_set_since_last_restore(&daemon, &web)
            .then_some(()))
        .is_some(),
        "the woken guest's agent never set its clock"
    );

    drop(session);
    for vm in [&web, &shell] {
        assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
        topo.assert_nothing_left(&daemon, vm);
    }
    assert_eq!(through_proxy(&topo, "web").0, 404, "the route went with its VM");
}

/// Boot-time user-data: the guest's keep-alive HTTP + WebSocket echo
/// service (a busybox shell script, one process per connection) on 8081.
fn echo_server_user_data() -> String {
    let script = include_str!("assets/guest-echo-server.sh");
    format!(
        "#!/bin/sh\nmkdir -p /srv\ncat > /srv/echo.sh <<'SCRIPT'\n{script}SCRIPT\nchmod 755 /srv/echo.sh\nexec nc -ll -p 8081 -e /srv/echo.sh\n"
    )
}

/// Opens a WebSocket to `subdomain` through the proxy (run inside the Hatch
/// host's namespace), sends three text messages and returns the echoes.
async fn websocket_echo(subdomain: &str) -> Vec<String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let request = format!("ws://{subdomain}.localhost:9090/")
        .into_client_request()
        .expect("request");
    let stream = tokio::net::TcpStream::connect("127.0.0.1:9090")
        .await
        .expect("connect to the proxy");
    let (mut socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    let mut echoes = Vec::new();
    for text in ["first", "second message", "ünïcödé third"] {
        socket.send(Message::text(text)).await.expect("send");
        let answer = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("an echo in time");
        echoes.push(
            answer
                .expect("an echo")
                .expect("a frame")
                .into_text()
                .expect("text")
                .to_string(),
        );
    }
    socket.close(None).await.expect("close");
    echoes
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_websocket_echoes_and_kept_alive_connections_survive_a_snapshot() {
    let image = common::images::minimal_image().await;
    let topo = Topology::new();
    let daemon = TestDaemon::start(topo.host_ns(), &[]);
    let image_id = topo.register_image(&daemon, &image);
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({"user_data": echo_server_user_data()}));
    let (status, route) = daemon.api(
        "POST",
        &format!("/vms/{}/routes", vm.id),
        Some(&json!({"subdomain": "echo", "target_port": 8081})),
    );
    assert_eq!(status, 201, "{route}");
    // User-data starts the service in the background after SSH is up.
    topo.ssh(
        &key,
        "root",
        vm.ssh_port,
        "until netstat -ltn | grep -q ':8081 '; do sleep 0.2; done",
    );

    let sent = vec!["first", "second message", "ünïcödé third"];
    assert_eq!(topo.host().block_on(|| websocket_echo("echo")), sent);

    // Two requests from two clients share one kept-alive connection to the guest.
    let (status, first) = through_proxy(&topo, "echo");
    assert_eq!(status, 200, "{first}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        through_proxy(&topo, "echo"),
        (200, first.clone()),
        "the proxy did not keep its guest connection"
    );

    // Snapshot, then a request wakes the VM: a 200 on a fresh connection,
    // not a 502 from the pooled one that went to sleep with the guest. A
    // POST, because the proxy never sends one twice: only dropping pooled
    // connections when the VM stops serving gets it through.
    let (status, snapshot) = daemon.api("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert_eq!(status, 201, "{snapshot}");
    let (status, after) = curl_through_proxy(&topo, "echo", &["-d", "order=1"]);
    assert_eq!(status, 200, "{after}\n{}", daemon.log());
    assert!(after.starts_with("connection "), "{after}");
    assert_ne!(after, first, "a connection from before the snapshot was reused");
    let (_, woken) = daemon.api("GET", &format!("/vms/{}", vm.id), None);
    assert_eq!(woken["state"], "running", "{woken}");
    assert_eq!(topo.host().block_on(|| websocket_echo("echo")), sent);

    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
    topo.assert_nothing_left(&daemon, &vm);
}
