//! `GET /metrics` scraped from a real daemon with a real guest (QEMU TCG,
//! `minimal` image) and read with the Prometheus project's own parser
//! (`prometheus_client.parser`, Debian's python3-prometheus-client), as a
//! Prometheus server would read it.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::e2e::{create_ready_vm, Topology};
use common::hatchd::{TestDaemon, TestKey};
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
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
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
    let (_topo, mut daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();

    // Admin keys only by default.
    let anonymous = scrape(&daemon, None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let (status, member) = daemon.api("POST", "/keys", Some(&json!({"name": "viewer"})));
    assert_eq!(status, 201, "{member}");
    let as_member = scrape(&daemon, member["key"].as_str());
    assert_eq!(as_member.status, 403, "{}", as_member.body);

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
    assert!(sent_by_guest > 0.0 && sent_to_guest > 0.0, "{sent_by_guest} {sent_to_guest}");
    // Latency by route template, not by the path with its id.
    assert!(
        running
            .value(
                "hatch_api_request_duration_seconds_count",
                &[("method", "GET"), ("route", "/vms/{id}"), ("status", "200")]
            )
            >= 1.0
    );
    assert!(!running.any_label("route", &format!("/vms/{}", vm.id)));
    assert!(running.value("hatch_api_request_duration_seconds_count", &[("method", "POST"), ("route", "/vms"), ("status", "201")]) >= 1.0);
    assert_eq!(running.value("hatch_snapshots_stored_bytes", &[]), 0.0);

    let (status, snapshot) = daemon.api("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert_eq!(status, 201, "{snapshot}");
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
    assert!(gone
        .value("hatch_api_request_duration_seconds_count", &[("method", "DELETE"), ("route", "/vms/{id}"), ("status", "204")])
        >= 1.0);

    // A scraper on a trusted network: no key needed.
    daemon.restart_with(&[("HATCH_METRICS_PUBLIC", "true")]);
    let public = scrape(&daemon, None);
    assert_eq!(public.status, 200, "{}", public.body);
    let samples = Samples::parse(&public.body);
    assert_eq!(samples.value("hatch_vms", &[("state", "running")]), 0.0);
}
