//! A real `hatch serve` for end-to-end tests: its own data directory, its API
//! on a unix socket (reachable from the test whatever namespace the daemon
//! runs in), and its host networking inside a test-made network namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cloudinit::{ssh_keygen, ssh_private_key_path};
use super::netns::TestNetns;

pub struct TestDaemon {
    /// Network namespace the daemon (and so its bridge, TAPs, rules, dnsmasq) lives in.
    pub netns: String,
    pub data_dir: tempfile::TempDir,
    pub socket: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl TestDaemon {
    /// Starts `hatch serve` inside `netns` with a fresh data directory.
    pub fn start(netns: &str, env: &[(&str, &str)]) -> Self {
        let data_dir = tempfile::Builder::new()
            .prefix("hatch-e2e-")
            .tempdir_in("/var/tmp")
            .expect("data dir");
        let socket = data_dir.path().join("api.sock");
        let mut daemon = TestDaemon {
            netns: netns.to_string(),
            socket,
            data_dir,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
        };
        daemon.spawn();
        daemon
    }

    pub fn data_path(&self) -> &Path {
        self.data_dir.path()
    }

    /// The daemon's pid (`ip netns exec` execs it, so it is the child's).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Runs `args` in the daemon's own mount namespace (`ip netns exec`
    /// gave it one): a mount made there is seen by the daemon alone and
    /// goes away with it. Returns stdout.
    pub fn in_mount_namespace(&self, args: &[&str]) -> String {
        let output = Command::new("nsenter")
            .args(["-t", &self.pid().to_string(), "-m", "--"])
            .args(args)
            .output()
            .expect("nsenter");
        assert!(
            output.status.success(),
            "{args:?} in the daemon's mount namespace: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_path().join("daemon.log"))
            .expect("daemon log");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.netns, env!("CARGO_BIN_EXE_hatch"), "serve"])
            .env("HATCH_DATA_DIR", self.data_path())
            .env("HATCH_HTTP_ADDR", format!("unix:{}", self.socket.display()))
            .env("HATCH_HYPERVISOR", "qemu")
            // The shared test images are registered from where they were built.
            .env("HATCH_IMAGE_IMPORT_DIRS", super::images::shared_dir())
            .env("RUST_LOG", "hatch=debug,info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let _ = std::fs::remove_file(&self.socket);
        self.child = Some(command.spawn().expect("spawn hatch serve"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.socket.exists() && self.request("GET", "/healthz", None).0 == 200 {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("hatch serve exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("hatch serve did not come up:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_path().join("daemon.log")).unwrap_or_default()
    }

    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.data_path().join("admin.key"))
            .expect("admin.key")
            .trim()
            .to_string()
    }

    /// Kills the daemon with SIGKILL: no chance to clean anything up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `ip netns exec` execs the daemon, so the child pid is the daemon.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the daemon to exit;
    /// whether it exited in time.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Starts the daemon again on the same data directory (after `kill9`
    /// or `terminate`).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Starts the daemon again on the same data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Like [`TestDaemon::restart`], with these variables added or changed
    /// (for this start and later ones).
    pub fn restart_with(&mut self, env: &[(&str, &str)]) {
        for (key, value) in env {
            self.env.retain(|(k, _)| k != key);
            self.env.push((key.to_string(), value.to_string()));
        }
        self.restart();
    }

    /// An authenticated API call; returns status and JSON body (Null if none).
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let key = self.admin_key();
        self.request_with_key(method, path, body, Some(&key))
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.request_with_key(method, path, body, None)
    }

    pub fn request_with_key(&self, method: &str, path: &str, body: Option<&Value>, key: Option<&str>) -> (u16, Value) {
        // Above the longest `?wait=ready&timeout=` the tests ask for (600 s), so
        // the API's own timeout answers first, even on a loaded host.
        self.request_within(method, path, body, key, &[], Duration::from_secs(900))
    }

    /// An authenticated call with extra request headers (`Name: value`).
    pub fn api_with_headers(&self, method: &str, path: &str, body: Option<&Value>, headers: &[&str]) -> (u16, Value) {
        let key = self.admin_key();
        self.request_within(method, path, body, Some(&key), headers, Duration::from_secs(900))
    }

    /// An authenticated call whose client gives up (closes the connection)
    /// after `after`, as `curl -m` does; status 0 when it gave up.
    pub fn api_cut_short(&self, method: &str, path: &str, body: Option<&Value>, after: Duration) -> (u16, Value) {
        let key = self.admin_key();
        self.request_within(method, path, body, Some(&key), &[], after)
    }

    fn request_within(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
        headers: &[&str],
        max_time: Duration,
    ) -> (u16, Value) {
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "--max-time".into(),
            format!("{:.3}", max_time.as_secs_f64()),
            "--unix-socket".into(),
            self.socket.display().to_string(),
            "-X".into(),
            method.into(),
            "-o".into(),
            "-".into(),
            "-w".into(),
            "\n%{http_code}".into(),
        ];
        if let Some(key) = key {
            args.push("-H".into());
            args.push(format!("Authorization: Bearer {key}"));
        }
        for header in headers {
            args.push("-H".into());
            args.push(header.to_string());
        }
        if let Some(body) = body {
            args.extend([
                "-H".into(),
                "Content-Type: application/json".into(),
                "--data-binary".into(),
                body.to_string(),
            ]);
        }
        args.push(format!("http://hatch{path}"));
        let output = Command::new("curl").args(&args).output().expect("curl");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        let status: u16 = status.trim().parse().unwrap_or(0);
        let json = serde_json::from_str(body).unwrap_or(if body.is_empty() {
            Value::Null
        } else {
            Value::String(body.to_string())
        });
        (status, json)
    }

