//! Talking to a real guest's agent through the daemon's API.

use std::time::Duration;

use serde_json::{json, Value};

use super::e2e::{create_ready_vm, VmView};
use super::hatchd::{TestDaemon, TestKey};

/// Waits until the VM's agent is connected and its hello has been handled
/// (the clock set, the VM marked ready: the link shows connected a moment
/// before); answers the VM.
pub fn wait_agent(daemon: &TestDaemon, id: &str) -> Value {
    daemon.wait_for_vm(id, "its agent to connect", Duration::from_secs(240), |vm| {
        vm["agent"]["connected"] == true && vm["ready_at"].is_string()
    })
}

/// A networked VM created ready with `key`'s public key, once its agent is
/// connected (and has told its version); answers it as created and as shown then.
pub fn ready_vm_with_agent(daemon: &TestDaemon, image_id: &str, key: &TestKey) -> (VmView, Value) {
    let vm = create_ready_vm(daemon, image_id, key, json!({}));
    let shown = wait_agent(daemon, &vm.id);
    assert!(
        shown["agent"]["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{shown}"
    );
    (vm, shown)
}

pub fn exec(daemon: &TestDaemon, id: &str, body: Value) -> (u16, Value) {
    daemon.api("POST", &format!("/vms/{id}/exec"), Some(&body))
}

/// Runs `script` with `sh -c` and answers its stdout, asserting exit 0.
pub fn sh(daemon: &TestDaemon, id: &str, script: &str) -> String {
    let (status, answer) = exec(daemon, id, json!({"cmd": ["sh", "-c", script]}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["exit_code"], 0, "{script}: {answer}");
    answer["stdout"].as_str().unwrap_or_default().to_string()
}
