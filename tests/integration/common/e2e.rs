//! Two test-made "hosts" for end-to-end tests: the Hatch host (a network
//! namespace the daemon runs in) and a client host connected to it by a veth
//! pair, from which users SSH to `host:ssh_port`.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::hatchd::{TestDaemon, TestKey};
use super::netns::TestNetns;

pub struct Topology {
    // Field order matters: the client goes first, then the host.
    client: TestNetns,
    host: TestNetns,
    /// Address of the Hatch host on the link to the client.
    host_addr: String,
}

impl Topology {
    pub fn new() -> Self {
        let host = TestNetns::new();
        let client = TestNetns::new();
        let link = host.add_client(&client, 1);
        Topology {
            client,
            host,
            host_addr: link.host_ip.to_string(),
        }
    }

    /// The start of an end-to-end test: a fresh topology, `hatch serve`
    /// running on its Hatch host (`env` as for [`TestDaemon::start`]) and
    /// `image` registered with it (its id last). Bind the three in this
    /// order so the daemon is dropped before the namespaces.
    pub fn with_daemon(image: &hatch::model::Image, env: &[(&str, &str)]) -> (Topology, TestDaemon, String) {
        let topo = Topology::new();
        let daemon = TestDaemon::start(topo.host_ns(), env);
        let image_id = topo.register_image(&daemon, image);
        (topo, daemon, image_id)
    }

    pub fn host_ns(&self) -> &str {
        self.host.name()
    }

    /// The Hatch host's namespace, to run test code where the daemon's
    /// proxy listens (on its loopback).
    pub fn host(&self) -> &TestNetns {
        &self.host
    }

    pub fn client_ns(&self) -> &str {
        self.client.name()
    }

    /// The Hatch host's address as other hosts reach it.
    pub fn host_addr(&self) -> &str {
        &self.host_addr
    }

    /// Registers an image's files with the daemon through `POST /images`.
    pub fn register_image(&self, daemon: &TestDaemon, image: &hatch::model::Image) -> String {
        let mut body = json!({"name": image.name, "login_user": image.login_user, "boot_args": image.boot_args});
        let kernel = image
            .kernel_path
            .as_ref()
            .or(image.bzimage_path.as_ref())
            .expect("image has a kernel");
        body["kernel_path"] = json!(kernel);
        if let Some(initrd) = &image.initrd_path {
            body["initrd_path"] = json!(initrd);
        }
        if let Some(rootfs) = &image.rootfs_path {
            body["rootfs_path"] = json!(rootfs);
        }
        let (status, registered) = daemon.api("POST", "/images", Some(&body));
        assert_eq!(status, 201, "registering the image failed: {registered}");
        registered["id"].as_str().expect("image id").to_string()
    }

    /// Runs `command` in the guest over SSH from the client host through the
    /// forwarded port, retrying while the guest's SSH server comes up.
    pub fn ssh(&self, key: &TestKey, user: &str, port: u16, command: &str) -> String {
        key.ssh_until_ok(
            &self.client,
            user,
            &self.host_addr,
            port,
            command,
            Duration::from_secs(60),
        )
    }

    /// One SSH attempt; whether it succeeded (for commands that end the session).
    pub fn ssh_status(&self, key: &TestKey, user: &str, port: u16, command: &str) -> bool {
        key.ssh_once(&self.client, user, &self.host_addr, port, command)
            .status
            .success()
    }

