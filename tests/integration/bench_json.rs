//! `hatch-bench --json` answers every row of issues #13's and #15's tables: a value for
//! the rows it ran, `null` with a reason under `skipped` for the others.
//! Runs the cheapest row once; no timing is asserted.

use std::process::Command;

const KEYS: [&str; 12] = [
    "snapshot_ratio",
    "restore_ratio",
    "wake_first_byte_ratio",
    "create_ssh_ratio_minimal",
    "create_ssh_ratio_debian",
    "proxy_rps_ratio",
    "proxy_p99_ratio",
    "api_list_p99_ms",
    "disk_snapshot_ratio",
    "disk_restore_ratio",
    "fork_ready_ratio",
    "pool_ready_ratio",
];

fn bench_namespaces() -> Vec<String> {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with("hatch-b-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn json_names_every_row_with_a_value_or_a_reason() {
    let work = tempfile::tempdir().expect("work dir");
    let before = bench_namespaces();
    let output = Command::new(env!("CARGO_BIN_EXE_hatch-bench"))
        .args(["--rounds", "1", "--only", "api_list", "--json", "--work-dir"])
        .arg(work.path())
        .output()
        .expect("running hatch-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "hatch-bench failed:\n{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    });

    let p99 = &json["api_list_p99_ms"];
    assert!(
        p99.as_f64().is_some_and(|ms| ms > 0.0),
        "api_list_p99_ms: {p99}\n{stderr}"
    );
    let skipped = &json["skipped"];
    assert!(skipped.get("api_list_p99_ms").is_none(), "{skipped}");
    for key in KEYS.iter().filter(|k| **k != "api_list_p99_ms") {
        assert!(
            json.get(key).is_some_and(|v| v.is_null()),
            "{key} should be null: {json}"
        );
        let reason = skipped[key].as_str().unwrap_or_default();
        assert!(reason.contains("--only"), "{key}'s reason: {reason:?}");
    }
    // The human-readable table went to stderr.
    assert!(stderr.contains("GET /vms p99"), "{stderr}");

    // Its network namespace is gone, and so is everything in the work dir.
    let left: Vec<_> = bench_namespaces().into_iter().filter(|n| !before.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let files: Vec<_> = std::fs::read_dir(work.path())
        .expect("work dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(files.is_empty(), "left in the work dir: {files:?}");
}