    /// Runs the `hatch` CLI against this daemon with `--json`; its stdout.
    fn cli_stdout(&self, args: &[&str]) -> Vec<u8> {
        let output = Command::new(env!("CARGO_BIN_EXE_hatch"))
            .args(args)
            .arg("--json")
            .env("HATCH_URL", format!("unix:{}", self.socket.display()))
            .env("HATCH_API_KEY", self.admin_key())
            .output()
            .expect("hatch CLI");
        assert!(
            output.status.success(),
            "hatch {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// Runs the `hatch` CLI against this daemon (`--json` output parsed).
    pub fn cli_json(&self, args: &[&str]) -> Value {
        serde_json::from_slice(&self.cli_stdout(args)).unwrap_or_else(|e| panic!("hatch {args:?} printed no JSON: {e}"))
    }

    /// Every recorded event of the VM `vm_id`, oldest first, read with
    /// `hatch events --json` (which also shows a deleted VM's).
    pub fn events_of(&self, vm_id: &str) -> Vec<Value> {
        self.all_events()
            .into_iter()
            .filter(|event| event["vm_id"] == vm_id)
            .collect()
    }

    /// Every recorded event, oldest first (`hatch events --json`).
    pub fn all_events(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.cli_stdout(&["events", "--since", "0"]))
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("one JSON event per line"))
            .collect()
    }

    /// Polls `GET /vms/{id}` until `done` holds for it.
    pub fn wait_for_vm(&self, id: &str, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, vm) = self.api("GET", &format!("/vms/{id}"), None);
            if status == 200 && done(&vm) {
                return vm;
            }
            if Instant::now() > deadline {
                panic!("VM {id} never became {what}; last: {status} {vm}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the background pass has stored snapshot `snapshot_id`
    /// of VM `vm_id` (`durable`); returns the snapshot as listed then.
    pub fn wait_snapshot_durable(&self, vm_id: &str, snapshot_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (_, list) = self.api("GET", &format!("/vms/{vm_id}/snapshots"), None);
            let found = list
                .as_array()
                .and_then(|all| all.iter().find(|s| s["id"] == snapshot_id).cloned())
                .unwrap_or_else(|| panic!("snapshot {snapshot_id} is not listed: {list}\n{}", self.log()));
            if found["durable"] == true {
                return found;
            }
            assert!(Instant::now() < deadline, "never stored: {found}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Pids of VMM processes running out of this daemon's data directory.
    pub fn vmm_pids(&self) -> Vec<u32> {
        let marker = format!("{}/vms/", self.data_path().display());
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&raw);
            if cmdline.contains(&marker) && !cmdline.contains(" serve") {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
        // The daemon leaves VMs running by design; a test's VMs die with it.
        for pid in self.vmm_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // A killed daemon leaves dnsmasq's hosts files outside its data directory.
        let _ = std::fs::remove_dir_all(hatch::net::dnsmasq::Paths::new(&self.data_path().join("dhcp")).reread);
        if std::thread::panicking() {
            eprintln!("--- hatch serve log ---\n{}", self.log());
        }
    }
}

/// A throwaway SSH key pair made with the real ssh-keygen.
pub struct TestKey {
    _dir: tempfile::TempDir,
    pub private: PathBuf,
    pub public: String,
}

impl TestKey {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("key dir");
        let public = ssh_keygen(dir.path(), "ed25519", None, "hatch-test");
        let private = ssh_private_key_path(dir.path(), "ed25519", None);
        TestKey {
            _dir: dir,
            private,
            public,
        }
    }

    /// `ssh` arguments for a non-interactive login with this key.
    pub fn ssh_args(&self, user: &str, host: &str, port: u16) -> Vec<String> {
        vec![
            "-i".into(),
            self.private.display().to_string(),
            "-p".into(),
            port.to_string(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
            // A guest that goes away mid-session must not hang the test.
            "-o".into(),
            "ServerAliveInterval=2".into(),
            "-o".into(),
            "ServerAliveCountMax=3".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            format!("{user}@{host}"),
        ]
    }

    /// One `ssh` run of `command` as `user` on `host:port` from inside
    /// `netns`.
    pub fn ssh_once(&self, netns: &TestNetns, user: &str, host: &str, port: u16, command: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", netns.name(), "ssh"])
            .args(self.ssh_args(user, host, port))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// Like [`ssh_once`](Self::ssh_once), retried while the guest's SSH
    /// server comes up, until `timeout`; stdout of the first success.
    pub fn ssh_until_ok(
        &self,
        netns: &TestNetns,
        user: &str,
        host: &str,
        port: u16,
        command: &str,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.ssh_once(netns, user, host, port, command);
            if output.status.success() {
                return String::from_utf8_lossy(&output.stdout).into_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "ssh -p {port} {user}@{host} {command:?} never succeeded: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
