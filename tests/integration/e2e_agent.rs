//! The guest agent end to end (QEMU TCG, real guests with `hatch-agent`
//! started by their image): exec and files through the API, with and
//! without networking; readiness and the VM's `agent` field; after a
//! snapshot and restore the agent answers again, a process started before
//! is still there and the guest clock is the host's again; bad input is
//! refused naming the field and runs nothing.

use crate::common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::agent::{exec, ready_vm_with_agent, sh, wait_agent};
use common::e2e::{create_ready_vm, Topology};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `curl` on the daemon's socket for the files API; answers status and body bytes.
fn files_call(
    daemon: &TestDaemon,
    method: &str,
    id: &str,
    query: &str,
    upload: Option<&std::path::Path>,
) -> (u16, Vec<u8>, String) {
    let headers = tempfile::NamedTempFile::new().unwrap();
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "600", "--unix-socket"])
        .arg(&daemon.socket)
        .args(["-X", method, "-H"])
        .arg(format!("Authorization: Bearer {}", daemon.admin_key()))
        .arg("-D")
        .arg(headers.path())
        .args(["-o", "-", "-w", "\n%{http_code}"]);
    if let Some(file) = upload {
        curl.arg("--data-binary").arg(format!("@{}", file.display()));
        curl.args(["-H", "Content-Type: application/octet-stream"]);
    }
    curl.arg(format!("http://hatch/vms/{id}/files?{query}"));
    let output = curl.output().expect("curl");
    let mut body = output.stdout;
    let split = body.iter().rposition(|b| *b == b'\n').expect("status line");
    let status: u16 = String::from_utf8_lossy(&body[split + 1..]).trim().parse().unwrap_or(0);
    body.truncate(split);
    (
        status,
        body,
        std::fs::read_to_string(headers.path()).unwrap_or_default(),
    )
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_commands_with_and_without_networking() {
    let image = common::images::minimal_image().await;
    let (_topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let (vm, shown) = ready_vm_with_agent(&daemon, &image_id, &key);
    assert!(shown["ready_at"].is_string(), "{shown}");

    // Exit codes and the two streams, kept apart.
    let (status, answer) = exec(
        &daemon,
        &vm.id,
        json!({"cmd": ["sh", "-c", "echo out; echo err >&2; exit 3"]}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (
            answer["exit_code"].clone(),
            answer["stdout"].clone(),
            answer["stderr"].clone()
        ),
        (json!(3), json!("out\n"), json!("err\n"))
    );
    assert_eq!(answer["timed_out"], false);
    assert!(answer["duration_ms"].is_u64(), "{answer}");

    // Output that is not text comes back as base64.
    let (_, answer) = exec(&daemon, &vm.id, json!({"cmd": ["printf", "\\377\\000"]}));
    assert_eq!(answer["stdout_base64"], "/wA=", "{answer}");

    // stdin, env, cwd and user.
    let (_, answer) = exec(&daemon, &vm.id, json!({"cmd": ["cat"], "stdin": "hello agent"}));
    assert_eq!(answer["stdout"], "hello agent", "{answer}");
    // NUL and control bytes are still UTF-8 text; 0xff is not.
    let (_, answer) = exec(&daemon, &vm.id, json!({"cmd": ["cat"], "stdin_base64": "AAEC"}));
    assert_eq!(answer["stdout"], "\u{0}\u{1}\u{2}", "{answer}");
    let (_, answer) = exec(&daemon, &vm.id, json!({"cmd": ["cat"], "stdin_base64": "AP8B"}));
    assert_eq!(answer["stdout_base64"], "AP8B", "{answer}");
    let (_, answer) = exec(
        &daemon,
        &vm.id,
        json!({"cmd": ["sh", "-c", "echo $GREETING; pwd; id -u"], "env": {"GREETING": "hi"}, "cwd": "/tmp", "user": "nobody"}),
    );
    assert_eq!(answer["stdout"], "hi\n/tmp\n65534\n", "{answer}");

    // A timeout kills the whole process group, a background child included.
    // The timeout leaves the loaded TCG guest seconds to start the child;
    // the killed child is reaped by the guest's init a moment after the
    // reply, so "gone" is awaited, and a zombie counts as gone.
    let (_, answer) = exec(
        &daemon,
        &vm.id,
        json!({"cmd": ["sh", "-c", "sleep 1000 & echo $! > /tmp/child; wait"], "timeout_s": 5}),
    );
    assert_eq!(answer["timed_out"], true, "{answer}");
    assert!(answer["exit_code"].is_null(), "{answer}");
    let child = sh(&daemon, &vm.id, "cat /tmp/child").trim().to_string();
    assert!(child.parse::<u32>().is_ok(), "pid file: {child:?}");
    let alive = format!(
        "if [ -d /proc/{child} ] && ! grep -q '^State:.*Z' /proc/{child}/status 2>/dev/null; \
         then echo alive; else echo gone; fi"
    );
    let started = std::time::Instant::now();
    while sh(&daemon, &vm.id, &alive) != "gone\n" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the timed-out command's background child {child} is still alive"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Output past the cap is cut and flagged.
    let (_, answer) = exec(
        &daemon,
        &vm.id,
        json!({"cmd": ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"]}),
    );
    assert_eq!(answer["truncated"], true, "{}", answer["stdout_truncated"]);
    assert_eq!(answer["stdout"].as_str().map(str::len), Some(1024 * 1024));

    // Bad input: 400 naming the field, and nothing runs in the guest.
    for (body, field) in [
        (json!({"cmd": []}), "cmd"),
        (json!({"cmd": ["touch", "/tmp/ran"], "timeout_s": 0}), "timeout_s"),
        (json!({"cmd": ["touch", "/tmp/ran"], "timeout_s": 100000}), "timeout_s"),
        (json!({"cmd": ["touch", "/tmp/ran"], "env": {"A=B": "x"}}), "env"),
        (json!({"cmd": ["touch", "/tmp/ran"], "env": {"A\u{0}": "x"}}), "env"),
        (json!({"cmd": ["touch", "/tmp/ran"], "cwd": "tmp"}), "cwd"),
    ] {
        let (status, answer) = exec(&daemon, &vm.id, body.clone());
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let (status, answer) = exec(&daemon, &vm.id, json!({"cmd": ["touch", 7]}));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        sh(&daemon, &vm.id, "test -e /tmp/ran && echo ran || echo clean"),
        "clean\n"
    );

    // A VM without networking: ready through its agent alone.
    let (status, offline) = daemon.api(
        "POST",
        "/vms",
        Some(&json!({"image_id": image_id, "enable_network": false})),
    );
    assert_eq!(status, 201, "{offline}");
    let offline_id = offline["id"].as_str().unwrap().to_string();
    let shown = wait_agent(&daemon, &offline_id);
    assert!(shown["ready_at"].is_string(), "{shown}");
    let events = daemon.events_of(&offline_id);
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "ready" && e["reason"] == "guest agent connected"),
        "{events:#?}"
    );
    assert_eq!(
        sh(&daemon, &offline_id, "ls /sys/class/net | grep -vc '^lo$' || true"),
        "0\n"
    );
    assert_eq!(sh(&daemon, &offline_id, "echo works offline"), "works offline\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_move_whole_with_modes_and_clear_errors() {
    let image = common::images::minimal_image().await;
    let (_topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let (status, vm) = daemon.api(
        "POST",
        "/vms",
        Some(&json!({"image_id": image_id, "enable_network": false})),
    );
    assert_eq!(status, 201, "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    wait_agent(&daemon, &id);

    // 50 MiB of random bytes there and back.
    let local = tempfile::NamedTempFile::new().unwrap();
    let mut bytes = vec![0u8; 50 * 1024 * 1024];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
    std::fs::write(local.path(), &bytes).unwrap();
    let sent = hex::encode(Sha256::digest(&bytes));
    let (status, body, _) = files_call(
        &daemon,
        "PUT",
        &id,
        "path=/tmp/blob&mode=0640&uid=65534&gid=65534",
        Some(local.path()),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["bytes"], bytes.len() as u64);
    let (status, body, headers) = files_call(&daemon, "GET", &id, "path=/tmp/blob", None);
    assert_eq!(status, 200, "{headers}");
    assert_eq!(hex::encode(Sha256::digest(&body)), sent, "the file came back different");
    let headers = headers.to_ascii_lowercase();
    assert!(headers.contains("x-file-mode: 0640"), "{headers}");
    assert!(headers.contains("x-file-uid: 65534"), "{headers}");
    // The guest sees the same bytes, owner and mode.
    assert_eq!(sh(&daemon, &id, "sha256sum /tmp/blob | cut -d' ' -f1").trim(), sent);
    assert_eq!(
        sh(&daemon, &id, "stat -c '%a %u %g' /tmp/blob").trim(),
        "640 65534 65534"
    );

    // A listing shows it.
    let (status, body, _) = files_call(&daemon, "GET", &id, "path=/tmp&list=true", None);
    assert_eq!(status, 200);
    let listing = json_of(&body);
    let entry = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "blob")
        .cloned();
    let entry = entry.unwrap_or_else(|| panic!("no blob in {listing}"));
    assert_eq!(
        (entry["type"].clone(), entry["size"].clone()),
        (json!("file"), json!(bytes.len()))
    );

    // Errors: missing file 404; relative path, NUL, '..' 400; delete then 404.
    let (status, body, _) = files_call(&daemon, "GET", &id, "path=/tmp/none", None);
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    for query in [
        "path=tmp/blob",
        "path=/tmp/a%00b",
        "path=/tmp/../etc/passwd",
        "path=/tmp/x&mode=999",
    ] {
        let (status, body, _) = files_call(&daemon, "GET", &id, query, None);
        let expected_field = if query.contains("mode") { "mode" } else { "path" };
        assert_eq!(status, 400, "{query}: {}", String::from_utf8_lossy(&body));
        assert_eq!(json_of(&body)["error"]["field"], expected_field, "{query}");
    }
    let (status, _, _) = files_call(&daemon, "DELETE", &id, "path=/tmp/blob", None);
    assert_eq!(status, 204);
    assert_eq!(files_call(&daemon, "GET", &id, "path=/tmp/blob", None).0, 404);
}

fn host_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn after_restore_the_agent_answers_processes_live_and_the_clock_is_set() {
    let image = common::images::minimal_image().await;
    let (_topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));
    wait_agent(&daemon, &vm.id);
    let sleeper = sh(&daemon, &vm.id, "sleep 100000 </dev/null >/dev/null 2>&1 & echo $!")
        .trim()
        .to_string();

    let (status, snapshot) = daemon.api("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert!(matches!(status, 200 | 201), "{snapshot}");
    // Long enough for a stale clock to show.
    std::thread::sleep(Duration::from_secs(6));
    let (status, restored) = daemon.api("POST", &format!("/vms/{}/restore", vm.id), None);
    assert_eq!(status, 200, "{restored}");
    wait_agent(&daemon, &vm.id);

    assert_eq!(
        sh(&daemon, &vm.id, &format!("kill -0 {sleeper} && echo alive")),
        "alive\n"
    );
    let before = host_now();
    let guest: f64 = sh(&daemon, &vm.id, "date +%s").trim().parse().expect("guest time");
    let after = host_now();
    assert!(
        guest >= before.floor() - 2.0 && guest <= after + 2.0,
        "guest clock {guest}, host {before}..{after}"
    );
    let events = daemon.events_of(&vm.id);
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "agent" && e["reason"].as_str().is_some_and(|r| r.contains("clock set"))),
        "{events:#?}"
    );

    // A snapshotted VM is woken by an exec.
    let (status, snapshot) = daemon.api("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert!(matches!(status, 200 | 201), "{snapshot}");
    assert_eq!(sh(&daemon, &vm.id, "echo awake"), "awake\n");
    let (_, shown) = daemon.api("GET", &format!("/vms/{}", vm.id), None);
    assert_eq!(shown["state"], "running");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_and_files_work_in_a_debian_guest() {
    let image = common::images::debian_image().await;
    let (_topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));
    wait_agent(&daemon, &vm.id);
    assert_eq!(sh(&daemon, &vm.id, "grep '^ID=' /etc/os-release"), "ID=debian\n");
    let (status, answer) = exec(&daemon, &vm.id, json!({"cmd": ["id", "-un"], "user": "debian"}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stdout"], "debian\n", "{answer}");

    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), b"#!/bin/sh\necho from a file\n").unwrap();
    let (status, body, _) = files_call(
        &daemon,
        "PUT",
        &vm.id,
        "path=/home/debian/hello.sh&mode=0755&uid=1000&gid=1000",
        Some(local.path()),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (_, answer) = exec(
        &daemon,
        &vm.id,
        json!({"cmd": ["/home/debian/hello.sh"], "user": "debian"}),
    );
    assert_eq!(answer["stdout"], "from a file\n", "{answer}");
    assert_eq!(
        sh(&daemon, &vm.id, "stat -c '%a %U' /home/debian/hello.sh"),
        "755 debian\n"
    );
}