    /// An SSH session from the client host through the forwarded `port`,
    /// held open (established, as conntrack sees it) until dropped.
    pub fn hold_ssh_session(&self, key: &TestKey, port: u16) -> SshSession {
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.client_ns(), "ssh"])
            .args(key.ssh_args("root", self.host_addr(), port))
            .arg("echo connected; sleep 600")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("ssh session");
        let mut first_line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut first_line,
        )
        .unwrap();
        assert_eq!(first_line.trim(), "connected");
        SshSession(child)
    }

    /// Runs a program inside the Hatch host's namespace and returns stdout.
    pub fn on_host(&self, program: &str, args: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", self.host.name(), program])
            .args(args)
            .output()
            .expect("ip netns exec");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `grep "<mac>" /var/lib/hatch/dhcp/dnsmasq.conf`, as the guide says.
    pub fn reservation_exists(&self, daemon: &TestDaemon, mac: &str, ip: &str) -> bool {
        let conf = std::fs::read_to_string(daemon.data_path().join("dhcp/dnsmasq.conf")).unwrap_or_default();
        conf.lines().any(|line| line.contains(mac) && line.contains(ip))
    }

    /// `iptables -t nat -L PREROUTING -n -v | grep <port>`, as the guide says.
    pub fn forward_listed(&self, port: u16) -> bool {
        self.on_host("iptables", &["-t", "nat", "-L", "PREROUTING", "-n", "-v"])
            .lines()
            .any(|line| line.contains(&port.to_string()))
    }

    /// Everything the deleted VMs `seen` held is gone, and nothing of
    /// Hatch's is left: no TAP, VMM, VM directory or snapshot artefact.
    pub fn assert_host_clean<'a>(&self, daemon: &TestDaemon, seen: impl IntoIterator<Item = &'a VmView>) {
        for vm in seen {
            self.assert_nothing_left(daemon, vm);
        }
        let links = self.on_host("ip", &["-o", "link", "show"]);
        assert!(!links.contains("fctap-"), "a TAP is left:\n{links}");
        assert!(daemon.vmm_pids().is_empty(), "a VMM process is left");
        let vm_dirs: Vec<_> = std::fs::read_dir(daemon.data_path().join("vms"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(vm_dirs.is_empty(), "VM directories are left: {vm_dirs:?}");
        let artefacts = files_under(&daemon.data_path().join("snapshots"));
        assert!(artefacts.is_empty(), "snapshot artefacts are left: {artefacts:?}");
    }

    /// After delete: no process, TAP, rule, reservation or directory of the VM.
    pub fn assert_nothing_left(&self, daemon: &TestDaemon, vm: &VmView) {
        assert!(
            !daemon.data_path().join("vms").join(&vm.id).exists(),
            "the VM's directory is still there"
        );
        let links = self.on_host("ip", &["-o", "link", "show"]);
        assert!(
            !links.contains(&vm.tap_name),
            "TAP {} still exists:\n{links}",
            vm.tap_name
        );
        let rules = self.on_host("iptables-save", &[]);
        assert!(
            !rules.lines().any(|l| l.contains(&format!("--dport {} ", vm.ssh_port)) || l.contains(&format!("{}:22", vm.guest_ip))),
            "a forward for {} is still there:\n{rules}",
            vm.id
        );
        assert!(
            !self.reservation_exists(daemon, &vm.guest_mac, &vm.guest_ip),
            "the DHCP reservation is still there"
        );
        let marker = daemon.data_path().join("vms").join(&vm.id).display().to_string();
        for pid in daemon.vmm_pids() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(&marker),
                "VMM {pid} of {} still runs",
                vm.id
            );
        }
    }
}

/// An open SSH session (see [`Topology::hold_ssh_session`]); closed when dropped.
pub struct SshSession(std::process::Child);

impl Drop for SshSession {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file below `dir` (none if it does not exist).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// `POST /vms?wait=ready` for `image_id` with `key` authorised and the
/// fields of `extra`; asserts it was created and answers SSH.
pub fn create_ready_vm(daemon: &TestDaemon, image_id: &str, key: &TestKey, extra: Value) -> VmView {
    let mut body = json!({"image_id": image_id, "ssh_authorized_keys": [key.public]});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    let (status, vm) = daemon.api("POST", "/vms?wait=ready&timeout=180", Some(&body));
    assert_eq!(status, 201, "{vm}\n{}", daemon.log());
    VmView::from(&vm)
}

/// The fields of a networked VM object the tests look at.
#[derive(Debug, Clone)]
pub struct VmView {
    pub id: String,
    pub state: String,
    pub guest_ip: String,
    pub guest_mac: String,
    pub tap_name: String,
    pub ssh_port: u16,
}

impl From<&Value> for VmView {
    fn from(vm: &Value) -> Self {
        let text = |key: &str| vm[key].as_str().unwrap_or_default().to_string();
        VmView {
            id: text("id"),
            state: text("state"),
            guest_ip: text("guest_ip"),
            guest_mac: text("guest_mac"),
            tap_name: text("tap_name"),
            ssh_port: vm["ssh_port"].as_u64().unwrap_or(0) as u16,
        }
    }
}

/// What a snapshot must keep of a running `minimal` guest: a file on its
/// (RAM-backed) root and a process that exists only in memory.
pub struct GuestState {
    marker: String,
    sleeper_pid: String,
    sleeper_cmdline: String,
}

impl GuestState {
    /// Writes `marker` to /root/marker and starts a long `sleep` in the guest.
    pub fn leave(topo: &Topology, key: &TestKey, port: u16, marker: &str) -> GuestState {
        let sleeper_cmdline = "sleep 100000".to_string();
        let pid = topo.ssh(
            key,
            "root",
            port,
            &format!("echo {marker} > /root/marker; {sleeper_cmdline} </dev/null >/dev/null 2>&1 & echo $!"),
        );
        let sleeper_pid = pid.trim().to_string();
        assert!(!sleeper_pid.is_empty(), "no pid for the guest's sleeper");
        GuestState {
            marker: marker.to_string(),
            sleeper_pid,
            sleeper_cmdline,
        }
    }

    /// Asserts the marker file and the in-RAM process are both still there.
    pub fn assert_survived(&self, topo: &Topology, key: &TestKey, port: u16) {
        assert_eq!(topo.ssh(key, "root", port, "cat /root/marker").trim(), self.marker);
        let cmdline = topo.ssh(
            key,
            "root",
            port,
            &format!("tr '\\0' ' ' < /proc/{}/cmdline", self.sleeper_pid),
        );
        assert_eq!(
            cmdline.trim(),
            self.sleeper_cmdline,
            "the process in RAM did not survive"
        );
    }
}
