//! The `hatch` binary: `serve --help`, start-up errors, and the client
//! commands against a real daemon over TCP and a Unix socket.
//!
//! A daemon prepares host networking (bridge, firewall, dnsmasq), so every
//! `hatch serve` here runs inside a test network namespace; client commands
//! reaching it over TCP run in that namespace too (its 127.0.0.1 is its own).

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use common::daemon::{fake_boot_files, hatch_command_in};
use common::netns::TestNetns;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// `hatch` in this namespace: only for what never reaches orchestration.
fn hatch(args: &[&str], vars: &[(&str, &str)]) -> Output {
    hatch_command_in(None, args, vars).output().expect("run hatch")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// A `hatch serve` child inside its own network namespace, killed (and the
/// namespace removed) if the test ends before it stopped.
struct Daemon {
    child: Child,
    /// What it printed after "listening on ".
    listening: String,
    netns: TestNetns,
}

impl Daemon {
    fn start(vars: &[(&str, &str)]) -> Daemon {
        let netns = TestNetns::new();
        let mut child = hatch_command_in(Some(&netns), &["serve"], vars)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let listening = rx.recv_timeout(Duration::from_secs(30));
        let mut daemon = Daemon {
            child,
            listening: String::new(),
            netns,
        };
        daemon.listening = listening.expect("the daemon did not report its address");
        daemon
    }

    /// A client command run in the daemon's namespace.
    fn run(&self, args: &[&str], env: &[(&'static str, String)]) -> Output {
        let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        hatch_command_in(Some(&self.netns), args, &vars)
            .output()
            .expect("run hatch")
    }

    /// SIGTERM, then the exit status (waits up to 15 s).
    fn terminate(&mut self) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        for _ in 0..150 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the daemon did not stop on SIGTERM");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

const VARIABLES: &[&str] = &[
    "HATCH_DATA_DIR",
    "HATCH_HTTP_ADDR",
    "HATCH_TLS_CERT",
    "HATCH_TLS_KEY",
    "HATCH_BRIDGE_NAME",
    "HATCH_BRIDGE_CIDR",
    "HATCH_SSH_ALLOWED_CIDR",
    "HATCH_SSH_PORT_MIN",
    "HATCH_SSH_PORT_MAX",
    "HATCH_VM_TO_VM",
    "HATCH_EGRESS_DENY_CIDRS",
    "HATCH_HYPERVISOR",
    "HATCH_QEMU_ACCEL",
    "HATCH_FIRECRACKER_BIN",
    "HATCH_QEMU_BIN",
    "HATCH_DEFAULT_IMAGE",
    "HATCH_DEFAULT_VCPU",
    "HATCH_DEFAULT_MEM_MIB",
    "HATCH_PROXY_ADDR",
    "HATCH_PROXY_BASE_DOMAIN",
    "HATCH_PROXY_TLS_CERT",
    "HATCH_PROXY_TLS_KEY",
    "HATCH_PROXY_HSTS",
    "HATCH_PROXY_WAKE_TIMEOUT",
    "HATCH_PROXY_UPSTREAM_TIMEOUT",
    "HATCH_IDLE_CHECK_INTERVAL",
    "HATCH_IDLE_TIMEOUT",
    "HATCH_IMAGE_CACHE_DIR",
    "HATCH_DEBIAN_MIRROR",
    "HATCH_S3_ENDPOINT",
    "HATCH_S3_BUCKET",
    "HATCH_S3_REGION",
    "HATCH_S3_ACCESS_KEY",
    "HATCH_S3_SECRET_KEY",
    "HATCH_SNAPSHOT_KEEP",
    "HATCH_RATE_LIMIT",
    "HATCH_RATE_BURST",
];

#[test]
fn serve_help_lists_every_variable_with_its_default_and_hides_secrets() {
    let output = hatch(&["serve", "--help"], &[("HATCH_S3_SECRET_KEY", "top-secret-value")]);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for variable in VARIABLES {
        let line = help
            .lines()
            .find(|l| l.contains(&format!("[env: {variable}")))
            .unwrap_or_else(|| panic!("{variable} missing from serve --help:\n{help}"));
        assert!(line.contains("[default: "), "{variable} has no default in: {line}");
    }
    for (variable, default) in [
        ("HATCH_DATA_DIR", "/var/lib/hatch"),
        ("HATCH_HTTP_ADDR", "127.0.0.1:8080"),
        ("HATCH_BRIDGE_NAME", "fcbridge"),
        ("HATCH_BRIDGE_CIDR", "192.168.241.1/24"),
        ("HATCH_SSH_PORT_MIN", "2200"),
        ("HATCH_SSH_PORT_MAX", "2299"),
        ("HATCH_VM_TO_VM", "deny"),
        ("HATCH_EGRESS_DENY_CIDRS", "169.254.0.0/16"),
    ] {
        let line = help.lines().find(|l| l.contains(&format!("[env: {variable}"))).unwrap();
        assert!(line.contains(&format!("[default: {default}]")), "{line}");
    }
    assert!(!help.contains("top-secret-value"));
}

#[test]
fn an_invalid_variable_stops_startup_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().unwrap();
    // The configuration is checked before anything touches the host; the
    // namespace only guards against a regression that lets one through.
    let netns = TestNetns::new();
    for (variable, value) in [
        ("HATCH_SSH_PORT_MIN", "abc"),
        ("HATCH_BRIDGE_CIDR", "10.0.0.0/8"),
        ("HATCH_IDLE_TIMEOUT", "soon"),
        ("HATCH_RATE_LIMIT", "twenty"),
    ] {
        let output = hatch_command_in(
            Some(&netns),
            &["serve"],
            &[
                ("HATCH_DATA_DIR", data),
                (variable, value),
                ("HATCH_HTTP_ADDR", "127.0.0.1:0"),
            ],
        )
        .output()
        .expect("run hatch");
        assert!(!output.status.success(), "{variable}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
    assert!(!data_dir.exists(), "nothing created before the configuration is valid");
}

fn admin_env(data: &str, url: &str) -> Vec<(&'static str, String)> {
    vec![("HATCH_DATA_DIR", data.to_string()), ("HATCH_URL", url.to_string())]
}

#[test]
fn client_commands_against_a_tcp_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let mut daemon = Daemon::start(&[("HATCH_DATA_DIR", data), ("HATCH_HTTP_ADDR", "127.0.0.1:0")]);
    let env = admin_env(data, &format!("http://{}", daemon.listening));
    // Image files are registered from the default import directory.
    let import = dir.path().join("data/import");
    std::fs::create_dir_all(&import).unwrap();
    let (elf, _, initrd) = fake_boot_files(&import);

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "a data dir the daemon creates is owner-only");

    let keys = stdout_json(&daemon.run(&["key", "list", "--json"], &env));
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["name"], "admin");

    let image = stdout_json(&daemon.run(
        &[
            "image",
            "register",
            "--json",
            "--name",
            "mini",
            "--kernel",
            elf.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
        ],
        &env,
    ));
    assert_eq!(image["name"], "mini");
    let table = daemon.run(&["image", "list"], &env);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("ID") && table.contains("mini"), "{table}");

    let template = stdout_json(&daemon.run(
        &[
            "template", "create", "--json", "--name", "t", "--image", "mini", "--mem", "512",
        ],
        &env,
    ));
    assert_eq!(template["image_id"], image["id"]);
    assert_eq!(
        stdout_json(&daemon.run(&["template", "list", "--json"], &env))
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A bad request is reported with the field and a failing exit status.
    let failed = daemon.run(&["vm", "create", "--vcpu", "0", "--no-ssh-key"], &env);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("vcpu_count"));

    // A revoked key stops working.
    let created = stdout_json(&daemon.run(&["key", "create", "ci", "--json"], &env));
    let key = created["key"].as_str().unwrap().to_string();
    let mut with_key = env.clone();
    with_key.push(("HATCH_API_KEY", key));
    assert!(daemon.run(&["template", "list"], &with_key).status.success());
    assert!(daemon
        .run(&["key", "revoke", created["id"].as_str().unwrap()], &env)
        .status
        .success());
    let refused = daemon.run(&["template", "list"], &with_key);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));

    assert!(daemon.terminate().success(), "clean exit on SIGTERM");

    // Without a daemon, image list reads the database directly.
    let offline = stdout_json(&daemon.run(&["image", "list", "--json"], &env));
    assert_eq!(offline[0]["id"], image["id"]);
    let unreachable = daemon.run(&["template", "list"], &env);
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach the hatch daemon"));
}

