//! `hatch vm exec|cp|ls|rm` against a real API without a guest agent: the
//! usage errors, and the daemon's 409 agent_unavailable said plainly by
//! every form (the plain and the WebSocket exec, the file commands), on a
//! running VM whose agent never connected (`TestApi::vm_without_agent`).

use crate::common;

use std::process::Output;

use common::daemon::{hatch_command_in, on_terminal, TestApi};

struct Cli {
    api: TestApi,
    vm_id: String,
}

impl Cli {
    async fn start() -> Cli {
        let api = TestApi::start().await;
        let vm_id = api.vm_without_agent(hatch::model::VmState::Running, 1);
        Cli { api, vm_id }
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let url = format!("unix:{}", self.api.socket.display());
        let vars = [
            ("HATCH_URL", url.as_str()),
            ("HATCH_API_KEY", self.api.admin_key.as_str()),
        ];
        hatch_command_in(None, args, &vars)
    }

    fn hatch(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run hatch")
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Fails with `code` and a message on standard error that says `words`.
fn assert_fails(output: &Output, code: i32, words: &[&str]) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{text}");
    for word in words {
        assert!(text.contains(word), "{word:?} not in: {text}");
    }
    assert!(output.stdout.is_empty(), "{}", String::from_utf8_lossy(&output.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_and_files_say_the_agent_is_unavailable() {
    let cli = Cli::start().await;
    let vm = cli.vm_id.as_str();
    let target = format!("{vm}:/etc/hostname");
    let local = cli.api.dir.path().join("local.txt");
    std::fs::write(&local, "hello").unwrap();
    let local = local.to_str().unwrap();
    let download = cli.api.dir.path().join("out.txt");
    for args in [
        vec!["vm", "exec", vm, "--", "uname", "-a"],
        vec!["vm", "exec", vm, "uname", "-a"],
        vec!["vm", "exec", "-i", vm, "--", "cat"],
        vec!["vm", "cp", local, &target],
        vec!["vm", "cp", &target, download.to_str().unwrap()],
        vec!["vm", "ls", &format!("{vm}:/")],
        vec!["vm", "rm", &target],
    ] {
        let output = cli.hatch(&args);
        assert_fails(&output, 1, &["agent_unavailable", "409", "hatch-agent"]);
    }
    assert!(!download.exists(), "a failed download left a file");
    // The VM is still there and running: nothing was changed.
    let (status, shown) = cli.api.call("GET", &format!("/vms/{vm}"), None).await;
    assert_eq!((status, shown["state"].as_str()), (200, Some("running")), "{shown}");
    assert_eq!(shown["agent"]["connected"], false, "{shown}");
    let show = cli.hatch(&["vm", "show", vm]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("agent") && l.ends_with("not connected")),
        "{text}"
    );
}

/// On a terminal (`script`): the terminal is put in raw mode and restored,
/// and the error reaches the user.
#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_exec_says_the_agent_is_unavailable() {
    let cli = Cli::start().await;
    let command = cli.command(&["vm", "exec", "-it", &cli.vm_id, "--", "sh"]);
    let output = on_terminal(&command).output().expect("run script");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(shown.contains("agent_unavailable"), "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_vms_are_not_found_in_every_form() {
    let cli = Cli::start().await;
    for args in [
        vec!["vm", "exec", "vm-nope", "--", "true"],
        vec!["vm", "exec", "-i", "vm-nope", "--", "true"],
        vec!["vm", "ls", "vm-nope:/"],
    ] {
        assert_fails(&cli.hatch(&args), 1, &["404", "not_found"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_command_lines_are_usage_errors_before_any_request() {
    let cli = Cli::start().await;
    let vm = cli.vm_id.as_str();
    let guest = format!("{vm}:/tmp/x");
    for (args, words) in [
        (vec!["vm", "exec", vm], &["CMD"][..]),
        (
            vec!["vm", "exec", vm, "--env", "NOVALUE", "--", "env"],
            &["--env", "NAME=VALUE"],
        ),
        // -t needs a terminal: the test's standard input is /dev/null.
        (vec!["vm", "exec", "-t", vm, "--", "sh"], &["-t needs a terminal"]),
        (vec!["vm", "cp", "a.txt", "b.txt"], &["ID:/absolute/path"]),
        (vec!["vm", "cp", &guest, &guest], &["between VMs"]),
        (vec!["vm", "cp", &guest, "out", "--mode", "0600"], &["--mode"]),
        (vec!["vm", "ls", "relative"], &["ID:/absolute/path"]),
    ] {
        let output = cli.hatch(&args);
        let text = stderr(&output);
        assert!(!output.status.success(), "{args:?} succeeded");
        for word in words {
            assert!(text.contains(word), "{args:?}: {word:?} not in: {text}");
        }
    }
    // The daemon's own checks (a bad timeout, a relative cwd).
    for args in [
        vec!["vm", "exec", vm, "--timeout", "0", "--", "true"],
        vec!["vm", "exec", vm, "--timeout", "3601", "--", "true"],
        vec!["vm", "exec", vm, "--cwd", "tmp", "--", "true"],
    ] {
        assert_fails(&cli.hatch(&args), 1, &["400", "invalid_field"]);
    }
}
