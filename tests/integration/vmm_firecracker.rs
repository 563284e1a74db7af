//! The Firecracker backend against a real Firecracker binary, with tiny
//! guests assembled by the test itself (see tests/integration/common/vmm.rs). Skipped,
//! with a message, when no binary is found via HATCH_FIRECRACKER_BIN or PATH.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::netns::TestNetns;
use common::vmm::*;
use hatch::agent::link::AgentLink;
use hatch::vmm::firecracker::api_client::UnixHttpClient;
use hatch::vmm::firecracker::FirecrackerHypervisor;
use hatch::vmm::privilege::VmmUser;
use hatch::vmm::{AgentEndpoint, Hypervisor, KernelFiles, VmLaunch, VmmError};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
/// i8042 polls between two counter lines: a few lines a second here.
const COUNTER_DELAY: u32 = 20_000;

fn guest_launch(dir: &Path, vm_id: &str, guest: &[u8]) -> VmLaunch {
    std::fs::create_dir_all(dir).expect("dir");
    let kernel = dir.join("guest.elf");
    std::fs::write(&kernel, guest).expect("write guest");
    VmLaunch {
        vm_id: vm_id.to_string(),
        vcpu_count: 1,
        mem_mib: 128,
        kernel: KernelFiles {
            elf: Some(kernel),
            bzimage: None,
        },
        initrd: None,
        disks: Vec::new(),
        nic: None,
        boot_args: String::new(),
        run_dir: dir.join("run"),
    }
}

fn backend(binary: PathBuf) -> FirecrackerHypervisor {
    init_tracing();
    FirecrackerHypervisor::new(binary)
}

/// Counter values printed on complete lines, and the log length they cover.
/// Half a second without a new count: the guest is paused.
async fn assert_counts_still(run_dir: &Path, counted: &[u64], why: &str) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(complete_counters(run_dir).0, counted, "{why}");
}

fn complete_counters(run_dir: &Path) -> (Vec<u64>, usize) {
    let log = serial_log(run_dir);
    let complete = log.rfind('\n').map_or(0, |i| i + 1);
    (counters(&log[..complete], COUNTER_PREFIX), complete)
}

/// The vsock device in Firecracker's `GET /vm/config`.
async fn vsock_config(api_socket: &Path) -> Value {
    let response = UnixHttpClient::new(api_socket, WAIT)
        .send(hyper::Method::GET, "/vm/config", None)
        .await
        .expect("GET /vm/config");
    assert!(response.status.is_success(), "{}", response.body_text());
    let config: Value = serde_json::from_slice(&response.body).expect("JSON");
    config["vsock"].clone()
}

/// The socket the daemon listens on for the guest agent.
fn agent_listen_path(backend: &FirecrackerHypervisor, spec: &VmLaunch) -> PathBuf {
    match backend.agent_endpoint(spec) {
        AgentEndpoint::Listen(path) => path,
        other => panic!("Firecracker's agent connects to the daemon: {other:?}"),
    }
}

