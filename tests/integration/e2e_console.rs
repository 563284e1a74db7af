//! A guest's serial console (QEMU TCG, `minimal` image): however much the
//! guest prints (here sixteen times the cap), at most HATCH_CONSOLE_LOG_MAX_BYTES stay on disk (the
//! newest output), `GET /vms/{id}/logs` returns a small tail quickly, and
//! `?follow=true` (`hatch vm logs -f`) streams what the guest prints next.

use crate::common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::e2e::{create_ready_vm, Topology};
use common::hatchd::TestKey;
use serde_json::json;

const CAP: u64 = 512 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_guest_leaves_at_most_the_cap_and_logs_stay_small_and_followable() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[("HATCH_CONSOLE_LOG_MAX_BYTES", "512K")]);
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));
    let log = daemon.data_path().join("vms").join(&vm.id).join("serial.log");

    // Follow the console with `hatch vm logs -f` while the guest prints.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_hatch"))
        .args(["vm", "logs", "-f", "--bytes", "16", &vm.id])
        .env("HATCH_URL", format!("unix:{}", daemon.socket.display()))
        .env("HATCH_API_KEY", daemon.admin_key())
        .stdout(Stdio::piped())
        .spawn()
        .expect("hatch vm logs -f");

    // 8 MiB of console output, sixteen times the cap (an emulated UART
    // under TCG takes its time over every byte: 50 MiB would take minutes).
    let flood = "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 8388608 > /dev/console; echo end-of-flood-marker > /dev/console";
    let started = Instant::now();
    topo.ssh(&key, "root", vm.ssh_port, flood);
    let flood_took = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let on_disk = std::fs::metadata(&log).expect("serial.log").len();
    assert!(
        on_disk <= CAP,
        "{on_disk} bytes on disk, cap {CAP} (flood took {flood_took:?})"
    );
    let kept = std::fs::read(&log).unwrap();
    assert!(
        String::from_utf8_lossy(&kept).contains("end-of-flood-marker"),
        "the newest output must be kept"
    );

    let started = Instant::now();
    let (status, tail) = daemon.api("GET", &format!("/vms/{}/logs", vm.id), None);
    let took = started.elapsed();
    let tail = tail.as_str().unwrap_or_default().to_string();
    assert_eq!(status, 200);
    assert!(tail.len() <= 64 * 1024, "{} bytes", tail.len());
    assert!(tail.contains("end-of-flood-marker"));
    assert!(took < Duration::from_secs(5), "GET /logs took {took:?}");

    // The follower saw the end of the flood as it happened (read on a
    // thread, so a stream that stalls fails the test instead of hanging it).
    let mut stdout = follower.stdout.take().unwrap();
    let (sender, received) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || sender.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("end-of-flood-marker") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = received
            .recv_timeout(left)
            .expect("the follower never saw the marker (stream stalled or ended)");
        seen.extend_from_slice(&chunk);
        // Only the newest part matters; keep memory flat.
        if seen.len() > 1 << 20 {
            seen.drain(..seen.len() - 4096);
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();

    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
}