#[test]
fn a_unix_socket_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let socket: PathBuf = dir.path().join("hatch.sock");
    let addr = format!("unix:{}", socket.display());
    let mut daemon = Daemon::start(&[("HATCH_DATA_DIR", data), ("HATCH_HTTP_ADDR", &addr)]);
    assert_eq!(daemon.listening, addr);
    let env = admin_env(data, &addr);
    assert_eq!(
        stdout_json(&daemon.run(&["template", "list", "--json"], &env)),
        serde_json::json!([])
    );
    assert!(daemon.terminate().success());
    assert!(!Path::new(&socket).exists(), "socket removed on exit");
}

#[test]
fn a_local_key_regains_access_without_the_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let mut daemon = Daemon::start(&[("HATCH_DATA_DIR", data), ("HATCH_HTTP_ADDR", "127.0.0.1:0")]);
    std::fs::remove_file(dir.path().join("data/admin.key")).unwrap();
    let env = admin_env(data, &format!("http://{}", daemon.listening));
    assert!(
        !daemon.run(&["template", "list"], &env).status.success(),
        "no key, no access"
    );

    let created = stdout_json(&daemon.run(&["key", "create", "rescue", "--local", "--json"], &env));
    let mut with_key = env.clone();
    with_key.push(("HATCH_API_KEY", created["key"].as_str().unwrap().to_string()));
    assert_eq!(
        stdout_json(&daemon.run(&["template", "list", "--json"], &with_key)),
        serde_json::json!([])
    );
    assert!(daemon.terminate().success());
}

