//! `hatch vm fork` and `hatch vm create --snapshot` against a real daemon
//! and a real guest (QEMU TCG, `minimal` image with `hatch-agent`): the new
//! VMs are printed as `hatch vm create` prints one, each with its own id
//! and IP, running, named after itself, with the parent's file and process;
//! bad input is refused naming the field and leaves no VM.

use crate::common;

use std::collections::BTreeMap;
use std::process::Output;

use common::e2e::{create_ready_vm, GuestState, Topology};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::{json, Value};

use crate::common::agent::wait_agent;
use crate::e2e_cli_exec::command;

fn hatch(daemon: &TestDaemon, args: &[&str]) -> Output {
    command(daemon, args).output().expect("run hatch")
}

/// stdout of a `hatch` run that must succeed.
fn hatch_ok(daemon: &TestDaemon, args: &[&str]) -> String {
    let output = hatch(daemon, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "hatch {args:?}: {stderr}\n{}", daemon.log());
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A `hatch` run that must fail with the API's 400 naming `field`.
fn assert_refused(daemon: &TestDaemon, args: &[&str], field: &str) {
    let output = hatch(daemon, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "hatch {args:?}: {stderr}");
    assert!(
        stderr.contains("400") && stderr.contains(field),
        "hatch {args:?} does not name {field}: {stderr}"
    );
}

/// The VMs `hatch vm show`/`create`/`fork` printed: blocks of `key  value`
/// lines separated by blank lines.
fn printed_vms(stdout: &str) -> Vec<BTreeMap<String, String>> {
    stdout
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            block
                .lines()
                .filter_map(|line| line.split_once(' '))
                .map(|(key, value)| (key.to_string(), value.trim().to_string()))
                .collect()
        })
        .collect()
}

fn vm_ids(daemon: &TestDaemon) -> Vec<String> {
    let (status, vms) = daemon.api("GET", "/vms", None);
    assert_eq!(status, 200, "{vms}");
    let mut ids: Vec<String> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// What each new VM must be: running as `hatch vm show` says, named after
/// itself, reachable on its own SSH port with the parent's file and process.
fn assert_new_guest(daemon: &TestDaemon, topo: &Topology, key: &TestKey, state: &GuestState, id: &str) {
    let shown = printed_vms(&hatch_ok(daemon, &["vm", "show", id]));
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0].get("state").map(String::as_str), Some("running"), "{shown:?}");
    assert_eq!(hatch_ok(daemon, &["vm", "exec", id, "--", "hostname"]).trim(), id);
    let port: u16 = shown[0]["ssh_port"].parse().expect("an SSH port");
    state.assert_survived(topo, key, port);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_forks_a_running_vm_and_creates_one_from_a_snapshot() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let parent = create_ready_vm(&daemon, &image_id, &key, json!({}));
    wait_agent(&daemon, &parent.id);
    let state = GuestState::leave(&topo, &key, parent.ssh_port, "before-the-fork");

    // Bad counts: refused naming count, nothing made.
    let before = vm_ids(&daemon);
    for count in ["0", "17"] {
        assert_refused(&daemon, &["vm", "fork", &parent.id, "-n", count], "count");
    }
    assert_eq!(vm_ids(&daemon), before, "a refused fork left a VM");

    // Two new VMs, each printed as `hatch vm create` prints one.
    let output = hatch(&daemon, &["vm", "fork", &parent.id, "-n", "2"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}\n{}", daemon.log());
    let children = printed_vms(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(children.len(), 2, "{children:?}");
    let mut ids = vec![parent.id.clone()];
    let mut ips = vec![parent.guest_ip.clone()];
    for child in &children {
        assert!(stderr.contains(&format!("created {} (", child["id"])), "{stderr}");
        ids.push(child["id"].clone());
        ips.push(child["guest_ip"].clone());
    }
    for child in &children {
        assert_new_guest(&daemon, &topo, &key, &state, &child["id"]);
    }
    let shown = printed_vms(&hatch_ok(&daemon, &["vm", "show", &parent.id]));
    assert_eq!(shown[0]["state"], "running", "the parent goes on");

    // One VM from a snapshot of the parent (--json: the VM object).
    let snapshot = daemon.cli_json(&["snapshot", "create", &parent.id]);
    let snapshot_id = snapshot["id"].as_str().expect("a snapshot id");
    let before = vm_ids(&daemon);
    assert_refused(
        &daemon,
        &["vm", "create", "--snapshot", snapshot_id, "--mem", "256"],
        "mem_mib",
    );
    assert_eq!(vm_ids(&daemon), before, "a refused create left a VM");
    let clone: Value = daemon.cli_json(&["vm", "create", "--snapshot", snapshot_id, "--ttl", "1h"]);
    assert_eq!(clone["ttl_seconds"], 3600, "{clone}");
    let clone_id = clone["id"].as_str().expect("an id").to_string();
    ids.push(clone_id.clone());
    ips.push(clone["guest_ip"].as_str().expect("an IP").to_string());
    assert_new_guest(&daemon, &topo, &key, &state, &clone_id);

    for (what, mut values) in [("ids", ids), ("IPs", ips)] {
        let all = values.len();
        values.sort();
        values.dedup();
        assert_eq!(values.len(), all, "{what} are not distinct: {values:?}");
    }
}
