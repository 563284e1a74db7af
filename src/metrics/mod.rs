//! Prometheus metrics served at `GET /metrics` (text format 0.0.4).
//!
//! One [`Metrics`] per daemon, made by the orchestrator and handed to the
//! API and the proxy. Two kinds of series:
//! - recorded as things happen (this registry): operation, API and proxy
//!   durations, proxy bytes, idle decisions, reconcile repairs;
//! - read at scrape time ([`Sample`], put in a registry of its own for one
//!   scrape): VMs by state, each live VM's CPU, memory and TAP bytes, the
//!   bytes snapshots hold. VMs that are gone have no series left behind.
//!
//! The crate is `prometheus-client`, the Prometheus project's own Rust
//! client: typed label sets, no global registry, and an encoder for the
//! classic text format that every scraper reads.
//!
//! Label values are bounded: routes are API route templates (`/vms/{id}`)
//! or proxy subdomains that exist as routes; VM ids appear only for live
//! VMs.

mod usage;

use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::model::VmState;
pub use usage::{read_net_dev, read_usage, VmUsage};

/// `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Operations of a VM whose durations are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Create,
    Start,
    Stop,
    Snapshot,
    Restore,
    /// A restore asked for by a request through the proxy.
    Wake,
    Delete,
}

impl OperationKind {
    fn as_str(self) -> &'static str {
        match self {
            OperationKind::Create => "create",
            OperationKind::Start => "start",
            OperationKind::Stop => "stop",
            OperationKind::Snapshot => "snapshot",
            OperationKind::Restore => "restore",
            OperationKind::Wake => "wake",
            OperationKind::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabels {
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabel {
    scope: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VmLabel {
    vm: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VmDirectionLabels {
    vm: String,
    direction: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// VM operations take from under a second (stop) to minutes (a cold create).
fn operation_histogram() -> Histogram {
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0])
}

/// HTTP requests: milliseconds to the length of a waited-for operation.
fn request_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
    ])
}

/// What an idle check decided (see `src/idle/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleDecisionKind {
    /// The VM is in use (or too young) and keeps running.
    Keep,
    /// Idle at the check but in use again under the VM's lock.
    KeptAfterRecheck,
    /// Idle: snapshotted.
    Suspend,
    /// Idle, but the snapshot failed; the VM keeps running.
    SuspendFailed,
}

impl IdleDecisionKind {
    fn as_str(self) -> &'static str {
        match self {
            IdleDecisionKind::Keep => "keep",
            IdleDecisionKind::KeptAfterRecheck => "kept_after_recheck",
            IdleDecisionKind::Suspend => "suspend",
            IdleDecisionKind::SuspendFailed => "suspend_failed",
        }
    }
}

/// What a reconcile repair was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairScope {
    Vm,
    Host,
}

/// The daemon's metrics recorded as things happen.
pub struct Metrics {
    registry: Registry,
    operations: Histograms<OperationLabels>,
    api_requests: Histograms<ApiLabels>,
    proxy_requests: Histograms<ProxyLabels>,
    proxy_bytes: Family<RouteLabel, Counter>,
    idle_decisions: Family<DecisionLabel, Counter>,
    repairs: Family<ScopeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hatch");
        let operations: Histograms<OperationLabels> = Family::new_with_constructor(operation_histogram);
        let api_requests: Histograms<ApiLabels> = Family::new_with_constructor(request_histogram);
        let proxy_requests: Histograms<ProxyLabels> = Family::new_with_constructor(request_histogram);
        let proxy_bytes = Family::<RouteLabel, Counter>::default();
        let idle_decisions = Family::<DecisionLabel, Counter>::default();
        let repairs = Family::<ScopeLabel, Counter>::default();
        registry.register_with_unit(
            "vm_operation_duration",
            "How long VM operations took, by operation and outcome (ok or error)",
            Unit::Seconds,
            operations.clone(),
        );
        registry.register_with_unit(
            "api_request_duration",
            "API request latency by method, route template and status",
            Unit::Seconds,
            api_requests.clone(),
        );
        registry.register_with_unit(
            "proxy_request_duration",
            "Proxied request latency (to the response head) by route subdomain and status; \
             its _count is the number of requests",
            Unit::Seconds,
            proxy_requests.clone(),
        );
        registry.register_with_unit(
            "proxy_response",
            "Response body bytes proxied back to clients, by route subdomain",
            Unit::Bytes,
            proxy_bytes.clone(),
        );
        registry.register(
            "idle_decisions",
            "Idle checks by decision (keep, kept_after_recheck, suspend, suspend_failed)",
            idle_decisions.clone(),
        );
        registry.register(
            "reconcile_repairs",
            "Drift the reconciler repaired, by scope (vm or host)",
            repairs.clone(),
        );
        Metrics {
            registry,
            operations,
            api_requests,
            proxy_requests,
            proxy_bytes,
            idle_decisions,
            repairs,
        }
    }

    pub fn observe_operation(&self, kind: OperationKind, ok: bool, elapsed: Duration) {
        let labels = OperationLabels {
            operation: kind.as_str(),
            outcome: if ok { "ok" } else { "error" },
        };
        self.operations.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// `route` is the route template (`/vms/{id}`), or `unmatched`.
    pub fn observe_api_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = ApiLabels {
            method: method.to_string(),
            route: route.to_string(),
            status,
        };
        self.api_requests.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// `route` is the route's subdomain, or `unmatched` for hosts with no route.
    pub fn observe_proxy_request(&self, route: &str, status: u16, elapsed: Duration) {
        let labels = ProxyLabels {
            route: route.to_string(),
            status,
        };
        self.proxy_requests
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The counter of response bytes for one route, to add to as a body streams.
    pub fn proxy_bytes(&self, route: &str) -> Counter {
        self.proxy_bytes
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .clone()
    }

    pub fn count_idle_decision(&self, decision: IdleDecisionKind) {
        self.idle_decisions
            .get_or_create(&DecisionLabel {
                decision: decision.as_str(),
            })
            .inc();
    }

    pub fn count_repair(&self, scope: RepairScope) {
        let scope = match scope {
            RepairScope::Vm => "vm",
            RepairScope::Host => "host",
        };
        self.repairs.get_or_create(&ScopeLabel { scope }).inc();
    }

    /// The text exposition of this registry and of `sample`.
    pub fn render(&self, sample: &Sample) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_text::encode(&mut out, &sample.registry());
        out
    }
}

