//! The conversation itself: sync and Hello, many channels at once, a
//! hostile stream, and a host that goes away.

mod common;

use std::io::Write;
use std::process::Command;

use common::{error_of, exec, gone_soon, Host};
use hatch_agent_proto::{ErrorCode, Frame, Kind, Request, HEADER_LEN, MAX_PAYLOAD, PROTOCOL_VERSION};

#[test]
fn the_agent_says_hello_after_the_sync() {
    let (_host, conn) = Host::start();
    let hello = &conn.hello;
    assert_eq!(hello.protocol, PROTOCOL_VERSION);
    assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(hello.hostname, hostname.trim());
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(hello.boot_id, boot_id.trim());
    assert!(hello.guest_time_unix_ns > 1_600_000_000 * 1_000_000_000);
}

#[test]
fn many_channels_run_at_once() {
    let (_host, mut conn) = Host::start();
    // All started before any is read: they run side by side.
    let channels: Vec<(u32, usize)> = (0..40)
        .map(|n| {
            let script = format!("head -c {} /dev/zero | tr '\\0' x; echo; echo {n} >&2", 100_000 + n);
            (conn.start_exec(exec(&["sh", "-c", &script])), n)
        })
        .collect();
    for (channel, n) in channels.into_iter().rev() {
        let output = conn.finish_exec(channel).unwrap();
        assert_eq!(output.stdout.len(), 100_000 + n + 1);
        assert_eq!(output.stderr, format!("{n}\n").as_bytes());
        assert_eq!(output.exit.exit_code, Some(0));
    }
}

#[test]
fn frames_for_unknown_channels_are_dropped_and_a_reused_open_channel_is_refused() {
    let (_host, mut conn) = Host::start();
    conn.send(999, Kind::Data, b"nobody listens".to_vec());
    conn.send(998, Kind::Cancel, Vec::new());
    conn.send(5, Kind::Request, b"{not json".to_vec());
    assert_eq!(error_of(conn.reply(5).1).code, ErrorCode::Invalid);
    let channel = conn.start_exec(exec(&["sleep", "300"]));
    let again = Frame::json(channel, Kind::Request, &Request::Exec(exec(&["true"])));
    conn.write_raw(&again.to_bytes());
    // The open channel ends with the one error, and its command is killed.
    assert_eq!(error_of(conn.reply(channel).1).code, ErrorCode::Invalid);
    assert_eq!(conn.run(&["echo", "still here"]).stdout, b"still here\n");
}

#[test]
fn a_hostile_stream_leads_to_a_resync_and_the_agent_still_answers() {
    let (_host, mut conn) = Host::start();
    // Garbage, then a frame promising more than any frame may carry.
    conn.write_raw(b"\x00\x00\x00\x07garbage!!");
    let mut oversized = Frame::new(1, Kind::Data, vec![]).header();
    oversized[..4].copy_from_slice(&((MAX_PAYLOAD + 100) as u32).to_be_bytes());
    conn.write_raw(&oversized);
    conn.resync();
    assert_eq!(conn.run(&["echo", "after garbage"]).stdout, b"after garbage\n");

    // Half of a frame whose payload never comes, then the preamble.
    let half = Frame::new(3, Kind::Data, vec![1; MAX_PAYLOAD]).to_bytes();
    conn.write_raw(&half[..HEADER_LEN + 1000]);
    conn.resync();
    assert_eq!(
        conn.run(&["echo", "after a half frame"]).stdout,
        b"after a half frame\n"
    );

    // A frame of a kind only the agent sends.
    conn.write_raw(&Frame::new(0, Kind::Hello, b"{}".to_vec()).to_bytes());
    conn.resync();
    assert_eq!(conn.run(&["true"]).exit.exit_code, Some(0));
}

#[test]
fn the_agent_reconnects_and_a_lost_conversation_kills_its_commands() {
    let (host, mut conn) = Host::start();
    let (_, pid) = conn.start_sleeper(false);
    drop(conn);
    let mut conn = host.accept();
    assert!(gone_soon(pid), "the command of the lost conversation survived");
    assert_eq!(conn.run(&["echo", "again"]).stdout, b"again\n");
    // A host that closes before the sync is fine too.
    drop(conn);
    drop(host.accept_raw());
    let mut conn = host.accept();
    assert_eq!(conn.run(&["true"]).exit.exit_code, Some(0));
}

#[test]
fn a_second_preamble_on_the_same_stream_starts_a_new_conversation() {
    let (_host, mut conn) = Host::start();
    let (_, pid) = conn.start_sleeper(false);
    // Whatever the old channel wrote before the new sync is skipped.
    assert_eq!(conn.resync().protocol, PROTOCOL_VERSION);
    assert!(gone_soon(pid));
    assert_eq!(conn.run(&["echo", "new"]).stdout, b"new\n");
}

#[test]
fn a_resync_or_a_reopened_stream_writes_no_console_line_and_a_broken_frame_does() {
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("stderr");
    let stderr = std::fs::File::create(&console).unwrap();
    let (host, mut conn) = Host::start_with(|agent, socket| {
        let mut command = Command::new(agent);
        command.arg("--connect-unix").arg(socket).stderr(stderr);
        command
    });
    let printed = || std::fs::read_to_string(&console).unwrap();
    let at_start = printed();
    assert!(at_start.contains("opened"), "{at_start}");
    // What every wake and daemon restart does: a console line would cost
    // an emulated guest tens of milliseconds of its first request.
    conn.resync();
    assert_eq!(conn.run(&["true"]).exit.exit_code, Some(0));
    assert_eq!(printed(), at_start, "a resync is no news");
    // Nor is the new stream a vsock guest opens after every restore.
    drop(conn);
    let mut conn = host.accept();
    assert_eq!(conn.run(&["true"]).exit.exit_code, Some(0));
    assert_eq!(printed(), at_start, "a reopened stream is no news");
    // The line is written before the agent answers the sync.
    conn.write_raw(&Frame::new(0, Kind::Hello, b"{}".to_vec()).to_bytes());
    conn.resync();
    assert!(printed().contains("only the agent sends"), "{}", printed());
}

#[test]
fn a_command_that_never_reads_its_stdin_does_not_wedge_the_agent() {
    let (host, mut conn) = Host::start();
    let (channel, pid) = conn.start_sleeper(true);
    // Far more stdin than the pipe, the agent's queue and the socket hold:
    // the writer blocks, and so does the agent's reader.
    let mut writer = conn.stream.try_clone().unwrap();
    let stuck = std::thread::spawn(move || {
        let frame = Frame::new(channel, Kind::Data, vec![0; MAX_PAYLOAD]).to_bytes();
        while writer.write_all(&frame).is_ok() {}
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    conn.stream.shutdown(std::net::Shutdown::Both).unwrap();
    stuck.join().unwrap();
    drop(conn);
    // The hang-up is noticed: the agent comes back and the command is gone.
    let mut conn = host.accept();
    assert!(gone_soon(pid));
    assert_eq!(conn.run(&["echo", "unstuck"]).stdout, b"unstuck\n");
}

#[test]
fn clock_requests_parse_and_times_out_of_range_are_refused() {
    // Only a refused time: a test must never set the clock of the machine
    // it runs on (the setting itself is tested against a fake clock).
    let (_host, mut conn) = Host::start();
    let reply = conn.request(&Request::SetClock { unix_ns: -1 });
    let error = error_of(reply);
    assert_eq!(error.code, ErrorCode::Invalid);
    assert!(error.message.contains("unix_ns"), "{}", error.message);
}