/// The daemon's side of the agent link, as orchestration starts it after a
/// launch, restore or adoption, once it listens.
async fn listen_for_agent(backend: &FirecrackerHypervisor, spec: &VmLaunch) -> AgentLink {
    let path = agent_listen_path(backend, spec);
    let link = AgentLink::start(spec.vm_id.clone(), backend.agent_endpoint(spec), Arc::new(|_| {}));
    for _ in 0..400 {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return link;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the daemon never listened on {}", path.display());
}

/// Connects to `socket` with `user`'s file system identity, through a
/// descriptor of its directory (as the chrooted VMM reaches it), from a
/// thread of its own so the rest of the test keeps root's identity.
fn connect_as(user: &VmmUser, socket: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(socket.parent().expect("a directory"))?;
    let via = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(socket.file_name().expect("a name"));
    let (uid, gid) = (user.uid, user.gid);
    std::thread::spawn(move || {
        nix::unistd::setfsgid(gid.into());
        nix::unistd::setfsuid(uid.into());
        let connected = std::os::unix::net::UnixStream::connect(&via).map(drop);
        drop(dir);
        connected
    })
    .join()
    .expect("connecting thread")
}

async fn wait_for_count_above(run_dir: &Path, from: usize, above: u64) -> Vec<u64> {
    wait_for_serial(run_dir, from, WAIT, |log| {
        let seen = counters(log, COUNTER_PREFIX);
        seen.iter().any(|n| *n > above).then_some(seen)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_prints_marker_and_its_reset_ends_firecracker_cleanly() {
    let Some(binary) = firecracker_bin_or_skip("guest_prints_marker_and_its_reset_ends_firecracker_cleanly") else {
        return;
    };
    let dir = run_dir();
    let _cleanup = KillLeftovers(dir.path().to_path_buf());
    let spec = guest_launch(dir.path(), "vm-fc-marker", &marker_guest());
    let vm = backend(binary).launch(&spec).await.expect("launch");
    let pid = vm.pid();

    let report = tokio::time::timeout(WAIT, vm.wait_exit())
        .await
        .expect("guest reset ends the VMM");

    assert_eq!(report.code, Some(0), "{report:?}");
    assert!(
        report.serial_tail.contains(TINY_GUEST_MARKER),
        "serial captured: {report:?}"
    );
    assert!(!is_zombie(pid) && !hatch::sys::process::is_alive(pid), "reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_snapshot_and_restore_continue_the_counter() {
    let Some(binary) = firecracker_bin_or_skip("pause_resume_snapshot_and_restore_continue_the_counter") else {
        return;
    };
    let dir = run_dir();
    let _cleanup = KillLeftovers(dir.path().to_path_buf());
    let firecracker = backend(binary);
    let spec = guest_launch(dir.path(), "vm-fc-counter", &counter_guest(COUNTER_DELAY));
    let vm = firecracker.launch(&spec).await.expect("launch");
    wait_for_count_above(&spec.run_dir, 0, 3).await;

    // The guest has a vsock device for its agent (the tiny guest has no
    // driver for it, let alone an agent): Firecracker serves uds_path and
    // the daemon listens on uds_path_1024.
    let api_socket = spec.run_dir.join("firecracker.sock");
    let vsock = json!({"guest_cid": 3, "uds_path": spec.run_dir.join("vsock.sock")});
    assert_eq!(vsock_config(&api_socket).await, vsock);
    assert!(spec.run_dir.join("vsock.sock").exists());
    let agent = agent_listen_path(&firecracker, &spec);
    assert_eq!(agent, spec.run_dir.join("vsock.sock_1024"));
    let link = listen_for_agent(&firecracker, &spec).await;

    vm.pause().await.expect("pause");
    let (paused_at, _) = complete_counters(&spec.run_dir);
    assert_counts_still(&spec.run_dir, &paused_at, "nothing printed while paused").await;
    vm.resume().await.expect("resume");
    let last_before = *paused_at.last().expect("counted");
    let (_, len) = complete_counters(&spec.run_dir);
    wait_for_count_above(&spec.run_dir, len, last_before + 1).await;

    let files = vm.save_snapshot(&dir.path().join("snapshot")).await.expect("snapshot");
    let memory = files.memory.clone().expect("memory file");
    assert_eq!(std::fs::metadata(&memory).expect("memory").len(), 128 << 20);
    let killed = vm.stop(Duration::ZERO).await;
    assert_eq!(killed.signal, Some(9), "forced stop: {killed:?}");
    let (before, len) = complete_counters(&spec.run_dir);
    let last = *before.last().expect("counted");

    // The killed process left its vsock socket behind; the restore (which
    // rebinds the same uds_path) is not stopped by it.
    assert!(spec.run_dir.join("vsock.sock").exists());
    // Loaded but held paused (how the daemon restores while it verifies
    // the files): nothing counts until it is resumed.
    let restored = firecracker.restore_paused(&spec, &files).await.expect("restore");
    assert_ne!(restored.pid(), vm.pid());
    assert_counts_still(
        &spec.run_dir,
        &before,
        "nothing printed while the restored guest was paused",
    )
    .await;
    restored.resume().await.expect("resume");
    assert_eq!(vsock_config(&api_socket).await, vsock, "the device came back");
    assert!(
        std::os::unix::net::UnixStream::connect(&agent).is_ok(),
        "the daemon's listener stays across the restore"
    );
    drop(link);
    let after = wait_for_count_above(&spec.run_dir, len, last).await;
    let first_new = *after.iter().find(|n| **n > last).expect("new count");
    assert!(
        first_new <= last + 2,
        "counting continued from {last} in RAM: {after:?}"
    );
    assert!(!after.contains(&1), "not a fresh boot: {after:?}");

    // Graceful stop: Ctrl-Alt-Del reaches the guest, which resets the machine.
    let report = restored.stop(Duration::from_secs(20)).await;
    assert_eq!(report.code, Some(0), "graceful stop: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_is_detected_and_adopted_vms_can_be_stopped() {
    let Some(binary) = firecracker_bin_or_skip("crash_is_detected_and_adopted_vms_can_be_stopped") else {
        return;
    };
    let dir = run_dir();
    let _cleanup = KillLeftovers(dir.path().to_path_buf());
    let spec = guest_launch(dir.path(), "vm-fc-crash", &counter_guest(COUNTER_DELAY));
    let vm = backend(binary.clone()).launch(&spec).await.expect("launch");
    wait_for_count_above(&spec.run_dir, 0, 1).await;
    let pid = vm.pid();
    drop(vm); // the daemon "dies"

    let firecracker = backend(binary);
    let adopted = firecracker.adopt(&spec, pid).await.expect("adopt");
    // The previous daemon's listener file is still there; the new daemon
    // listens in its place.
    drop(listen_for_agent(&firecracker, &spec).await);
    assert!(agent_listen_path(&firecracker, &spec).exists(), "a stale socket file");
    let _link = listen_for_agent(&firecracker, &spec).await;
    adopted.pause().await.expect("API works after adopting");
    adopted.resume().await.expect("resume");
    let waiter = adopted.wait_exit();
    hatch::sys::process::signal(pid, nix::sys::signal::Signal::SIGKILL);
    let report = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("crash noticed");

    assert_eq!(report.code, None, "unknowable for an adopted process");
    assert!(report.serial_tail.contains(COUNTER_PREFIX), "{report:?}");
    assert!(!hatch::sys::process::is_alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_of_a_launched_vm_and_unsupported_kernels() {
    let Some(binary) = firecracker_bin_or_skip("graceful_stop_of_a_launched_vm_and_unsupported_kernels") else {
        return;
    };
    let dir = run_dir();
    let _cleanup = KillLeftovers(dir.path().to_path_buf());
    let firecracker = backend(binary);
    let spec = guest_launch(dir.path(), "vm-fc-stop", &counter_guest(COUNTER_DELAY));
    let vm = firecracker.launch(&spec).await.expect("launch");
    wait_for_count_above(&spec.run_dir, 0, 1).await;
    vm.pause().await.expect("pause");

    // Paused: stop resumes the guest so it can see Ctrl-Alt-Del.
    let report = vm.stop(Duration::from_secs(20)).await;
    assert_eq!(report.code, Some(0), "{report:?}");
    assert!(!is_zombie(vm.pid()));

    // Only an ELF vmlinux boots on Firecracker (x86_64): a bzImage is refused up front.
    let mut bz = vec![0u8; 4096];
    bz[0x1fe] = 0x55;
    bz[0x1ff] = 0xaa;
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    let bz_path = dir.path().join("bzImage");
    std::fs::write(&bz_path, &bz).expect("write");
    let mut bad = guest_launch(dir.path(), "vm-fc-bz", &marker_guest());
    bad.kernel = KernelFiles {
        elf: Some(bz_path.clone()),
        bzimage: None,
    };
    let err = firecracker.launch(&bad).await.err().expect("bzImage refused");
    assert!(matches!(err, VmmError::UnsupportedKernel { .. }), "{err}");
    bad.kernel = KernelFiles {
        elf: None,
        bzimage: Some(bz_path),
    };
    assert!(matches!(
        firecracker.launch(&bad).await.err(),
        Some(VmmError::UnsupportedKernel { .. })
    ));

    // An ELF Firecracker cannot load (entry below 1 MiB) fails at InstanceStart; nothing is left.
    let mut low = marker_guest();
    low[0x18..0x20].copy_from_slice(&0x1000u64.to_le_bytes());
    let bad = guest_launch(&dir.path().join("low"), "vm-fc-low", &low);
    let err = firecracker.launch(&bad).await.err().expect("unloadable kernel fails");
    assert!(matches!(err, VmmError::Rejected { .. }), "{err}");

    // A corrupt snapshot is refused by the fresh process, which is then killed.
    let good = guest_launch(&dir.path().join("corrupt"), "vm-fc-corrupt", &marker_guest());
    let state = dir.path().join("corrupt/vmstate");
    let memory = dir.path().join("corrupt/memory");
    std::fs::write(&state, b"not a snapshot").expect("write");
    std::fs::write(&memory, vec![0u8; 4096]).expect("write");
    let files = hatch::vmm::SnapshotFiles {
        state,
        memory: Some(memory),
    };
    let err = firecracker
        .restore(&good, &files)
        .await
        .err()
        .expect("corrupt snapshot fails");
    assert!(matches!(err, VmmError::Rejected { .. }), "{err}");
    let left = wait_no_process_mentioning(&dir.path().display().to_string(), Duration::from_secs(5)).await;
    assert!(left.is_empty(), "no Firecracker left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_and_nic_are_attached_and_restore_overrides_the_tap() {
    let Some(binary) = firecracker_bin_or_skip("drives_and_nic_are_attached_and_restore_overrides_the_tap") else {
        return;
    };
    let dir = run_dir();
    let netns = TestNetns::new();
    netns.add_tap("hfc-t0");
    netns.add_tap("hfc-t1");
    let _cleanup = KillLeftovers(dir.path().to_path_buf()); // dropped before the namespace
    let disk = dir.path().join("data.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).expect("disk");
    let mut spec = guest_launch(dir.path(), "vm-fc-devices", &counter_guest(COUNTER_DELAY));
    spec.disks.push(hatch::vmm::DiskSpec {
        id: "data".into(),
        path: disk,
        read_only: true,
    });
    spec.nic = Some(hatch::vmm::NicSpec {
        tap_name: "hfc-t0".into(),
        mac: "02:00:00:00:fc:01".into(),
    });
    let firecracker = backend(binary).in_netns(netns.name());

    let vm = firecracker.launch(&spec).await.expect("launch with a drive and a NIC");
    assert!(
        runs_in_netns(vm.pid(), &netns),
        "Firecracker runs in the test's namespace"
    );
    assert_eq!(taps_held_by(vm.pid()), vec!["hfc-t0".to_string()]);
    wait_for_count_above(&spec.run_dir, 0, 1).await;
    let files = vm.save_snapshot(&dir.path().join("snapshot")).await.expect("snapshot");
    vm.stop(Duration::ZERO).await;
    let (before, len) = complete_counters(&spec.run_dir);
    let last = *before.last().expect("counted");

    // The same VM restored onto another TAP (as after a host restart).
    spec.nic = Some(hatch::vmm::NicSpec {
        tap_name: "hfc-t1".into(),
        mac: "02:00:00:00:fc:01".into(),
    });
    let restored = firecracker
        .restore(&spec, &files)
        .await
        .expect("restore with a network override");
    assert!(runs_in_netns(restored.pid(), &netns));
    assert_eq!(taps_held_by(restored.pid()), vec!["hfc-t1".to_string()]);
    let after = wait_for_count_above(&spec.run_dir, len, last).await;
    assert!(!after.contains(&1), "continued, not rebooted: {after:?}");
    let report = restored.stop(Duration::from_secs(20)).await;
    assert_eq!(report.code, Some(0), "{report:?}");
}

/// A clone (a fork): the snapshot of a VM that runs on is restored into a
/// second VM with its own run directory and TAP. The parent still holds its
/// vsock socket, so the clone needs its own (`vsock_override`); both count on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_restores_beside_its_running_parent_with_its_own_tap_and_vsock() {
    let Some(binary) = firecracker_bin_or_skip("a_clone_restores_beside_its_running_parent_with_its_own_tap_and_vsock")
    else {
        return;
    };
    let dir = run_dir();
    let netns = TestNetns::new();
    netns.add_tap("hfc-p0");
    netns.add_tap("hfc-c0");
    let _cleanup = KillLeftovers(dir.path().to_path_buf()); // dropped before the namespace
    let mut parent = guest_launch(
        &dir.path().join("parent"),
        "vm-fc-parent",
        &counter_guest(COUNTER_DELAY),
    );
    parent.nic = Some(hatch::vmm::NicSpec {
        tap_name: "hfc-p0".into(),
        mac: "02:00:00:00:fc:11".into(),
    });
    let firecracker = backend(binary).in_netns(netns.name());
    let running = firecracker.launch(&parent).await.expect("launch the parent");
    wait_for_count_above(&parent.run_dir, 0, 1).await;
    let files = running
        .save_snapshot(&dir.path().join("snapshot"))
        .await
        .expect("snapshot");
    running.resume().await.expect("the parent runs on");
    let (before, _) = complete_counters(&parent.run_dir);
    let last = *before.last().expect("counted");

    let mut clone = guest_launch(&dir.path().join("clone"), "vm-fc-clone", &counter_guest(COUNTER_DELAY));
    clone.nic = Some(hatch::vmm::NicSpec {
        tap_name: "hfc-c0".into(),
        mac: "02:00:00:00:fc:12".into(),
    });
    let restored = firecracker
        .restore(&clone, &files)
        .await
        .expect("a clone restores while its parent holds its vsock socket");
    assert_eq!(taps_held_by(restored.pid()), vec!["hfc-c0".to_string()]);
    assert_eq!(taps_held_by(running.pid()), vec!["hfc-p0".to_string()]);
    assert!(
        clone
            .run_dir
            .join(hatch::vmm::firecracker::vsock::VSOCK_SOCKET)
            .exists(),
        "the clone's vsock socket is its own"
    );
    let cloned = wait_for_count_above(&clone.run_dir, 0, last).await;
    assert!(
        !cloned.contains(&1),
        "the clone continued the parent's count: {cloned:?}"
    );
    let (parent_len, _) = complete_counters(&parent.run_dir);
    wait_for_count_above(&parent.run_dir, 0, *parent_len.last().unwrap_or(&0)).await;
    restored.stop(Duration::ZERO).await;
    running.stop(Duration::ZERO).await;
}

/// Under the real jailer: Firecracker runs chrooted (its root holds only what
/// the jail put there), as the VMM user, in a new PID namespace, without the
/// daemon's environment, and still boots, prints and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jailed_firecracker_runs_chrooted_as_the_vmm_user_in_its_own_pid_namespace() {
    let test = "jailed_firecracker_runs_chrooted_as_the_vmm_user_in_its_own_pid_namespace";
    let Some(binary) = firecracker_bin_or_skip(test) else {
        return;
    };
    let Some(jailer) = jailer_bin_or_skip(test) else {
        return;
    };
    let dir = run_dir();
    let _cleanup = KillLeftovers(dir.path().to_path_buf());
    // A jailed Firecracker's command line names only its VM id.
    let _jailed_cleanup = KillLeftovers(PathBuf::from("vm-fc-jailed"));
    let spec = guest_launch(dir.path(), "vm-fc-jailed", &counter_guest(COUNTER_DELAY));
    let user = hatch::vmm::privilege::VmmUser::ensure("hatch-vmm").expect("VMM user");
    let jail_base = dir.path().join("jail");
    let jailed = || {
        backend(binary.clone()).jailed(Some(hatch::vmm::firecracker::jail::Jailer {
            binary: jailer.clone(),
            chroot_base: jail_base.clone(),
            user: user.clone(),
        }))
    };
    let backend = jailed();
    let vm = backend.launch(&spec).await.expect("jailed launch");
    let pid = vm.pid();

    let seen = wait_for_count_above(&spec.run_dir, 0, 2).await;
    assert!(!seen.is_empty(), "the jailed guest runs");

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(field("Uid").iter().all(|u| *u == user.uid.to_string()), "{status}");
    assert!(field("Gid").iter().all(|g| *g == user.gid.to_string()), "{status}");
    assert_eq!(field("NSpid").len(), 2, "a new PID namespace: {status}");
    let root: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .expect("its root")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(root.contains(&"firecracker".to_string()), "{root:?}");
    assert!(root.contains(&"vmlinux".to_string()), "{root:?}");
    assert!(
        !root.contains(&"etc".to_string()) && !root.contains(&"home".to_string()),
        "not chrooted: {root:?}"
    );
    let jail_root = jail_base.join("firecracker").join("vm-fc-jailed").join("root");
    assert!(jail_root.join("firecracker").is_file());

    // The vsock device names its socket inside the chroot; the daemon
    // listens next to it, on a socket the VMM user may connect to (and
    // would not, were it root's).
    let api_socket = jail_root.join("firecracker.sock");
    assert_eq!(
        vsock_config(&api_socket).await,
        json!({"guest_cid": 3, "uds_path": "/vsock.sock"})
    );
    assert!(jail_root.join("vsock.sock").exists(), "made by the jailed VMM");
    let agent = agent_listen_path(&backend, &spec);
    assert_eq!(agent, jail_root.join("vsock.sock_1024"));
    let link = listen_for_agent(&backend, &spec).await;
    connect_as(&user, &agent).expect("the VMM user connects to the agent socket");
    let roots = jail_root.join("root-owned.sock");
    let _root_only = std::os::unix::net::UnixListener::bind(&roots).expect("bind");
    std::fs::set_permissions(&roots, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let refused = connect_as(&user, &roots).expect_err("root's own socket");
    assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
    std::fs::remove_file(&roots).expect("remove");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let environ = String::from_utf8_lossy(&environ);
    assert!(!environ.contains("HATCH_") && !environ.contains("AWS_"), "{environ}");

    // Snapshot (written inside the jail, then moved out) and restore into a
    // new jail: the counter goes on from where it stopped.
    let files = vm
        .save_snapshot(&dir.path().join("snapshot"))
        .await
        .expect("jailed snapshot");
    assert!(files.state.is_file() && files.memory.as_ref().is_some_and(|m| m.is_file()));
    vm.stop(Duration::ZERO).await;
    assert!(!hatch::sys::process::is_alive(pid), "stopped");
    let (before, len) = complete_counters(&spec.run_dir);
    let last = *before.last().expect("counted");
    let restored = backend.restore(&spec, &files).await.expect("jailed restore");
    assert!(
        jail_root.join("vsock.sock").exists(),
        "the device came back in the new jail"
    );
    drop(link);
    let _link = listen_for_agent(&backend, &spec).await;
    let after = wait_for_count_above(&spec.run_dir, len, last).await;
    assert!(!after.contains(&1), "not a fresh boot: {after:?}");
    let restored_pid = restored.pid();
    assert!(std::path::Path::new(&format!("/proc/{restored_pid}/root/firecracker")).is_file());

    // A restarted daemon adopts the jailed VMM and can stop it.
    drop(restored);
    let adopted = jailed().adopt(&spec, restored_pid).await.expect("adopt jailed");
    adopted.stop(Duration::from_secs(5)).await;
    assert!(!hatch::sys::process::is_alive(restored_pid), "stopped after adoption");
    assert!(
        !jail_root.exists(),
        "the jail (and its hard links to the VM's files) is removed"
    );
}
