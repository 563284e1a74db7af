//! The Python and TypeScript SDKs (`sdk/`) run their own test suites
//! against a real daemon and a real guest (QEMU TCG, `minimal` image),
//! from inside the Hatch host's network namespace, over TCP as users reach
//! the API: create with user data, wait until ready (through the event
//! stream), check the user data ran (console log, SSH), snapshot, restore,
//! delete, a bad request mapped to an exception naming the field, and every
//! operation of the daemon's `/openapi.json` covered by an SDK method.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use common::e2e::Topology;
use common::hatchd::{TestDaemon, TestKey};
use common::netns::{run_ok, wait_for};

/// Where the SDKs reach the API inside the host namespace (its own loopback,
/// free there: the daemon serves the API on a unix socket).
const API_ADDR: &str = "127.0.0.1:8080";

fn sdk_dir(language: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk").join(language)
}

/// A daemon with the minimal image registered, its API relayed from TCP
/// `API_ADDR` to its socket by socat (the test daemon listens on a socket
/// so the test reaches it from any namespace), and an SSH key for guests.
/// Fields drop in order: the relay and the daemon before the namespaces.
struct Setup {
    relay: Child,
    daemon: TestDaemon,
    image_id: String,
    key: TestKey,
    topo: Topology,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.relay.kill();
        let _ = self.relay.wait();
    }
}

impl Setup {
    async fn start() -> Setup {
        let image = common::images::minimal_image().await;
        let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
        let listen = format!(
            "TCP-LISTEN:{},bind=127.0.0.1,reuseaddr,fork",
            API_ADDR.rsplit(':').next().unwrap()
        );
        let target = format!("UNIX-CONNECT:{}", daemon.socket.display());
        let relay = topo.host().spawn("socat", &[&listen, &target]);
        let url = format!("http://{API_ADDR}/healthz");
        wait_for(Duration::from_secs(10), || {
            let output = topo.host().exec("curl", &["-sf", "-o", "/dev/null", &url]);
            output.status.success().then_some(())
        })
        .expect("the API relay never answered");
        Setup {
            relay,
            daemon,
            image_id,
            key: TestKey::generate(),
            topo,
        }
    }

    /// Runs `program args` in `dir` inside the host namespace with the
    /// variables the SDKs' live tests read.
    fn run_tests(&self, dir: &Path, program: &str, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.topo.host_ns(), program])
            .args(args)
            .current_dir(dir)
            .env("HATCH_URL", format!("http://{API_ADDR}"))
            .env("HATCH_API_KEY", self.daemon.admin_key())
            .env("HATCH_TEST_UNIX_URL", format!("unix:{}", self.daemon.socket.display()))
            .env("HATCH_TEST_IMAGE", &self.image_id)
            .env("HATCH_TEST_SSH_PUBLIC_KEY", &self.key.public)
            .env("HATCH_TEST_SSH_PRIVATE_KEY", &self.key.private)
            .env_remove("HATCH_CA_CERT");
        for (key, value) in extra_env {
            command.env(key, value);
        }
        command.output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }
}

/// Panics with the runner's output unless it passed with nothing skipped.
fn assert_passed(what: &str, output: &Output, skipped_any: fn(&str) -> bool, daemon: &TestDaemon) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("--- {what} ---\n{text}");
    assert!(output.status.success(), "{what} failed:\n{text}\n{}", daemon.log());
    assert!(!skipped_any(&text), "{what} skipped tests:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_drives_a_real_guest() {
    let setup = Setup::start().await;
    let dir = sdk_dir("python");
    let output = setup.run_tests(
        &dir,
        "python3",
        &["-m", "unittest", "discover", "-v", "-s", "tests", "-t", "."],
        &[("PYTHONPATH", "src"), ("PYTHONDONTWRITEBYTECODE", "1")],
    );
    assert_passed(
        "python3 -m unittest",
        &output,
        |text| text.contains("(skipped="),
        &setup.daemon,
    );
    assert!(setup.daemon.vmm_pids().is_empty(), "the SDK test left a VM running");
}

/// Installs the TypeScript SDK's pinned dev dependencies (from the test
/// process's own network namespace, where the registry is reachable; the
/// test namespaces reach nothing outside) and compiles it with its tests.
fn build_typescript(dir: &Path) {
    let dir = dir.to_str().expect("a UTF-8 path");
    if !Path::new(dir).join("node_modules/.bin/tsc").exists() {
        run_ok("npm", &["--prefix", dir, "ci", "--no-audit", "--no-fund"]);
    }
    run_ok("npm", &["--prefix", dir, "run", "build:test"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn typescript_sdk_drives_a_real_guest() {
    let dir = sdk_dir("typescript");
    build_typescript(&dir);
    let setup = Setup::start().await;
    let output = setup.run_tests(&dir, "node", &["--test", "dist-test/tests/"], &[]);
    assert_passed("node --test", &output, |text| text.contains("# SKIP"), &setup.daemon);
    assert!(setup.daemon.vmm_pids().is_empty(), "the SDK test left a VM running");
}
