//! `hatch vm exec|cp|ls|rm` against a real guest (QEMU TCG, `minimal`
//! image with `hatch-agent`): output on the right streams, the command's
//! exit status (128+signal, 124 on timeout), stdin piped with -i, a
//! terminal with -t (under `script`), and files copied both ways intact.

use crate::common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::daemon::{hatch_command_in, on_terminal};
use common::e2e::{create_ready_vm, Topology};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::common::agent::wait_agent;

fn command(daemon: &TestDaemon, args: &[&str]) -> Command {
    let url = format!("unix:{}", daemon.socket.display());
    let key = daemon.admin_key();
    hatch_command_in(
        None,
        args,
        &[("HATCH_URL", url.as_str()), ("HATCH_API_KEY", key.as_str())],
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// (exit status, stdout, stderr)
fn outcome(output: &Output) -> (Option<i32>, String, String) {
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

/// `hatch args...` with `input` on its standard input.
fn piped(daemon: &TestDaemon, args: &[&str], input: &[u8]) -> Output {
    let mut child = command(daemon, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hatch");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_runs_commands_and_copies_files_in_a_real_guest() {
    let image = common::images::minimal_image().await;
    let (_topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let vm = create_ready_vm(&daemon, &image_id, &TestKey::generate(), json!({}));
    wait_agent(&daemon, &vm.id);
    let id = vm.id.as_str();
    let run = |args: &[&str]| outcome(&command(&daemon, args).output().expect("run hatch"));

    let script = "echo out; echo err >&2; exit 3";
    assert_eq!(
        run(&["vm", "exec", id, "--", "sh", "-c", script]),
        (Some(3), "out\n".into(), "err\n".into())
    );
    assert_eq!(
        run(&[
            "vm",
            "exec",
            id,
            "--env",
            "GREETING=hi there",
            "--cwd",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo $GREETING; pwd"
        ]),
        (Some(0), "hi there\n/tmp\n".into(), String::new())
    );
    assert_eq!(run(&["vm", "exec", id, "--", "sh", "-c", "kill -9 $$"]).0, Some(137));
    let (status, _, stderr) = run(&["vm", "exec", id, "--timeout", "1", "--", "sleep", "30"]);
    assert_eq!(status, Some(124), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    let (status, _, stderr) = run(&["vm", "exec", id, "--", "no-such-command"]);
    assert_eq!(status, Some(1), "{stderr}");

    // -i: standard input streams to the command, binary and all.
    let input: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    let output = piped(&daemon, &["vm", "exec", "-i", id, "--", "cat"], &input);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(output.stdout == input, "cat gave back {} bytes", output.stdout.len());
    let output = piped(
        &daemon,
        &["vm", "exec", "-i", id, "--", "sh", "-c", "cat >&2; exit 5"],
        b"to stderr",
    );
    assert_eq!(outcome(&output), (Some(5), String::new(), "to stderr".into()));

    // -t on a terminal: the command has one in the guest.
    let terminal = on_terminal(&command(
        &daemon,
        &["vm", "exec", "-it", id, "--", "sh", "-c", "tty; exit 4"],
    ))
    .output()
    .expect("run script");
    let shown = text(&terminal.stdout);
    assert_eq!(terminal.status.code(), Some(4), "{shown}");
    assert!(shown.contains("/dev/pts/"), "{shown}");

    // Files both ways, whole, with the mode asked for.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("blob.bin");
    let content: Vec<u8> = (0..3 * 1024 * 1024).map(|_| rand::random::<u8>()).collect();
    std::fs::write(&local, &content).unwrap();
    let local = local.to_str().unwrap();
    assert_eq!(
        run(&["vm", "cp", "--mode", "0600", local, &format!("{id}:/root/")]).0,
        Some(0)
    );
    let back = dir.path().join("back.bin");
    let (status, _, stderr) = run(&["vm", "cp", &format!("{id}:/root/blob.bin"), back.to_str().unwrap()]);
    assert_eq!(status, Some(0), "{stderr}");
    let digest = |bytes: &[u8]| hex::encode(Sha256::digest(bytes));
    assert_eq!(digest(&std::fs::read(&back).unwrap()), digest(&content));
    let (status, listing, _) = run(&["vm", "ls", &format!("{id}:/root")]);
    assert_eq!(status, Some(0));
    let line = listing
        .lines()
        .find(|l| l.ends_with(" blob.bin"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        line.starts_with("0600") && line.contains(&content.len().to_string()),
        "{line}"
    );
    assert_eq!(run(&["vm", "rm", &format!("{id}:/root/blob.bin")]).0, Some(0));
    let (status, _, stderr) = run(&["vm", "cp", &format!("{id}:/root/blob.bin"), "-"]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
}
