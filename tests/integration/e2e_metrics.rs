//! `GET /metrics` scraped from a real daemon with a real guest (QEMU TCG,
//! `minimal` image) and read with the Prometheus project's own parser
//! (`prometheus_client.parser`, Debian's python3-prometheus-client), as a
//! Prometheus server would read it.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::e2e::{create_ready_vm, Topology};
use common::hatchd::{TestDaemon, TestKey};
use common::proxy::{Client, FakeResolver, Upstream, BASE_DOMAIN};
use hatch::metrics::{Metrics, Sample};
use hatch::proxy::{spawn_proxy, ProxyConfig};
use hyper::StatusCode;
use serde_json::{json, Value};

/// Debian's python3, where apt installs the parser (not a pyenv on PATH).
const PYTHON: &str = "/usr/bin/python3";

/// Every sample as `[name, {labels}, value]`, histogram buckets included.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

struct Scrape {
    status: u16,
    content_type: String,
    body: String,
}

fn scrape(daemon: &TestDaemon, key: Option<&str>) -> Scrape {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "60", "--unix-socket"]);
    command.arg(&daemon.socket);
    command.args(["-o", "-", "-w", "\n%{http_code}\n%{content_type}"]);
    if let Some(key) = key {
        command.args(["-H", &format!("Authorization: Bearer {key}")]);
    }
    let output = command.arg("http://hatch/metrics").output().expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (rest, content_type) = text.rsplit_once('\n').expect("curl -w output");
    let (body, status) = rest.rsplit_once('\n').expect("curl -w output");
    Scrape {
        status: status.trim().parse().unwrap_or(0),
        content_type: content_type.trim().to_string(),
        body: body.to_string(),
    }
}

/// The samples of a scrape, as the Prometheus parser reads them.
struct Samples(Vec<(String, serde_json::Map<String, Value>, f64)>);

impl Samples {
    fn parse(text: &str) -> Samples {
        let mut child = Command::new(PYTHON)
            .args(["-c", PARSE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 (scripts/install-deps installs python3-prometheus-client)");
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "the Prometheus parser refused the scrape: {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        let parsed: Vec<(String, serde_json::Map<String, Value>, f64)> =
            serde_json::from_slice(&output.stdout).expect("parser output");
        Samples(parsed)
    }

    /// The value of the one sample named `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .0
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(v)))
            .map(|(_, _, value)| *value)
            .collect();
        assert!(matching.len() <= 1, "{name} {labels:?} matches {matching:?}");
        matching.first().copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in {:#?}", self.0))
    }

    /// Whether any sample has label `label` equal to `value`.
    fn any_label(&self, label: &str, value: &str) -> bool {
        self.0
            .iter()
            .any(|(_, l, _)| l.get(label).and_then(Value::as_str) == Some(value))
    }
}

fn scrape_ok(daemon: &TestDaemon) -> Samples {
    let scraped = scrape(daemon, Some(&daemon.admin_key()));
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    assert!(
        scraped.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        scraped.content_type
    );
    Samples::parse(&scraped.body)
}

