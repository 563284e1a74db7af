//! `wake`: wake-on-request through Hatch's reverse proxy next to QEMU's
//! own load of the same saved state, in one run.
//!
//! Inside the benchmark's network namespace it runs Hatch's orchestration
//! (bridge, TAP, dnsmasq, iptables: all in the namespace) and its proxy, boots the `minimal` image with busybox httpd on port 8080 and
//! routes `app.bench.test` to it with auto_wake. Each round snapshots the VM
//! through orchestration, then:
//! - **raw qemu**: the snapshot's state, already unpacked (not timed), is
//!   loaded into a fresh QEMU with the same launch (TAP, MAC, kernel) and
//!   continued; then a GET straight to the guest's port, polled open the way
//!   the proxy polls. Timed until the VM runs and until the first response byte.
//! - **hatch**: a GET through the proxy for the sleeping VM: the proxy asks
//!   orchestration to restore it (fetch, verify, unpack, re-attach, load),
//!   waits for the port and forwards. Timed until the first response byte;
//!   "until running" is the restoring → running span of the VM's events.
//!
//! The baseline goes first in every round: it needs the VM's TAP, which
//! the VM holds again once Hatch has woken it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use hatch::model::{Image, Vm, VmState};
use hatch::orch::{CreateRoute, OrchRouteResolver, Orchestrator};
use hatch::proxy::{spawn_proxy, wait_port_open, ProxyConfig, ProxyHandle};
use hatch::store::Store;
use hatch::vmm::Hypervisor;

use crate::guest::{Guests, BOOT_TIMEOUT};
use crate::hatchd::Hatchd;
use crate::rows::Ctx;
use crate::stats::{millis, Comparison};
use crate::BenchError;

const MEM_MIB: u32 = 256;

const BASE_DOMAIN: &str = "bench.test";
const HOST: &str = "app.bench.test";
const SERVICE_PORT: u16 = 8080;
const USER_DATA: &str =
    "#!/bin/sh\nmkdir -p /www && echo 'hello from the guest' > /www/index.html && exec busybox httpd -f -p 8080 -h /www\n";
/// Longest a request may take, wake included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One round's measurements.
#[derive(Debug, Clone, Copy)]
pub struct WakeSample {
    pub raw_running: Duration,
    pub raw_first_byte: Duration,
    pub hatch_running: Duration,
    pub hatch_first_byte: Duration,
}

/// Everything the rounds use.
struct Setup {
    orch: Arc<Orchestrator>,
    store: Store,
    hypervisor: Arc<dyn Hypervisor>,
    proxy: ProxyHandle,
    vm: Vm,
    guests: Guests,
    data_dir: std::path::PathBuf,
}

/// Runs the wake rounds with Hatch's data in a fresh directory; deletes
/// the VM and stops orchestration whatever happens.
pub async fn run(image: &Image, ctx: &Ctx) -> Result<Vec<Comparison>, BenchError> {
    let hatchd = Hatchd::start(ctx, &[image], |_| {}).await?;
    let created = hatchd.create_vm(image, MEM_MIB, Some(USER_DATA)).await;
    let outcome = match (created, hatchd.hypervisor()) {
        (Ok(vm), Ok(hypervisor)) => {
            let vm_id = vm.id.clone();
            let outcome = measure(&hatchd, hypervisor, vm, &ctx.guests, ctx.rounds).await;
            ctx.guests.stop_all().await;
            hatchd.delete_vm(&vm_id).await;
            outcome
        }
        (Err(error), _) => Err(error),
        (_, Err(error)) => Err(error),
    };
    hatchd.shutdown().await;
    let samples = outcome?;
    let mut first_byte = Comparison::new(
        Some("wake_first_byte_ratio"),
        "wake: request to first response byte",
        "ms",
        "qemu load + direct request",
    );
    let mut running = Comparison::new(None, "wake: until the VM runs", "ms", "qemu load");
    for sample in &samples {
        first_byte.push(millis(sample.hatch_first_byte), millis(sample.raw_first_byte));
        running.push(millis(sample.hatch_running), millis(sample.raw_running));
    }
    Ok(vec![first_byte, running])
}

fn hatch_error(error: hatch::orch::OrchError) -> BenchError {
    BenchError::Hatch(error.to_string())
}

async fn measure(
    hatchd: &Hatchd,
    hypervisor: Arc<dyn Hypervisor>,
    vm: Vm,
    guests: &Guests,
    rounds: usize,
) -> Result<Vec<WakeSample>, BenchError> {
    let (orch, store, data_dir) = (&hatchd.orch, &hatchd.store, hatchd.data_dir());
    let vm = orch.wait_ready(&vm.id, BOOT_TIMEOUT).await.map_err(hatch_error)?;
    orch.create_route(
        &vm.id,
        CreateRoute {
            subdomain: Some("app".into()),
            target_port: SERVICE_PORT,
            auto_wake: true,
        },
        |id| Some(id.to_string()),
    )
    .await
    .map_err(hatch_error)?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(BenchError::io("binding the proxy"))?;
    let resolver = Arc::new(OrchRouteResolver::new(orch.clone(), REQUEST_TIMEOUT));
    let proxy =
        spawn_proxy(listener, ProxyConfig::new(BASE_DOMAIN), resolver).map_err(|e| BenchError::Hatch(e.to_string()))?;
    orch.add_observer(Arc::new(proxy.upstreams()));
    let setup = Setup {
        orch: orch.clone(),
        store: store.clone(),
        hypervisor,
        proxy,
        vm,
        guests: guests.clone(),
        data_dir: data_dir.to_path_buf(),
    };
    let result = setup.rounds(rounds).await;
    setup.proxy.shutdown(Duration::from_secs(1)).await;
    result
}

