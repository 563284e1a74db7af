//! `/vms/{id}/exec`, `/vms/{id}/files` and `/vms/{id}/fork` without a guest agent: bad input
//! answers 400 naming the field before the agent is asked, a VM whose
//! agent never connected answers 409 agent_unavailable, one that is not
//! running 409 invalid_state, an unknown VM 404, and a plain GET of the
//! WebSocket route a JSON 400.

use crate::common;

use common::daemon::{error_parts, TestApi};
use hatch::model::VmState;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn bad_exec_requests_name_their_field() {
    let api = TestApi::start().await;
    let vm = api.vm_without_agent(VmState::Running, 1);
    let exec = format!("/vms/{vm}/exec");
    for (body, field) in [
        (json!({}), "cmd"),
        (json!({"cmd": []}), "cmd"),
        (json!({"cmd": "uname -a"}), "cmd"),
        (json!({"cmd": [1, 2]}), "cmd[0]"),
        (json!({"cmd": [""]}), "cmd"),
        (json!({"cmd": ["true"], "timeout_s": 0}), "timeout_s"),
        (json!({"cmd": ["true"], "timeout_s": -5}), "timeout_s"),
        (json!({"cmd": ["true"], "timeout_s": 3601}), "timeout_s"),
        (json!({"cmd": ["env"], "env": {"A=B": "c"}}), "env"),
        (json!({"cmd": ["env"], "env": {"A\u{0}": "c"}}), "env"),
        (json!({"cmd": ["pwd"], "cwd": "tmp"}), "cwd"),
        (json!({"cmd": ["id"], "user": "root;reboot"}), "user"),
        (
            json!({"cmd": ["cat"], "stdin": "a", "stdin_base64": "YQ=="}),
            "stdin_base64",
        ),
        (json!({"cmd": ["true"], "shell": true}), "shell"),
    ] {
        let (status, answer) = api.call("POST", &exec, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(error_parts(&answer).1.as_deref(), Some(field), "{body}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_file_requests_name_their_field() {
    let api = TestApi::start().await;
    let vm = api.vm_without_agent(VmState::Running, 1);
    // (method, query, the field the answer names)
    #[rustfmt::skip]
    let cases = [
        ("GET", "", "path"), ("GET", "?path=etc/hostname", "path"), ("GET", "?path=/tmp/a%00b", "path"),
        ("GET", "?path=/tmp/../etc/shadow", "path"), ("GET", "?path=/etc/hostname&mode=0644", "mode"),
        ("GET", "?path=/etc&list=maybe", "list"), ("GET", "?path=/etc&recursive=true", "recursive"),
        ("PUT", "?path=relative", "path"), ("PUT", "?path=/tmp/x&mode=999", "mode"),
        ("PUT", "?path=/tmp/x&uid=-1", "uid"), ("PUT", "?path=/tmp/x&list=true", "list"),
        ("DELETE", "?path=", "path"),
    ];
    for (method, query, field) in cases {
        let path = format!("/vms/{vm}/files{query}");
        let (status, answer) = api
            .raw(method, &path, "application/octet-stream", b"data".to_vec())
            .await;
        assert_eq!(status, 400, "{method} {path}: {answer}");
        assert_eq!(
            error_parts(&answer).1.as_deref(),
            Some(field),
            "{method} {path}: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_without_an_agent_answers_agent_unavailable() {
    let api = TestApi::start().await;
    let running = api.vm_without_agent(VmState::Running, 1);
    let stopped = api.vm_without_agent(VmState::Stopped, 2);
    let requests = |vm: &str| {
        [
            ("POST", format!("/vms/{vm}/exec"), br#"{"cmd": ["true"]}"#.to_vec()),
            ("PUT", format!("/vms/{vm}/files?path=/tmp/x"), b"data".to_vec()),
            ("GET", format!("/vms/{vm}/files?path=/etc/hostname"), vec![]),
            ("GET", format!("/vms/{vm}/files?path=/etc&list=true"), vec![]),
            ("DELETE", format!("/vms/{vm}/files?path=/tmp/x"), vec![]),
            // A fork's clones take their identity through the agent.
            ("POST", format!("/vms/{vm}/fork"), br#"{"count": 2}"#.to_vec()),
        ]
    };
    for (vm, status, code) in [
        (running.as_str(), 409, "agent_unavailable"),
        (stopped.as_str(), 409, "invalid_state"),
        ("vm-nope", 404, "not_found"),
    ] {
        for (method, path, body) in requests(vm) {
            let (got, answer) = api.raw(method, &path, "application/json", body).await;
            assert_eq!(
                (got, error_parts(&answer).0.as_str()),
                (status, code),
                "{method} {path}"
            );
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                code != "agent_unavailable" || message.contains("hatch-agent"),
                "{method} {path}: {message}"
            );
        }
    }
    // The WebSocket route asked without an upgrade: a JSON error naming it.
    let (status, answer) = api.call("GET", &format!("/vms/{running}/exec"), None).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(error_parts(&answer).1.as_deref(), Some("Upgrade"), "{answer}");
    // Nothing changed: the VM still runs.
    let (_, shown) = api.call("GET", &format!("/vms/{running}"), None).await;
    assert_eq!(shown["state"], "running", "{shown}");
}
