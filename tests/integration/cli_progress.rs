//! Long CLI operations on a terminal draw a spinner line redrawn in place;
//! piped, they print the plain lines they always printed. The terminal is
//! a real pty made by `script` (util-linux); a snapshot and a restore of a
//! real `minimal` guest are the operations.

use crate::common;

use std::process::Output;

use common::daemon::{hatch_command_in, on_terminal};
use common::e2e::{create_ready_vm, Topology};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::json;

/// `hatch args...` against `daemon`; on a pty (what the terminal showed on
/// stdout) or piped.
fn hatch(daemon: &TestDaemon, args: &[&str], terminal: bool) -> Output {
    let key = daemon.admin_key();
    let socket = format!("unix:{}", daemon.socket.display());
    let command = hatch_command_in(None, args, &[("HATCH_URL", &socket), ("HATCH_API_KEY", &key)]);
    let output = if terminal { on_terminal(&command) } else { command }
        .output()
        .expect("run hatch");
    assert!(output.status.success(), "{output:?}");
    output
}

fn piped(daemon: &TestDaemon, args: &[&str]) -> Output {
    hatch(daemon, args, false)
}

fn on_a_terminal(daemon: &TestDaemon, args: &[&str]) -> Output {
    hatch(daemon, args, true)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_and_restore_draw_a_spinner_on_a_terminal_and_lines_when_piped() {
    let image = common::images::minimal_image().await;
    let (_topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let vm = create_ready_vm(&daemon, &image_id, &TestKey::generate(), json!({}));
    let id = vm.id.as_str();

    let piped_snapshot = piped(&daemon, &["snapshot", "create", id]);
    assert_eq!(
        text(&piped_snapshot.stderr),
        format!("snapshotting {id}…\n"),
        "one plain line"
    );
    let restore = on_a_terminal(&daemon, &["snapshot", "restore", id]);
    let shown = text(&restore.stdout);
    // A spinner line with the operation (and later its phases), erased
    // (ANSI erase-line) when done; then the result.
    assert!(shown.contains(&format!("restoring {id}")), "{shown:?}");
    assert!(shown.contains("\x1b[2K"), "{shown:?}");
    assert!(shown.trim_end().ends_with(&format!("{id} running")), "{shown:?}");

    let snapshot = on_a_terminal(&daemon, &["snapshot", "create", id]);
    let shown = text(&snapshot.stdout);
    assert!(shown.contains(&format!("snapshotting {id}")), "{shown:?}");
    assert!(shown.contains("\x1b[2K"), "{shown:?}");
    let piped_restore = piped(&daemon, &["snapshot", "restore", id]);
    assert_eq!(
        text(&piped_restore.stderr),
        "",
        "restore printed nothing but its result"
    );
    assert_eq!(text(&piped_restore.stdout), format!("{id} running\n"));
    assert!(!text(&piped_snapshot.stdout).contains('\x1b'), "{piped_snapshot:?}");
}