impl Setup {
    async fn rounds(&self, rounds: usize) -> Result<Vec<WakeSample>, BenchError> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        // The service starts after boot (user-data): wait for it through the proxy.
        while !matches!(self.get_through_proxy().await, Ok((200, _))) {
            if Instant::now() >= deadline {
                return Err(BenchError::Timeout {
                    what: "the guest's HTTP service".into(),
                    serial_tail: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut samples = Vec::new();
        for round in 1..=rounds {
            let snapshot = self.orch.snapshot_vm(&self.vm.id).await.map_err(hatch_error)?;
            // Hatch's background pass must not slow either column down.
            let snapshot = crate::hatchd::wait_durable(&self.orch, &self.vm.id, &snapshot.id).await?;
            let (raw_running, raw_first_byte) = self.raw_restore(&snapshot, round).await?;
            let (status, hatch_first_byte) = self.get_through_proxy().await?;
            if status != 200 {
                return Err(BenchError::Http(format!("waking through the proxy answered {status}")));
            }
            let sample = WakeSample {
                raw_running,
                raw_first_byte,
                hatch_running: self.last_restore()?,
                hatch_first_byte,
            };
            eprintln!(
                "round {round}: raw running after {:.0} ms, first byte after {:.0} ms; hatch running after {:.0} ms, first byte through the proxy after {:.0} ms",
                millis(sample.raw_running), millis(sample.raw_first_byte), millis(sample.hatch_running), millis(sample.hatch_first_byte)
            );
            samples.push(sample);
        }
        Ok(samples)
    }

    /// Loads the snapshot's state (unpacked beforehand, not timed) into a
    /// fresh QEMU launched like Hatch launches the VM; times until it runs
    /// and until its service sends a first byte.
    async fn raw_restore(
        &self,
        snapshot: &hatch::model::Snapshot,
        round: usize,
    ) -> Result<(Duration, Duration), BenchError> {
        let work = self.data_dir.join(format!("raw-{round}"));
        let unpacked = self.orch.unpack_snapshot(snapshot, &work).await.map_err(hatch_error)?;
        let vm = self.orch.get_vm(&self.vm.id).await.map_err(hatch_error)?;
        let mut spec = self.orch.launch_spec_of(&vm).await.map_err(hatch_error)?;
        spec.run_dir = work.join("run");
        let addr = guest_service(&vm)?;
        let started = Instant::now();
        let handle = self.hypervisor.restore(&spec, &unpacked.files).await?;
        let guest = self.guests.register(handle).await;
        let running = started.elapsed();
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let answered = match wait_port_open(addr, deadline).await {
            Ok(()) => first_byte(addr, HOST).await,
            Err(error) => Err(BenchError::Http(error.to_string())),
        };
        let first = started.elapsed();
        self.guests.stop(guest).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        match answered? {
            (200, _) => Ok((running, first)),
            (status, _) => Err(BenchError::Http(format!("the raw-restored guest answered {status}"))),
        }
    }

    async fn get_through_proxy(&self) -> Result<(u16, Duration), BenchError> {
        let started = Instant::now();
        let (status, _) = first_byte(self.proxy.local_addr(), HOST).await?;
        Ok((status, started.elapsed()))
    }

    /// The span of the VM's latest restoring → running transition.
    fn last_restore(&self) -> Result<Duration, BenchError> {
        let events = self
            .store
            .list_transitions(&self.vm.id)
            .map_err(|e| BenchError::Hatch(e.to_string()))?;
        let restoring = events.iter().rposition(|e| e.to_state == VmState::Restoring);
        let span = restoring.and_then(|at| {
            let running = events[at..].iter().find(|e| e.to_state == VmState::Running)?;
            (running.at - events[at].at).to_std().ok()
        });
        span.ok_or_else(|| BenchError::Http("the VM's events show no completed restore".into()))
    }
}

fn guest_service(vm: &Vm) -> Result<SocketAddr, BenchError> {
    let network = vm
        .network
        .as_ref()
        .ok_or_else(|| BenchError::Hatch("the VM has no network".into()))?;
    Ok(SocketAddr::from((network.guest_ip, SERVICE_PORT)))
}

/// Sends `GET /` for `host` and reads the answer; returns its status and
/// how long the first byte took.
async fn first_byte(addr: SocketAddr, host: &str) -> Result<(u16, Duration), BenchError> {
    let exchange = async {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await?;
        let elapsed = started.elapsed();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await?;
        Ok::<_, std::io::Error>((first, rest, elapsed))
    };
    let (first, rest, elapsed) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| BenchError::Http(format!("no answer from {addr} within {REQUEST_TIMEOUT:?}")))?
        .map_err(|e| BenchError::Http(format!("{addr}: {e}")))?;
    let head = String::from_utf8_lossy(&first).into_owned() + &String::from_utf8_lossy(&rest);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((status, elapsed))
}
