//! Exec against the real agent binary, running real processes.

mod common;

use common::{alive, error_of, exec, gone_soon, Host};
use hatch_agent_proto::{ErrorCode, ExecRequest, Kind, WindowSize};

#[test]
fn exit_codes_and_separate_stdout_and_stderr() {
    let (_host, mut conn) = Host::start();
    let output = conn.run(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(output.stdout, b"out\n");
    assert_eq!(output.stderr, b"err\n");
    assert_eq!(
        (output.exit.exit_code, output.exit.signal, output.exit.timed_out),
        (Some(3), None, false)
    );
    assert_eq!(conn.run(&["true"]).exit.exit_code, Some(0));
    // argv is passed as is: no shell splits or expands it.
    assert_eq!(conn.run(&["echo", "a  b", "$HOME", "*"]).stdout, b"a  b $HOME *\n");
}

#[test]
fn commands_inherit_no_descriptors_of_the_agent() {
    let (_host, mut conn) = Host::start();
    // The three standard ones, and the directory ls itself reads (3).
    let output = conn.run(&["ls", "/proc/self/fd"]);
    assert_eq!(
        output.stdout_text().split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
    let tty = ExecRequest {
        tty: Some(WindowSize { rows: 5, cols: 50 }),
        ..exec(&["ls", "-1", "/proc/self/fd"])
    };
    let output = conn.exec(tty, None).unwrap();
    assert_eq!(
        output.stdout_text().split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
}

#[test]
fn commands_start_with_default_signal_handling() {
    let (_host, mut conn) = Host::start();
    // The agent ignores SIGPIPE for itself; its commands must not inherit that.
    let output = conn.run(&["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]);
    assert_eq!(
        output.stdout_text(),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
    let output = conn.run(&["sh", "-c", "yes | head -n 1; echo ${PIPESTATUS:-done}"]);
    assert_eq!(output.stdout_text(), "y\ndone\n");
}

#[test]
fn binary_output_and_stdin_pass_unchanged() {
    let (_host, mut conn) = Host::start();
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let output = conn.exec(exec(&["cat"]), Some(&bytes)).unwrap();
    assert_eq!(output.stdout.len(), bytes.len());
    assert!(output.stdout == bytes, "stdin came back changed");
    // Without stdin the command reads /dev/null.
    assert_eq!(conn.run(&["cat"]).stdout, b"");
}

#[test]
fn environment_is_clean_with_the_request_on_top_and_cwd_applies() {
    let (host, mut conn) = Host::start();
    let mut request = exec(&["sh", "-c", "env; pwd"]);
    request.env.insert("GREETING".into(), "hello world".into());
    request.cwd = Some(host.dir.path().to_str().unwrap().into());
    let output = conn.exec(request, None).unwrap();
    let text = output.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"GREETING=hello world"), "{text}");
    assert!(lines.contains(&"HOME=/root") && lines.contains(&"USER=root"), "{text}");
    assert!(
        lines.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{text}"
    );
    assert!(
        !text.contains("TERM=") && !text.contains("CARGO"),
        "the agent's own environment leaked: {text}"
    );
    assert_eq!(lines.last().copied(), host.dir.path().to_str());
}

#[test]
fn commands_run_as_the_requested_user_with_its_groups() {
    let (_host, mut conn) = Host::start();
    let request = ExecRequest {
        user: Some("nobody".into()),
        ..exec(&["sh", "-c", "id -u; id -g; echo $HOME $USER; pwd"])
    };
    let output = conn.exec(request, None).unwrap();
    assert_eq!(output.stdout_text(), "65534\n65534\n/nonexistent nobody\n/\n");
    let by_uid = ExecRequest {
        user: Some("65534".into()),
        ..exec(&["id", "-un"])
    };
    assert_eq!(conn.exec(by_uid, None).unwrap().stdout, b"nobody\n");
    // nobody may not write where root's files are.
    let denied = ExecRequest {
        user: Some("nobody".into()),
        ..exec(&["touch", "/root/hatch-agent-test-denied"])
    };
    assert_ne!(conn.exec(denied, None).unwrap().exit.exit_code, Some(0));
}

#[test]
fn bad_requests_run_nothing_and_say_why() {
    let (host, mut conn) = Host::start();
    let marker = host.path("ran");
    let touch = |conn: &mut common::Conn, request: ExecRequest| conn.exec(request, None).unwrap_err();
    let unknown_user = ExecRequest {
        user: Some("no-such-user".into()),
        ..exec(&["touch", marker.to_str().unwrap()])
    };
    assert_eq!(error_of(touch(&mut conn, unknown_user)).code, ErrorCode::Invalid);
    let missing_cwd = ExecRequest {
        cwd: Some("/no/such/directory".into()),
        ..exec(&["touch", marker.to_str().unwrap()])
    };
    assert_eq!(error_of(touch(&mut conn, missing_cwd)).code, ErrorCode::NotFound);
    let relative_cwd = ExecRequest {
        cwd: Some("tmp".into()),
        ..exec(&["touch", marker.to_str().unwrap()])
    };
    assert_eq!(error_of(touch(&mut conn, relative_cwd)).code, ErrorCode::Invalid);
    assert!(!marker.exists());
    let missing = error_of(touch(&mut conn, exec(&["no-such-command-anywhere"])));
    assert_eq!(missing.code, ErrorCode::NotFound);
    assert!(
        missing.message.contains("no-such-command-anywhere"),
        "{}",
        missing.message
    );
    let not_executable = error_of(touch(&mut conn, exec(&["/etc/passwd"])));
    assert_eq!(not_executable.code, ErrorCode::SpawnFailed);
    assert_eq!(error_of(touch(&mut conn, exec(&[]))).code, ErrorCode::Invalid);
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let (_host, mut conn) = Host::start();
    let request = ExecRequest {
        timeout_ms: Some(300),
        ..exec(&["sh", "-c", "sleep 300 & echo $!; sleep 300"])
    };
    let output = conn.exec(request, None).unwrap();
    assert!(output.exit.timed_out);
    assert_eq!((output.exit.exit_code, output.exit.signal), (None, Some(9)));
    let grandchild = output.printed_pid();
    assert!(
        gone_soon(grandchild),
        "the grandchild {grandchild} survived the timeout"
    );
}

#[test]
fn a_timeout_stops_a_command_that_writes_without_pause() {
    let (_host, mut conn) = Host::start();
    let request = ExecRequest {
        timeout_ms: Some(300),
        output_limit: Some(1 << 20),
        ..exec(&["cat", "/dev/zero"])
    };
    let output = conn.exec(request, None).unwrap();
    assert!(output.exit.timed_out && output.exit.stdout_truncated);
    assert_eq!(output.exit.signal, Some(9));
}

#[test]
fn a_background_process_outlives_the_exec_that_started_it() {
    let (_host, mut conn) = Host::start();
    // The background sleep keeps the output pipes open: the exec still ends.
    let output = conn.run(&["sh", "-c", "sleep 300 & echo $!"]);
    let server = output.printed_pid();
    assert_eq!(output.exit.exit_code, Some(0));
    assert!(alive(server), "the background process was killed with its exec");
    // And it is not killed later by the agent (a new exec, a cancel of nothing).
    conn.run(&["true"]);
    assert!(alive(server));
    unsafe { libc::kill(server as i32, libc::SIGKILL) };
}

#[test]
fn output_beyond_the_limit_is_dropped_and_flagged() {
    let (_host, mut conn) = Host::start();
    let request = ExecRequest {
        output_limit: Some(1000),
        ..exec(&["sh", "-c", "head -c 200000 /dev/zero; echo short >&2"])
    };
    let output = conn.exec(request, None).unwrap();
    assert_eq!(output.stdout.len(), 1000);
    assert_eq!(output.stderr, b"short\n");
    assert!(output.exit.stdout_truncated && !output.exit.stderr_truncated);
    assert_eq!(output.exit.exit_code, Some(0));
}

#[test]
fn cancel_kills_a_running_command() {
    let (_host, mut conn) = Host::start();
    let (channel, pid) = conn.start_sleeper(false);
    conn.send(channel, Kind::Cancel, Vec::new());
    let output = conn.finish_exec(channel).unwrap();
    assert_eq!(output.exit.signal, Some(9));
    assert!(!output.exit.timed_out);
    assert!(gone_soon(pid));
}

#[test]
fn a_terminal_is_the_controlling_tty_and_follows_resizes() {
    let (_host, mut conn) = Host::start();
    let size = WindowSize { rows: 24, cols: 80 };
    let output = conn
        .exec(
            ExecRequest {
                tty: Some(size),
                ..exec(&["sh", "-c", "tty; echo $TERM; stty size; echo to-stderr >&2"])
            },
            None,
        )
        .unwrap();
    let text = output.stdout_text();
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{text:?}");
    assert_eq!(&lines[1..], ["xterm-256color", "24 80", "to-stderr"], "{text:?}");
    assert!(output.stderr.is_empty());

    let channel = conn.start_exec(ExecRequest {
        tty: Some(size),
        stdin: true,
        ..exec(&["sh", "-c", "read line; stty size"])
    });
    conn.send(
        channel,
        Kind::Resize,
        serde_json::to_vec(&WindowSize { rows: 40, cols: 100 }).unwrap(),
    );
    conn.send_data(channel, b"go\n");
    let output = conn.finish_exec(channel).unwrap();
    assert!(output.stdout_text().contains("40 100"), "{:?}", output.stdout_text());
    assert_eq!(output.exit.exit_code, Some(0));
}
