//! Least privilege for the processes Hatch starts (issue #11, item 5), with
//! a real QEMU guest created through the daemon: the VMM runs as the VMM
//! user under QEMU's seccomp sandbox, inherits none of the daemon's
//! environment, reaches only the descriptors it was given, sits in its own
//! cgroup with the VM's limits (where the host's cgroup v2 allows); dnsmasq
//! runs as `nobody`. Snapshot and restore still work as the VMM user.

use crate::common;

use std::time::Duration;

use common::e2e::{create_ready_vm, Topology};
use common::hatchd::TestKey;
use serde_json::json;

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
        .to_string()
}

fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    raw.split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn pids_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&raw).contains(marker) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn assert_confined(pid: u32, vm: &serde_json::Value) {
    let uid: Vec<u32> = status_field(pid, "Uid")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(uid.iter().all(|u| *u != 0), "QEMU runs with uids {uid:?}");
    let user = nix::unistd::User::from_name("hatch-vmm")
        .unwrap()
        .expect("hatch-vmm was created");
    assert_eq!(uid[0], user.uid.as_raw());
    assert_eq!(
        status_field(pid, "Seccomp"),
        "2",
        "QEMU runs without its seccomp filter"
    );
    let env = environ(pid);
    assert!(
        env.iter().all(|v| !v.starts_with("HATCH_") && !v.starts_with("AWS_")),
        "the VMM inherited {env:?}"
    );
    // Only its own files: its run directory is root's alone, and what QEMU
    // needs it holds as descriptors.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    let id = vm["id"].as_str().unwrap();
    assert!(
        fds.iter().any(|f| f.contains(id) && f.ends_with("serial.log")),
        "{fds:?}"
    );
    // Limits: shown on the VM, and on its cgroup when the host allows them.
    let mem = vm["mem_mib"].as_u64().unwrap();
    let limits = &vm["limits"];
    assert_eq!(limits["memory_max_bytes"].as_u64().unwrap(), (mem + 256) << 20, "{vm}");
    assert_eq!(
        limits["cpu_max"],
        format!("{} 100000", vm["vcpu_count"].as_u64().unwrap() * 100000)
    );
    match hatch::vmm::cgroup::support() {
        hatch::vmm::cgroup::Support::Available(_) => {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            let rel = cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap().to_string();
            assert_eq!(rel, format!("/hatch.slice/{}", vm["id"].as_str().unwrap()));
            let dir = hatch::vmm::cgroup::of_process(pid).expect("in hatch.slice");
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap().trim().to_string();
            assert_eq!(read("memory.max"), limits["memory_max_bytes"].to_string());
            assert_eq!(read("cpu.max"), limits["cpu_max"].as_str().unwrap());
            assert_eq!(read("pids.max"), limits["pids_max"].to_string());
        }
        hatch::vmm::cgroup::Support::Unavailable(why) => {
            eprintln!("SKIPPED cgroup limit checks: {why}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vmm_and_dnsmasq_run_unprivileged_confined_and_without_the_daemons_environment() {
    let image = common::images::minimal_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[("AWS_SECRET_ACCESS_KEY", "not-for-children")]);
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));
    let (_, shown) = daemon.api("GET", &format!("/vms/{}", vm.id), None);
    let pid = shown["pid"].as_u64().expect("pid") as u32;
    assert_confined(pid, &shown);

    // dnsmasq dropped root and inherited nothing either.
    let conf = format!("--conf-file={}", daemon.data_path().display());
    let dnsmasq = pids_with(&conf);
    assert_eq!(dnsmasq.len(), 1, "one dnsmasq for the daemon");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let uid = status_field(dnsmasq[0], "Uid");
    assert!(
        uid.split_whitespace().all(|u| u == nobody.uid.as_raw().to_string()),
        "dnsmasq runs with uids {uid}"
    );
    assert!(environ(dnsmasq[0])
        .iter()
        .all(|v| !v.starts_with("HATCH_") && !v.starts_with("AWS_")));

    // Snapshot and restore as the VMM user: the state goes through a descriptor.
    topo.ssh(&key, "root", vm.ssh_port, "echo kept > /tmp/marker");
    let (status, snap) = daemon.api("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert_eq!(status, 201, "{snap}");
    let (status, restored) = daemon.api("POST", &format!("/vms/{}/restore", vm.id), None);
    assert!(status == 200 || status == 202, "{restored}");
    let restored = daemon.wait_for_vm(&vm.id, "running", Duration::from_secs(120), |v| v["state"] == "running");
    assert_eq!(topo.ssh(&key, "root", vm.ssh_port, "cat /tmp/marker").trim(), "kept");
    let pid = restored["pid"].as_u64().expect("pid") as u32;
    assert_confined(pid, &restored);

    let (status, _) = daemon.api("DELETE", &format!("/vms/{}", vm.id), None);
    assert_eq!(status, 204);
}