/// Scrapes until `done` holds for the samples (30 s at most).
fn wait_for_sample(daemon: &TestDaemon, what: &str, done: impl Fn(&Samples) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let samples = scrape_ok(daemon);
        if done(&samples) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never showed in {:#?}\n{}",
            samples.0,
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

const STATES: &[&str] = &[
    "creating",
    "starting",
    "running",
    "stopping",
    "stopped",
    "snapshotting",
    "snapshotted",
    "restoring",
    "error",
    "deleting",
];

fn operations(samples: &Samples, operation: &str) -> f64 {
    samples
        .get(
            "hatch_vm_operation_duration_seconds_count",
            &[("operation", operation), ("outcome", "ok")],
        )
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_a_vm_through_create_snapshot_restore_and_delete() {
    let image = common::images::minimal_image().await;
    let fast = [("HATCH_RECONCILE_INTERVAL", "1s"), ("HATCH_IDLE_CHECK_INTERVAL", "1s")];
    let (topo, mut daemon, image_id) = Topology::with_daemon(&image, &fast);
    let key = TestKey::generate();

    // Admin keys only by default.
    let anonymous = scrape(&daemon, None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let (status, member) = daemon.api("POST", "/keys", Some(&json!({"name": "viewer"})));
    assert_eq!(status, 201, "{member}");
    let as_member = scrape(&daemon, member["key"].as_str());
    assert_eq!(as_member.status, 403, "{}", as_member.body);
    // There are no filters; an unknown one is named, not ignored.
    let (status, refused) = daemon.api("GET", "/metrics?vm=vm-1", None);
    assert_eq!(
        (status, refused["error"]["field"].as_str()),
        (400, Some("vm")),
        "{refused}"
    );

    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));
    let (status, _) = daemon.api("GET", &format!("/vms/{}", vm.id), None);
    assert_eq!(status, 200);

    let running = scrape_ok(&daemon);
    for state in STATES {
        let expected = if *state == "running" { 1.0 } else { 0.0 };
        assert_eq!(running.value("hatch_vms", &[("state", state)]), expected, "{state}");
    }
    assert_eq!(operations(&running, "create"), 1.0);
    let vm_label = [("vm", vm.id.as_str())];
    assert!(running.value("hatch_vm_cpu_seconds_total", &vm_label) > 0.0);
    assert!(running.value("hatch_vm_memory_bytes", &vm_label) > 1024.0 * 1024.0);
    // The guest's DHCP exchange went through its TAP both ways.
    let sent_by_guest = running.value(
        "hatch_vm_network_bytes_total",
        &[("vm", vm.id.as_str()), ("direction", "rx")],
    );
    let sent_to_guest = running.value(
        "hatch_vm_network_bytes_total",
        &[("vm", vm.id.as_str()), ("direction", "tx")],
    );
    assert!(
        sent_by_guest > 0.0 && sent_to_guest > 0.0,
        "{sent_by_guest} {sent_to_guest}"
    );
    // Latency by route template, not by the path with its id.
    assert!(
        running.value(
            "hatch_api_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/vms/{id}"), ("status", "200")]
        ) >= 1.0
    );
    assert!(!running.any_label("route", &format!("/vms/{}", vm.id)));
    assert!(
        running.value(
            "hatch_api_request_duration_seconds_count",
            &[("method", "POST"), ("route", "/vms"), ("status", "201")]
        ) >= 1.0
    );
    assert_eq!(running.value("hatch_snapshots_stored_bytes", &[]), 0.0);

    // A routed VM is looked at by the idle monitor (and kept: it is young).
    let (status, route) = daemon.api(
        "POST",
        &format!("/vms/{}/routes", vm.id),
        Some(&json!({"target_port": 80})),
    );
    assert_eq!(status, 201, "{route}");
    wait_for_sample(&daemon, "an idle decision", |s| {
        s.get("hatch_idle_decisions_total", &[("decision", "keep")])
            .unwrap_or(0.0)
            >= 1.0
    });
    // Drift the reconciler repairs is counted.
    topo.on_host("iptables", &["-t", "nat", "-F", "HATCH-PREROUTING"]);
    wait_for_sample(&daemon, "a host repair", |s| {
        s.get("hatch_reconcile_repairs_total", &[("scope", "host")])
            .unwrap_or(0.0)
            >= 1.0
    });

    let (status, snapshot) = daemon.api("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert_eq!(status, 201, "{snapshot}");
    // Stored bytes count once the background pass has stored it.
    let snapshot = daemon.wait_snapshot_durable(&vm.id, snapshot["id"].as_str().unwrap());
    let suspended = scrape_ok(&daemon);
    assert_eq!(suspended.value("hatch_vms", &[("state", "snapshotted")]), 1.0);
    assert_eq!(operations(&suspended, "snapshot"), 1.0);
    let stored = suspended.value("hatch_snapshots_stored_bytes", &[]);
    assert_eq!(stored, snapshot["total_bytes"].as_f64().unwrap(), "{snapshot}");
    assert!(stored > 0.0);
    // No VMM process, so no usage series.
    assert!(!suspended.any_label("vm", &vm.id));

    let (status, restored) = daemon.api("POST", &format!("/vms/{}/restore", vm.id), Some(&json!({})));
    assert_eq!(status, 200, "{restored}");
    let back = scrape_ok(&daemon);
    assert_eq!(back.value("hatch_vms", &[("state", "running")]), 1.0);
    assert_eq!(operations(&back, "restore"), 1.0);
    assert!(back.value("hatch_vm_memory_bytes", &vm_label) > 0.0);

    let (status, body) = daemon.api("DELETE", &format!("/vms/{}", vm.id), None);
    assert_eq!(status, 204, "{body}");
    let gone = scrape_ok(&daemon);
    assert_eq!(operations(&gone, "delete"), 1.0);
    for state in STATES {
        assert_eq!(gone.value("hatch_vms", &[("state", state)]), 0.0, "{state}");
    }
    assert!(!gone.any_label("vm", &vm.id), "series of a deleted VM are left");
    assert!(
        gone.value(
            "hatch_api_request_duration_seconds_count",
            &[("method", "DELETE"), ("route", "/vms/{id}"), ("status", "204")]
        ) >= 1.0
    );

    // A scraper on a trusted network: no key needed.
    daemon.restart_with(&[("HATCH_METRICS_PUBLIC", "true")]);
    let public = scrape(&daemon, None);
    assert_eq!(public.status, 200, "{}", public.body);
    let samples = Samples::parse(&public.body);
    assert_eq!(samples.value("hatch_vms", &[("state", "running")]), 0.0);
}

#[tokio::test]
async fn proxy_requests_bytes_and_latency_are_counted_by_route() {
    let app = Upstream::start("app").await;
    let resolver = FakeResolver::running("app", app.addr);
    let metrics = std::sync::Arc::new(Metrics::new());
    let mut config = ProxyConfig::new(BASE_DOMAIN);
    config.metrics = Some(metrics.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = spawn_proxy(listener, config, resolver).expect("start proxy");
    let mut client = Client::connect(proxy.local_addr()).await;

    for _ in 0..2 {
        let (status, _, body) = client.get("app", "/hello").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello from app"));
    }
    let (status, _, _) = client.get("no-such-route-1", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = client.get("no-such-route-2", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let samples = Samples::parse(&metrics.render(&Sample::default()));
    let app_ok = [("route", "app"), ("status", "200")];
    assert_eq!(
        samples.value("hatch_proxy_request_duration_seconds_count", &app_ok),
        2.0
    );
    assert!(samples.value("hatch_proxy_request_duration_seconds_sum", &app_ok) > 0.0);
    assert_eq!(
        samples.value("hatch_proxy_response_bytes_total", &[("route", "app")]),
        2.0 * "hello from app".len() as f64
    );
    // Hosts that are no route's share one label, whatever clients send.
    assert_eq!(
        samples.value(
            "hatch_proxy_request_duration_seconds_count",
            &[("route", "unmatched"), ("status", "404")]
        ),
        2.0
    );
    assert!(!samples.any_label("route", "no-such-route-1"));
    proxy.shutdown(std::time::Duration::from_secs(5)).await;
}
