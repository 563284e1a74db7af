//! The QEMU backend against real QEMU processes (TCG) booting the `minimal` image.

use crate::common;

use std::time::Duration;

use common::images::make_seed_disk;
use common::netns::TestNetns;
use common::vmm::*;
use hatch::vmm::qemu::qmp::Qmp;
use hatch::vmm::{AgentEndpoint, DiskSpec, Hypervisor, NicSpec, DEFAULT_STOP_GRACE};

/// Generous: two shared cores running emulated guests.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const READY: &str = "hatch-minimal: ready";
const HEARTBEAT: &str = "hatch-heartbeat ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_minimal_image_and_stops_gracefully() {
    let dir = run_dir();
    let _cleanup = KillLeftovers(dir.path().to_path_buf());
    let spec = minimal_launch("vm-qemu-boot", dir.path(), "").await;
    let vm = qemu_tcg().launch(&spec).await.expect("launch");
    let pid = vm.pid();
    assert_eq!(
        hatch::vmm::supervisor::read_pid_file(dir.path()),
        Some(pid),
        "pid file written"
    );

    wait_for_marker(dir.path(), READY, BOOT_TIMEOUT).await;
    let report = vm.stop(DEFAULT_STOP_GRACE * 6).await;

    assert_eq!(report.code, Some(0), "guest shut down on the power button: {report:?}");
    assert_eq!(report.signal, None);
    assert!(
        serial_log(dir.path()).contains("shutting down"),
        "the guest's own shutdown ran"
    );
    assert!(!hatch::sys::process::is_alive(pid), "QEMU is gone");
    assert!(!is_zombie(pid), "QEMU was reaped");
    // Another waiter still gets the same report after the fact.
    assert_eq!(vm.wait_exit().await, report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_state_restores_into_a_new_process_with_ram_intact() {
    let dir = run_dir();
    let _cleanup = KillLeftovers(dir.path().to_path_buf());
    let qemu = qemu_tcg();
    let spec = minimal_launch("vm-qemu-snap", dir.path(), "hatch.heartbeat=1").await;
    let vm = qemu.launch(&spec).await.expect("launch");
    wait_for_serial(dir.path(), 0, BOOT_TIMEOUT, |log| {
        counters(log, HEARTBEAT).into_iter().find(|n| *n >= 3)
    })
    .await;

    // A host connected to the agent's port while saving does not stop the
    // save; the restored QEMU serves the port again on a fresh socket.
    let AgentEndpoint::Connect(agent) = qemu.agent_endpoint(&spec) else {
        panic!("QEMU's agent endpoint is a socket it serves");
    };
    let connected = std::os::unix::net::UnixStream::connect(&agent).expect("agent socket");
    vm.pause().await.expect("pause");
    let snap_dir = dir.path().join("snapshot");
    let files = vm.save_snapshot(&snap_dir).await.expect("save");
    assert!(
        std::fs::metadata(&files.state).expect("state file").len() > 1 << 20,
        "RAM was written"
    );
    let report = vm.stop(Duration::ZERO).await;
    assert_eq!(report.signal, Some(9), "killed without a graceful shutdown");
    drop(connected);
    let before = serial_log(dir.path());
    let last_beat = *counters(&before, HEARTBEAT).last().expect("heartbeats before saving");

    // Loaded but held paused (how the daemon restores while it verifies
    // the files): no heartbeat until it is resumed.
    let restored = qemu.restore_paused(&spec, &files).await.expect("restore");
    assert_ne!(restored.pid(), vm.pid(), "a new process");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        serial_log(dir.path()),
        before,
        "nothing ran while the restored guest was paused"
    );
    restored.resume().await.expect("resume");
    let after = wait_for_serial(dir.path(), before.len(), BOOT_TIMEOUT, |log| {
        let beats = counters(log, HEARTBEAT);
        (beats.len() >= 2).then_some(beats)
    })
    .await;

    assert!(
        after[0] > last_beat && after[0] <= last_beat + 3,
        "heartbeat continued from {last_beat} (saw {after:?}), not a fresh boot"
    );
    let new_output = &serial_log(dir.path())[before.len()..];
    assert!(!new_output.contains("Linux version"), "no kernel boot after restore");
    std::os::unix::net::UnixStream::connect(&agent).expect("the restored VM serves the agent socket");
    let report = restored.stop(DEFAULT_STOP_GRACE * 6).await;
    assert_eq!(report.code, Some(0), "restored guest shut down cleanly: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_kill_is_reported_with_signal_and_serial_tail() {
    let dir = run_dir();
    let _cleanup = KillLeftovers(dir.path().to_path_buf());
    let spec = minimal_launch("vm-qemu-kill", dir.path(), "").await;
    let vm = qemu_tcg().launch(&spec).await.expect("launch");
    wait_for_marker(dir.path(), READY, BOOT_TIMEOUT).await;

    let (waiter_a, waiter_b) = (vm.wait_exit(), vm.wait_exit());
    hatch::sys::process::signal(vm.pid(), nix::sys::signal::Signal::SIGKILL);
    let (a, b) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(waiter_a, waiter_b) })
        .await
        .expect("exit noticed");

    assert_eq!(a, b, "concurrent waiters see the same exit");
    assert_eq!(a.code, None);
    assert_eq!(a.signal, Some(9));
    assert!(
        a.serial_tail.contains(READY),
        "serial tail in the report: {:?}",
        a.serial_tail
    );
    assert!(!is_zombie(vm.pid()));
    assert!(
        hatch::vmm::supervisor::read_pid_file(dir.path()).is_none(),
        "stale pid file removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_clearly_and_leaves_no_process() {
    let dir = run_dir();
    let _cleanup = KillLeftovers(dir.path().to_path_buf());
    let marker = dir.path().display().to_string();
    let qemu = qemu_tcg();

    // Not a kernel at all: refused before any process starts.
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"this is not a kernel\n").expect("write");
    let mut spec = minimal_launch("vm-qemu-bad", &dir.path().join("run-a"), "").await;
    spec.kernel.elf = Some(garbage);
    spec.kernel.bzimage = None;
    let err = qemu.launch(&spec).await.err().expect("garbage kernel refused");
    assert!(
        err.to_string().contains("neither an x86_64 ELF vmlinux nor a bzImage"),
        "{err}"
    );

    // Looks like a bzImage but QEMU cannot load it: QEMU starts, fails, and is reaped.
    let mut fake = vec![0u8; 4096];
    fake[0x1fe] = 0x55;
    fake[0x1ff] = 0xaa;
    fake[0x202..0x206].copy_from_slice(b"HdrS");
    let fake_path = dir.path().join("fake-bzImage");
    std::fs::write(&fake_path, &fake).expect("write");
    spec.kernel.bzimage = Some(fake_path);
    spec.kernel.elf = None;
    spec.run_dir = dir.path().join("run-b");
    let err = qemu.launch(&spec).await.err().expect("broken kernel fails");
    assert!(matches!(err, hatch::vmm::VmmError::EarlyExit { .. }), "{err}");
    assert!(err.to_string().contains("qemu"), "QEMU's own message is shown: {err}");
    assert!(live_processes_mentioning(&marker).is_empty(), "nothing left running");

    // Bad sizes are refused up front as well.
    let mut spec = minimal_launch("vm-qemu-bad", &dir.path().join("run-c"), "").await;
    spec.mem_mib = 64;
    assert!(qemu
        .launch(&spec)
        .await
        .err()
        .expect("too little memory")
        .to_string()
        .contains("mem_mib 64"));
    spec.mem_mib = 256;
    spec.vcpu_count = 0;
    assert!(qemu
        .launch(&spec)
        .await
        .err()
        .expect("no vcpus")
        .to_string()
        .contains("vcpu_count 0"));

    // A TAP that does not exist is refused (QEMU would make a stray one).
    spec.vcpu_count = 1;
    spec.nic = Some(NicSpec {
        tap_name: "hatch-nosuch0".into(),
        mac: "02:00:00:00:00:09".into(),
    });
    let err = qemu.launch(&spec).await.err().expect("missing TAP");
    assert!(
        err.to_string().contains("TAP device hatch-nosuch0 does not exist"),
        "{err}"
    );
    spec.nic = None;

    // A corrupt saved state: QEMU starts, fails to load it, and is reaped.
    let state = dir.path().join("corrupt-vmstate");
    std::fs::write(&state, b"QEVM but not really").expect("write");
    let files = hatch::vmm::SnapshotFiles { state, memory: None };
    let err = qemu.restore(&spec, &files).await.err().expect("corrupt state fails");
    assert!(matches!(err, hatch::vmm::VmmError::EarlyExit { .. }), "{err}");
    assert!(live_processes_mentioning(&marker).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_backend_adopts_a_running_vm_and_stops_it() {
    init_tracing();
    let dir = run_dir();
    let _cleanup = KillLeftovers(dir.path().to_path_buf());
    let spec = minimal_launch("vm-qemu-adopt", dir.path(), "").await;
    // As the daemon runs it: QEMU as the unprivileged VMM user, which gets
    // the agent's listening socket as a descriptor; the daemon (root) connects.
    let user = hatch::vmm::privilege::VmmUser::ensure("hatch-vmm").expect("VMM user");
    let qemu_as_vmm_user = || qemu_tcg().run_as(Some(user.clone()));
    let vm = qemu_as_vmm_user().launch(&spec).await.expect("launch");
    let pid = vm.pid();
    wait_for_marker(dir.path(), READY, BOOT_TIMEOUT).await;
    drop(vm); // the daemon "dies": its handle and QMP connection are gone
    assert!(hatch::sys::process::is_alive(pid), "the VMM outlives its handle");

    // The agent socket outlives the daemon too, and QEMU takes the next
    // daemon's connection on it (its chardev is no longer "disconnected").
    let AgentEndpoint::Connect(agent) = qemu_tcg().agent_endpoint(&spec) else {
        panic!("QEMU's agent endpoint is a socket it serves");
    };
    assert!(
        agent_chardev(&spec.run_dir).await.starts_with("disconnected:"),
        "no host is connected yet"
    );
    let connection = std::os::unix::net::UnixStream::connect(&agent).expect("connect to the agent socket");
    let filename = wait_until_connected(&spec.run_dir).await;
    assert!(filename.contains(&agent.display().to_string()), "{filename}");
    drop(connection);

    // A wrong pid, or a process that is not this VM's QEMU, is refused.
    assert!(qemu_tcg().adopt(&spec, std::process::id()).await.is_err());

    let adopted = qemu_as_vmm_user().adopt(&spec, pid).await.expect("adopt");
    assert_eq!(adopted.pid(), pid);
    adopted.pause().await.expect("QMP works after adopting");
    let report = adopted.stop(DEFAULT_STOP_GRACE * 6).await;

    assert_eq!(report.code, None, "an adopted process's exit code is unknowable");
    let log = serial_log(dir.path());
    assert!(
        log.contains("shutting down"),
        "stopped gracefully, not killed: {report:?}\n{}",
        &log[log.len().saturating_sub(800)..]
    );
    assert!(!hatch::sys::process::is_alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_sees_its_read_only_disk_and_its_nic() {
    let dir = run_dir();
    let netns = TestNetns::new();
    netns.add_tap("htap-t0");
    let _cleanup = KillLeftovers(dir.path().to_path_buf()); // dropped before the namespace
    let report_line = "echo \"hatch-test: mac=$(cat /sys/class/net/eth0/address) \
                       ro=$(cat /sys/block/vda/ro) host=$(hostname)\" >/dev/console";
    let seed = make_seed_disk(
        dir.path(),
        &[
            ("meta-data", "instance-id: vm-qemu-dev\nlocal-hostname: seeded-host\n"),
            ("user-data", &format!("#!/bin/sh\n{report_line}\n")),
        ],
    );
    let mut spec = minimal_launch("vm-qemu-dev", &dir.path().join("run"), "").await;
    spec.disks.push(DiskSpec {
        id: "seed".into(),
        path: seed,
        read_only: true,
    });
    spec.nic = Some(NicSpec {
        tap_name: "htap-t0".into(),
        mac: "02:00:00:aa:bb:cc".into(),
    });

    let vm = qemu_tcg().in_netns(netns.name()).launch(&spec).await.expect("launch");
    assert!(runs_in_netns(vm.pid(), &netns), "QEMU runs in the test's namespace");
    assert_eq!(taps_held_by(vm.pid()), vec!["htap-t0".to_string()]);
    wait_for_marker(&spec.run_dir, "hatch-test: ", BOOT_TIMEOUT).await;
    wait_for_marker(
        &spec.run_dir,
        "hatch-test: mac=02:00:00:aa:bb:cc ro=1 host=seeded-host",
        Duration::from_secs(5),
    )
    .await;
    let report = vm.stop(DEFAULT_STOP_GRACE * 6).await;
    assert_eq!(report.code, Some(0), "{report:?}");
}

/// The `filename` QEMU reports for the agent's chardev (over a QMP session
/// of its own: QEMU serves one at a time).
async fn agent_chardev(run_dir: &std::path::Path) -> String {
    let mut qmp = Qmp::connect(&run_dir.join("qmp.sock")).await.expect("QMP");
    let chardevs = qmp.execute("query-chardev", None).await.expect("query-chardev");
    chardevs
        .as_array()
        .expect("a list")
        .iter()
        .find(|c| c["label"] == "agent")
        .unwrap_or_else(|| panic!("no agent chardev: {chardevs}"))["filename"]
        .as_str()
        .expect("filename")
        .to_string()
}

/// Waits until QEMU has accepted a connection on the agent socket.
async fn wait_until_connected(run_dir: &std::path::Path) -> String {
    for _ in 0..100 {
        let filename = agent_chardev(run_dir).await;
        if !filename.starts_with("disconnected:") {
            return filename;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("QEMU never accepted the connection to its agent socket");
}
