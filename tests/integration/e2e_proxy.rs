//! The subdomain proxy and idle management end to end (QEMU TCG, `minimal`
//! image, busybox httpd in the guest): requests reach the guest by Host
//! header, an idle routed VM is snapshotted, a VM with an SSH session open
//! through its port is not, and requests wake a snapshotted VM with exactly
//! one restore and no 5xx.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::e2e::{create_ready_vm, Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::json;

const HTTPD: &str = "mkdir -p /www && echo \"hello from $(hostname)\" > /www/index.html && busybox httpd -p 8080 -h /www";

/// `curl` through the proxy (on the host's loopback) with a Host header.
fn through_proxy(topo: &Topology, subdomain: &str) -> (u16, String) {
    let out = topo.on_host(
        "curl",
        &["-sS", "--max-time", "120", "-H", &format!("Host: {subdomain}.localhost"), "-w", "\n%{http_code}", "http://127.0.0.1:9090/"],
    );
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

fn restores(daemon: &TestDaemon, vm: &VmView) -> usize {
    let (_, events) = daemon.api("GET", &format!("/vms/{}/events", vm.id), None);
    events.as_array().unwrap().iter().filter(|e| e["to_state"] == "restoring").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_vms_sleep_ssh_keeps_them_awake_and_requests_wake_them_once() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[("HATCH_IDLE_TIMEOUT", "8s"), ("HATCH_IDLE_CHECK_INTERVAL", "1s")]);
    let key = TestKey::generate();

    let web = web_vm(&daemon, &topo, &image_id, &key);
    let shell = web_vm(&daemon, &topo, &image_id, &key);

    // An SSH session held open through the forwarded port keeps `shell` awake.
    let mut session: Child = Command::new("ip")
        .args(["netns", "exec", topo.client_ns(), "ssh"])
        .args(key.ssh_args("root", topo.host_addr(), shell.ssh_port))
        .arg("echo connected; sleep 600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ssh session");
    let mut first_line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(session.stdout.as_mut().unwrap()), &mut first_line).unwrap();
    assert_eq!(first_line.trim(), "connected");
    add_route(&daemon, &web, "web");
    add_route(&daemon, &shell, "shell");
    let listed = daemon.cli_json(&["route", "list", &web.id]);
    assert_eq!(listed[0]["subdomain"], "web", "{listed}");
    assert_eq!(through_proxy(&topo, "web"), (200, format!("hello from {}\n", web.id)));
    assert_eq!(through_proxy(&topo, "nope").0, 404);
    let (status, error) = daemon.api("POST", &format!("/vms/{}/routes", web.id), Some(&json!({"subdomain": "web", "target_port": 80})));
    assert_eq!((status, error["error"]["field"].as_str()), (409, Some("subdomain")), "{error}");
    let (status, _) = daemon.api("POST", &format!("/vms/{}/routes", web.id), Some(&json!({"subdomain": "admin", "target_port": 80})));
    assert_eq!(status, 400);

    // `web` gets no traffic: it is snapshotted once idle.
    let slept = daemon.wait_for_vm(&web.id, "snapshotted by the idle monitor", Duration::from_secs(120), |v| v["state"] == "snapshotted");
    assert!(slept["idle_status"].as_str().is_some_and(|s| s.starts_with("suspended")), "{slept}");
    let (_, kept) = daemon.api("GET", &format!("/vms/{}", shell.id), None);
    assert_eq!(kept["state"], "running", "a VM with an SSH session was suspended: {kept}");
    assert!(kept["idle_status"].as_str().is_some_and(|s| s.contains("SSH")), "{kept}");

    // 20 concurrent requests to the sleeping VM: one restore, every answer right.
    let before = restores(&daemon, &web);
    let started = Instant::now();
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20).map(|_| scope.spawn(|| through_proxy(&topo, "web"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("woke {} in {:?}", web.id, started.elapsed());
    for answer in &answers {
        assert_eq!(answer, &(200, format!("hello from {}\n", web.id)), "a request during the wake failed");
    }
    assert_eq!(restores(&daemon, &web) - before, 1, "exactly one restore for 20 requests");

    let _ = session.kill();
    let _ = session.wait();
    for vm in [&web, &shell] {
        assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
        topo.assert_nothing_left(&daemon, vm);
    }
    assert_eq!(through_proxy(&topo, "web").0, 404, "the route went with its VM");
}
