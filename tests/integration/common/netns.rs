//! Throw-away network namespaces for tests that create links, addresses,
//! firewall rules or DHCP servers: nothing of it touches the host's own
//! namespace, and everything goes away when the [`TestNetns`] is dropped
//! (also when the test panics).
//!
//! Code runs inside a namespace either as a program (`exec`, `spawn`:
//! `ip netns exec`) or in-process on a dedicated thread that entered the
//! namespace with setns (`run`, `block_on`). Processes spawned from such a
//! thread (tokio's included) inherit the namespace, so a `hatch::net::Network`
//! driven by `block_on` manages the namespace's bridge, iptables and dnsmasq.

use std::future::Future;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

/// A network namespace `hatch-t-<random>` with `lo` up, deleted on drop
/// after killing every process still inside it.
pub struct TestNetns {
    name: String,
}

fn describe(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a program (no shell) and panics with its stderr if it fails.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(program, args)));
    assert!(
        output.status.success(),
        "{} failed ({}): {}",
        describe(program, args),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl TestNetns {
    pub fn new() -> Self {
        let suffix: u32 = rand::thread_rng().gen();
        let name = format!("hatch-t-{suffix:08x}");
        run_ok("ip", &["netns", "add", &name]);
        let ns = TestNetns { name };
        ns.ip(&["link", "set", "dev", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> args...`, panicking on failure; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    fn exec_command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs a program inside the namespace and returns its output.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.exec_command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} in {}: {e}", describe(program, args), self.name))
    }

    /// Like [`exec`](Self::exec) but panics on failure; returns stdout.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let output = self.exec(program, args);
        assert!(
            output.status.success(),
            "{} in {} failed ({}): {}",
            describe(program, args),
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts a long-running program inside the namespace (output
    /// discarded). It is killed when the namespace is dropped at the latest.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Child {
        self.exec_command(program, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} in {}: {e}", describe(program, args), self.name))
    }

    fn enter(&self) {
        let path = format!("/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns into {} failed: {e}", self.name));
    }

    /// Runs `f` on a new thread that entered this namespace; a panic in
    /// `f` is re-raised in the caller.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                self.enter();
                f()
            });
            handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs the future made by `make` to completion on a current-thread
    /// tokio runtime inside this namespace. Tasks it spawns and programs
    /// they start live in the namespace too.
    pub fn block_on<F: Future>(&self, make: impl FnOnce() -> F + Send) -> F::Output
    where
        F::Output: Send,
    {
        self.run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(make())
        })
    }

    /// A runtime that keeps running inside this namespace until dropped,
    /// for code that must outlive one `block_on` (a supervisor task, a
    /// server). Drop it before the namespace.
    pub fn runtime(&self) -> NsRuntime {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let path = format!("/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("namespace file");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            ready_tx.send(runtime.handle().clone()).expect("report handle");
            runtime.block_on(async move {
                let _ = stop_rx.await;
            });
        });
        let handle = ready_rx.recv().expect("runtime thread started");
        NsRuntime {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// A TAP device `tap`, up, for a VMM running inside this namespace.
    pub fn add_tap(&self, tap: &str) {
        self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
        self.ip(&["link", "set", tap, "up"]);
    }

    /// Names of the links in this namespace (from `ip -j`).
    pub fn links(&self) -> Vec<String> {
        let json: serde_json::Value = serde_json::from_str(&self.ip(&["-j", "link", "show"])).expect("ip -j output");
        json.as_array()
            .into_iter()
            .flatten()
            .filter_map(|link| link["ifname"].as_str().map(String::from))
            .collect()
    }

    /// The bridge a link is enslaved to, if any.
    pub fn master_of(&self, link: &str) -> Option<String> {
        let json: serde_json::Value =
            serde_json::from_str(&self.ip(&["-j", "link", "show", "dev", link])).expect("ip -j output");
        json[0]["master"].as_str().map(String::from)
    }

    /// `iptables -t <table> -S` inside the namespace.
    pub fn iptables_rules(&self, table: &str) -> String {
        self.exec_ok("iptables", &["-w", "-t", table, "-S"])
    }

    /// A veth pair: `local` here, `remote` inside `peer`, both up.
    pub fn veth_to(&self, peer: &TestNetns, local: &str, remote: &str) {
        self.ip(&[
            "link",
            "add",
            local,
            "type",
            "veth",
            "peer",
            "name",
            remote,
            "netns",
            peer.name(),
        ]);
        self.ip(&["link", "set", "dev", local, "up"]);
        peer.ip(&["link", "set", "dev", remote, "up"]);
    }

    /// Makes `client` another host reachable from this namespace over a
    /// point-to-point veth on 10.250.`subnet`.0/24: this side .1, the client
    /// .2 with its default route through this side.
    pub fn add_client(&self, client: &TestNetns, subnet: u8) -> ClientLink {
        let local = format!("hc{subnet}");
        self.veth_to(client, &local, "eth0");
        let host_ip = Ipv4Addr::new(10, 250, subnet, 1);
        let client_ip = Ipv4Addr::new(10, 250, subnet, 2);
        self.ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &local]);
        client.ip(&["addr", "add", &format!("{client_ip}/24"), "dev", "eth0"]);
        client.ip(&["route", "add", "default", "via", &host_ip.to_string()]);
        ClientLink { host_ip, client_ip }
    }

    /// Plugs `guest` in like a VM's NIC: a veth whose end here is named
    /// `tap_name` (to be enslaved to the bridge, as a TAP would be) and
    /// whose end in `guest` is `eth0` with the VM's MAC.
    pub fn plug_guest(&self, guest: &TestNetns, tap_name: &str, mac: &str) {
        self.ip(&[
            "link",
            "add",
            tap_name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            guest.name(),
        ]);
        guest.ip(&["link", "set", "dev", "eth0", "address", mac]);
        guest.ip(&["link", "set", "dev", "eth0", "up"]);
    }

    fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A current-thread tokio runtime driven by its own thread inside a
/// namespace. Tasks keep running between calls.
pub struct NsRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Runs `future` inside the namespace and waits for its result; a panic
    /// in it is re-raised here.
    pub fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = self.spawn(future);
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(task.await);
        });
        match rx.recv().expect("runtime thread alive") {
            Ok(output) => output,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => panic!("task failed: {err}"),
        }
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Addresses of a client namespace's link to the host namespace.
#[derive(Debug, Clone, Copy)]
pub struct ClientLink {
    pub host_ip: Ipv4Addr,
    pub client_ip: Ipv4Addr,
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
