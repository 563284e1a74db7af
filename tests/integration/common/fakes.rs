//! Fakes of the orchestrator's backends, for driving it without root, VMs
//! or host networking: [`FakeHypervisor`] (with [`FakeVmHandle`]),
//! [`FakeNetwork`] and [`FakeSnapshotStore`]. Each records what it holds
//! (live fake VMM processes, attached VMs, stored artefacts) and can be
//! made to fail at any [`Step`] through a shared [`Faults`].
//!
//! Fake VMM processes write small real files into the VM's run directory
//! (serial log, a state file, snapshot state and memory), so the snapshot
//! path packs and unpacks real files. Their pids lie above the kernel's
//! `pid_max`: no real process ever has one, so code that probes or signals
//! a recorded pid never reaches a real process.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use hatch::model::NetworkIdentity;
use hatch::net::{HostNetwork, NetConfig, NetError, NetRequest, ReconcileReport, Taken};
use hatch::snapshot::{LocalStore, ObjectReader, SnapshotError, SnapshotStore};
use hatch::vmm::{AgentEndpoint, ExitReport, Hypervisor, HypervisorKind, SnapshotFiles, VmHandle, VmLaunch, VmmError};

/// A named step a fake can fail at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    // Hypervisor and VMM process.
    Launch,
    Restore,
    Adopt,
    Pause,
    Resume,
    SaveSnapshot,
    // Host network.
    Allocate,
    EnsureHost,
    Reconcile,
    Attach,
    /// Attaching fails after the VM's host state is in place, as the real
    /// `Network::attach_vm` can (TAP made, then dnsmasq fails). Not in
    /// [`Step::ALL`]: see `orch_failures` for why.
    AttachPartly,
    Detach,
    // Snapshot storage.
    Put,
    Get,
    Delete,
}

impl Step {
    pub const ALL: [Step; 14] = [
        Step::Launch,
        Step::Restore,
        Step::Adopt,
        Step::Pause,
        Step::Resume,
        Step::SaveSnapshot,
        Step::Allocate,
        Step::EnsureHost,
        Step::Reconcile,
        Step::Attach,
        Step::Detach,
        Step::Put,
        Step::Get,
        Step::Delete,
    ];
}

/// Which calls fail, shared by the fakes of one test. Calls are counted
/// per step; an armed step fails its n-th call from the time it was armed.
#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    calls: HashMap<Step, u32>,
    /// Calls left before the failing one (1: the next call fails).
    armed: HashMap<Step, u32>,
    failed: Vec<Step>,
}

impl Faults {
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// The next call of `step` fails.
    pub fn fail_next(&self, step: Step) {
        self.fail_nth(step, 1);
    }

    /// The `n`-th call of `step` from now (1-based) fails.
    pub fn fail_nth(&self, step: Step, n: u32) {
        assert!(n >= 1);
        self.lock().armed.insert(step, n);
    }

    /// Disarms every step.
    pub fn clear(&self) {
        self.lock().armed.clear();
    }

    /// How often `step` was called so far.
    pub fn calls(&self, step: Step) -> u32 {
        self.lock().calls.get(&step).copied().unwrap_or(0)
    }

    /// Steps that failed so far, in order.
    pub fn failed(&self) -> Vec<Step> {
        self.lock().failed.clone()
    }