/// What is read at scrape time.
#[derive(Debug, Default)]
pub struct Sample {
    /// Count per state; states absent here are reported as 0.
    pub vms_by_state: Vec<(VmState, i64)>,
    /// Live VMs (with a VMM process).
    pub vms: Vec<VmUsage>,
    pub snapshot_bytes: u64,
}

impl Sample {
    fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("hatch");
        let states = Family::<StateLabel, Gauge>::default();
        for state in VmState::ALL {
            let count = self
                .vms_by_state
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| *n)
                .sum();
            states.get_or_create(&StateLabel { state: state.as_str() }).set(count);
        }
        registry.register("vms", "VMs by state (every state listed)", states);

        let snapshot_bytes = Gauge::<i64>::default();
        snapshot_bytes.set(i64::try_from(self.snapshot_bytes).unwrap_or(i64::MAX));
        registry.register_with_unit(
            "snapshots_stored",
            "Bytes held by complete snapshots (sum of their total_bytes)",
            Unit::Bytes,
            snapshot_bytes,
        );

        let cpu = Family::<VmLabel, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        let memory = Family::<VmLabel, Gauge>::default();
        let network = Family::<VmDirectionLabels, Counter>::default();
        for vm in &self.vms {
            let label = VmLabel { vm: vm.vm_id.clone() };
            if let Some(seconds) = vm.cpu_seconds {
                cpu.get_or_create(&label).inc_by(seconds);
            }
            if let Some(bytes) = vm.memory_bytes {
                memory
                    .get_or_create(&label)
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
            for (direction, bytes) in [("rx", vm.net_rx_bytes), ("tx", vm.net_tx_bytes)] {
                if let Some(bytes) = bytes {
                    let labels = VmDirectionLabels {
                        vm: vm.vm_id.clone(),
                        direction,
                    };
                    network.get_or_create(&labels).inc_by(bytes);
                }
            }
        }
        registry.register_with_unit(
            "vm_cpu",
            "CPU time used by the VM (its cgroup, else its VMM process)",
            Unit::Seconds,
            cpu,
        );
        registry.register_with_unit(
            "vm_memory",
            "Memory used by the VM (its cgroup's memory.current, else the VMM's resident set)",
            Unit::Bytes,
            memory,
        );
        registry.register_with_unit(
            "vm_network",
            "Bytes through the VM's TAP device, by direction as the host sees it (rx: sent by the guest)",
            Unit::Bytes,
            network,
        );
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_is_listed_and_gone_vms_have_no_series() {
        let metrics = Metrics::new();
        metrics.observe_operation(OperationKind::Create, true, Duration::from_millis(1500));
        let sample = Sample {
            vms_by_state: vec![(VmState::Running, 2)],
            vms: vec![VmUsage {
                vm_id: "vm-1".into(),
                cpu_seconds: Some(1.5),
                memory_bytes: Some(1024),
                net_rx_bytes: Some(10),
                net_tx_bytes: None,
            }],
            snapshot_bytes: 7,
        };
        let text = metrics.render(&sample);
        assert!(text.contains("hatch_vms{state=\"running\"} 2\n"), "{text}");
        assert!(text.contains("hatch_vms{state=\"deleting\"} 0\n"), "{text}");
        assert!(text.contains("hatch_vm_cpu_seconds_total{vm=\"vm-1\"} 1.5\n"), "{text}");
        assert!(text.contains("hatch_snapshots_stored_bytes 7\n"), "{text}");
        assert!(text.contains("hatch_vm_operation_duration_seconds_count{operation=\"create\",outcome=\"ok\"} 1\n"));
        let text = metrics.render(&Sample::default());
        assert!(!text.contains("vm-1"), "{text}");
    }
}