#[test]
fn member_keys_quotas_and_the_audit_log_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let mut daemon = Daemon::start(&[("HATCH_DATA_DIR", data), ("HATCH_HTTP_ADDR", "127.0.0.1:0")]);
    let env = admin_env(data, &format!("http://{}", daemon.listening));

    let created = stdout_json(&daemon.run(
        &[
            "key",
            "create",
            "ci",
            "--role",
            "member",
            "--max-vms",
            "2",
            "--max-mem-mib",
            "1024",
            "--json",
        ],
        &env,
    ));
    assert_eq!(created["role"], "member");
    assert_eq!(created["quotas"]["max_vms"], 2);
    assert_eq!(created["quotas"]["max_routes"], serde_json::Value::Null);
    let mut as_member = env.clone();
    as_member.push(("HATCH_API_KEY", created["key"].as_str().unwrap().to_string()));

    let me = stdout_json(&daemon.run(&["key", "me", "--json"], &as_member));
    assert_eq!(
        (me["role"].as_str(), me["usage"]["vms"].as_u64()),
        (Some("member"), Some(0))
    );
    let table = String::from_utf8(daemon.run(&["key", "me"], &as_member).stdout).unwrap();
    assert!(table.contains("max_vms") && table.contains("unlimited"), "{table}");

    // A member cannot manage keys or read the audit log.
    for args in [&["key", "list"][..], &["key", "create", "x"], &["audit"]] {
        let refused = daemon.run(args, &as_member);
        assert!(!refused.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("403 forbidden"),
            "{args:?}"
        );
    }
    // Bad roles and quotas never reach the daemon's database.
    let bad = daemon.run(&["key", "create", "x", "--role", "root"], &env);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("role"));
    let bad = daemon.run(&["key", "create", "x", "--max-vms", "-1"], &env);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--max-vms"));

    // Quotas are replaced; the audit log shows it all, newest first.
    let id = created["id"].as_str().unwrap();
    let updated = stdout_json(&daemon.run(&["key", "quotas", id, "--max-vms", "5", "--json"], &env));
    assert_eq!(
        (
            updated["quotas"]["max_vms"].as_u64(),
            updated["quotas"]["max_mem_mib"].as_u64()
        ),
        (Some(5), None)
    );
    let audit = stdout_json(&daemon.run(&["audit", "--limit", "3", "--json"], &env));
    let seen: Vec<(&str, &str, u64)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap(),
                e["path"].as_str().unwrap(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("PATCH", format!("/keys/{id}").as_str(), 200),
            ("POST", "/keys", 400),
            ("POST", "/keys", 403),
        ]
    );
    assert!(daemon.terminate().success());
}