    /// Counts a call of `step`; `Err` when this call is the one to fail.
    pub fn check(&self, step: Step) -> Result<(), String> {
        let mut state = self.lock();
        *state.calls.entry(step).or_default() += 1;
        let Some(left) = state.armed.get_mut(&step) else {
            return Ok(());
        };
        *left -= 1;
        if *left > 0 {
            return Ok(());
        }
        state.armed.remove(&step);
        state.failed.push(step);
        Err(format!("injected failure at {step:?}"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The kernel's `pid_max`: no process has a pid above it.
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(4_194_304)
}

/// A fake VMM process, as the hypervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeProcess {
    pub pid: u32,
    pub vm_id: String,
    pub run_dir: PathBuf,
    pub paused: bool,
}

#[derive(Default)]
struct Processes {
    live: BTreeMap<u32, FakeProcess>,
    /// Exit signal of every process started, live or not.
    exits: HashMap<u32, watch::Sender<Option<ExitReport>>>,
}

/// A hypervisor whose VMM processes are entries in a table.
pub struct FakeHypervisor {
    faults: Arc<Faults>,
    next_pid: AtomicU32,
    processes: Arc<Mutex<Processes>>,
}

impl FakeHypervisor {
    pub fn new(faults: Arc<Faults>) -> Arc<FakeHypervisor> {
        Arc::new(FakeHypervisor {
            faults,
            next_pid: AtomicU32::new(pid_max() + 1000),
            processes: Arc::default(),
        })
    }

    /// The fake VMM processes alive now.
    pub fn live(&self) -> Vec<FakeProcess> {
        lock(&self.processes).live.values().cloned().collect()
    }

    /// Ends the VM's fake process as if it exited on its own (`code` 0: a
    /// clean guest shutdown). Returns whether one was running.
    pub fn exit(&self, vm_id: &str, code: i32) -> bool {
        let mut processes = lock(&self.processes);
        let Some(pid) = processes.live.values().find(|p| p.vm_id == vm_id).map(|p| p.pid) else {
            return false;
        };
        end(&mut processes, pid, Some(code));
        true
    }

    fn spawn(&self, spec: &VmLaunch, how: &str) -> Result<Box<dyn VmHandle>, VmmError> {
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        write(
            &spec.serial_log_path(),
            &format!("fake VMM {pid}: {how} {}\n", spec.vm_id),
        )?;
        write(&spec.run_dir.join("fake-vmm.state"), "running\n")?;
        let (sender, receiver) = watch::channel(None);
        let mut processes = lock(&self.processes);
        processes.live.insert(
            pid,
            FakeProcess {
                pid,
                vm_id: spec.vm_id.clone(),
                run_dir: spec.run_dir.clone(),
                paused: false,
            },
        );
        processes.exits.insert(pid, sender);
        Ok(Box::new(FakeVmHandle {
            pid,
            faults: self.faults.clone(),
            run_dir: spec.run_dir.clone(),
            processes: self.processes.clone(),
            exit: receiver,
        }))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn end(processes: &mut Processes, pid: u32, code: Option<i32>) {
    processes.live.remove(&pid);
    if let Some(sender) = processes.exits.get(&pid) {
        sender.send_if_modified(|report| {
            if report.is_some() {
                return false;
            }
            *report = Some(ExitReport {
                code,
                signal: None,
                serial_tail: String::new(),
            });
            true
        });
    }
}

fn write(path: &Path, text: &str) -> Result<(), VmmError> {
    std::fs::write(path, text).map_err(|source| VmmError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn injected(step: Step, faults: &Faults) -> Result<(), VmmError> {
    faults.check(step).map_err(VmmError::Control)
}

#[async_trait]
impl Hypervisor for FakeHypervisor {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Firecracker
    }

    async fn launch(&self, spec: &VmLaunch) -> Result<Box<dyn VmHandle>, VmmError> {
        injected(Step::Launch, &self.faults)?;
        self.spawn(spec, "booted")
    }

    async fn restore(&self, spec: &VmLaunch, snapshot: &SnapshotFiles) -> Result<Box<dyn VmHandle>, VmmError> {
        injected(Step::Restore, &self.faults)?;
        for file in std::iter::once(&snapshot.state).chain(snapshot.memory.as_ref()) {
            std::fs::read(file).map_err(|source| VmmError::Io {
                path: file.clone(),
                source,
            })?;
        }
        self.spawn(spec, "restored")
    }

    /// A fake VM has no guest to hold paused: the same as `restore`.
    async fn restore_paused(&self, spec: &VmLaunch, snapshot: &SnapshotFiles) -> Result<Box<dyn VmHandle>, VmmError> {
        self.restore(spec, snapshot).await
    }

    async fn adopt(&self, spec: &VmLaunch, pid: u32) -> Result<Box<dyn VmHandle>, VmmError> {
        injected(Step::Adopt, &self.faults)?;
        let processes = lock(&self.processes);
        let owned = processes.live.get(&pid).is_some_and(|p| p.vm_id == spec.vm_id);
        let exit = processes.exits.get(&pid).map(watch::Sender::subscribe);
        match (owned, exit) {
            (true, Some(exit)) => Ok(Box::new(FakeVmHandle {
                pid,
                faults: self.faults.clone(),
                run_dir: spec.run_dir.clone(),
                processes: self.processes.clone(),
                exit,
            })),
            _ => Err(VmmError::NotAdoptable { pid }),
        }
    }

    /// Nothing serves it: a fake VM has no agent.
    fn agent_endpoint(&self, spec: &VmLaunch) -> AgentEndpoint {
        AgentEndpoint::Connect(spec.run_dir.join("agent.sock"))
    }

    fn agent_transport(&self) -> &'static str {
        "none (fake)"
    }
}

/// A handle on one fake VMM process.
pub struct FakeVmHandle {
    pid: u32,
    faults: Arc<Faults>,
    run_dir: PathBuf,
    processes: Arc<Mutex<Processes>>,
    exit: watch::Receiver<Option<ExitReport>>,
}

impl FakeVmHandle {
    fn set_paused(&self, paused: bool) -> Result<(), VmmError> {
        let mut processes = lock(&self.processes);
        let Some(process) = processes.live.get_mut(&self.pid) else {
            return Err(VmmError::Control(format!("fake VMM {} is gone", self.pid)));
        };
        process.paused = paused;
        write(
            &self.run_dir.join("fake-vmm.state"),
            if paused { "paused\n" } else { "running\n" },
        )
    }
}

#[async_trait]
impl VmHandle for FakeVmHandle {
    fn pid(&self) -> u32 {
        self.pid
    }

    async fn pause(&self) -> Result<(), VmmError> {
        injected(Step::Pause, &self.faults)?;
        self.set_paused(true)
    }

    async fn resume(&self) -> Result<(), VmmError> {
        injected(Step::Resume, &self.faults)?;
        self.set_paused(false)
    }

    async fn save_snapshot(&self, dir: &Path) -> Result<SnapshotFiles, VmmError> {
        injected(Step::SaveSnapshot, &self.faults)?;
        std::fs::create_dir_all(dir).map_err(|source| VmmError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let state = dir.join("vmstate");
        let memory = dir.join("memory");
        write(&state, &format!("fake VM state of pid {}\n", self.pid))?;
        write(&memory, &"fake guest memory\n".repeat(64))?;
        Ok(SnapshotFiles {
            state,
            memory: Some(memory),
        })
    }

    async fn stop(&self, _grace: Duration) -> ExitReport {
        end(&mut lock(&self.processes), self.pid, Some(0));
        self.wait_exit().await
    }

    async fn wait_exit(&self) -> ExitReport {
        let mut exit = self.exit.clone();
        let report = match exit.wait_for(Option::is_some).await {
            Ok(report) => report.clone(),
            Err(_) => None,
        };
        report.unwrap_or_else(unknown_exit)
    }
}

fn unknown_exit() -> ExitReport {
    ExitReport {
        code: None,
        signal: None,
        serial_tail: String::new(),
    }
}

/// Host networking as a table of attached VMs; identities are handed out
/// from the configured range like the real allocator does.
pub struct FakeNetwork {
    faults: Arc<Faults>,
    cfg: NetConfig,
    attached: Mutex<BTreeMap<String, NetworkIdentity>>,
    shut_down: Mutex<bool>,
}

impl FakeNetwork {
    pub fn new(faults: Arc<Faults>, cfg: NetConfig) -> Arc<FakeNetwork> {
        Arc::new(FakeNetwork {
            faults,
            cfg,
            attached: Mutex::default(),
            shut_down: Mutex::new(false),
        })
    }

    /// The VMs whose host state is in place now.
    pub fn attached(&self) -> BTreeMap<String, NetworkIdentity> {
        lock(&self.attached).clone()
    }

    fn injected(&self, step: Step) -> Result<(), NetError> {
        self.faults.check(step).map_err(NetError::Host)
    }
}

#[async_trait]
impl HostNetwork for FakeNetwork {
    fn config(&self) -> &NetConfig {
        &self.cfg
    }

    fn allocate(&self, vm_id: &str, req: &NetRequest, taken: &Taken) -> Result<NetworkIdentity, NetError> {
        self.injected(Step::Allocate)?;
        let exhausted = |what| NetError::Exhausted {
            what,
            pool: "the fake range".into(),
        };
        let [a, b, c, _] = self.cfg.gateway.octets();
        let guest_ip = match &req.guest_ip {
            Some(text) => text.parse().map_err(|_| NetError::Invalid {
                field: "guest_ip",
                message: format!("{text:?} is not an IPv4 address"),
            })?,
            None => (10..250)
                .map(|d| Ipv4Addr::new(a, b, c, d))
                .find(|ip| !taken.ips.contains(ip))
                .ok_or_else(|| exhausted("guest IP"))?,
        };
        let guest_mac = match &req.guest_mac {
            Some(mac) => mac.to_ascii_lowercase(),
            None => (1..=250u32)
                .map(|n| format!("02:fc:00:00:{:02x}:{:02x}", n >> 8, n & 0xff))
                .find(|mac| !taken.macs.contains(mac))
                .ok_or_else(|| exhausted("MAC"))?,
        };
        let tap_name = hatch::net::names::tap_name(vm_id, &taken.taps).ok_or_else(|| exhausted("TAP name"))?;
        let ssh_port = (self.cfg.ssh_port_min..=self.cfg.ssh_port_max)
            .find(|port| !taken.ports.contains(port))
            .ok_or_else(|| exhausted("SSH port"))?;
        Ok(NetworkIdentity {
            guest_ip,
            guest_mac,
            tap_name,
            ssh_port,
            egress: req.egress.clone(),
        })
    }

    async fn ensure_host(&self) -> Result<(), NetError> {
        self.injected(Step::EnsureHost)
    }

    async fn reconcile(&self, desired: &[(String, NetworkIdentity)]) -> Result<ReconcileReport, NetError> {
        self.injected(Step::Reconcile)?;
        let mut attached = lock(&self.attached);
        let mut report = ReconcileReport::default();
        for (vm_id, id) in attached.iter() {
            if !desired.iter().any(|(wanted, _)| wanted == vm_id) {
                report.taps_removed.push(id.tap_name.clone());
            }
        }
        for (vm_id, id) in desired {
            if !attached.contains_key(vm_id) {
                report.taps_created.push(id.tap_name.clone());
            }
        }
        *attached = desired.iter().cloned().collect();
        Ok(report)
    }

    async fn attach_vm(
        &self,
        vm_id: &str,
        id: &NetworkIdentity,
        _desired_all: &[(String, NetworkIdentity)],
    ) -> Result<(), NetError> {
        self.injected(Step::Attach)?;
        lock(&self.attached).insert(vm_id.to_string(), id.clone());
        self.injected(Step::AttachPartly)
    }

    async fn detach_vm(
        &self,
        vm_id: &str,
        _id: &NetworkIdentity,
        _desired_all: &[(String, NetworkIdentity)],
    ) -> Result<(), NetError> {
        self.injected(Step::Detach)?;
        lock(&self.attached).remove(vm_id);
        Ok(())
    }

    async fn shutdown(&self) {
        *lock(&self.shut_down) = true;
    }

    async fn established_ssh_sessions(&self, _id: &NetworkIdentity) -> Result<usize, NetError> {
        Ok(0)
    }
}

/// The real local snapshot store, with failures injected before each call.
pub struct FakeSnapshotStore {
    faults: Arc<Faults>,
    inner: LocalStore,
}

impl FakeSnapshotStore {
    pub fn new(faults: Arc<Faults>, inner: LocalStore) -> Arc<FakeSnapshotStore> {
        Arc::new(FakeSnapshotStore { faults, inner })
    }

    pub fn root(&self) -> &Path {
        self.inner.root()
    }
}

fn store_error(message: String) -> SnapshotError {
    SnapshotError::Io {
        context: message,
        source: std::io::Error::other("injected"),
    }
}

#[async_trait]
impl SnapshotStore for FakeSnapshotStore {
    async fn put(&self, key: &str, local_path: &Path) -> Result<(), SnapshotError> {
        self.faults.check(Step::Put).map_err(store_error)?;
        self.inner.put(key, local_path).await
    }

    async fn get(&self, key: &str, local_path: &Path) -> Result<(), SnapshotError> {
        self.faults.check(Step::Get).map_err(store_error)?;
        self.inner.get(key, local_path).await
    }

    async fn open(&self, key: &str) -> Result<ObjectReader, SnapshotError> {
        self.faults.check(Step::Get).map_err(store_error)?;
        self.inner.open(key).await
    }

    async fn delete(&self, prefix: &str) -> Result<usize, SnapshotError> {
        self.faults.check(Step::Delete).map_err(store_error)?;
        self.inner.delete(prefix).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SnapshotError> {
        self.inner.list(prefix).await
    }

    async fn sweep_partials(&self) -> Result<usize, SnapshotError> {
        self.inner.sweep_partials().await
    }

    async fn sweep_orphans(
        &self,
        referenced: &std::collections::HashSet<(String, String)>,
        min_age: std::time::Duration,
    ) -> Result<usize, SnapshotError> {
        self.inner.sweep_orphans(referenced, min_age).await
    }

    fn kind(&self) -> &'static str {
        "fake"
    }

    fn describe(&self) -> String {
        format!("fake over {}", self.inner.describe())
    }
}
