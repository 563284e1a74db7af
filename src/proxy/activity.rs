//! Which VMs have proxied traffic in flight, and when each last had any.
//!
//! An in-flight request counts as active from the moment it is accepted until
//! its response body is finished (so streaming downloads and server-sent
//! events keep a VM busy), and an upgraded tunnel (WebSocket) counts until
//! either side closes it. The idle monitor asks [`ActiveConnections`] before
//! suspending a VM.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use crate::model::Timestamp;

use super::coarse_clock;
use super::resolver::{ActivityEvent, RouteResolver};

/// One VM's traffic, shared by the registry and every open exchange for
/// the VM: counting an exchange takes no lock and no lookup (this happens
/// twice per proxied request).
#[derive(Debug, Default)]
pub(crate) struct VmActivity {
    open: AtomicUsize,
    /// When traffic was last seen, in milliseconds since the Unix epoch
    /// (coarse clock); 0: never.
    last_ms: AtomicU64,
}

impl VmActivity {
    fn open(&self, now_ms: u64) {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.stamp(now_ms);
    }

    fn close(&self, now_ms: u64) {
        let _ = self.open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
            Some(open.saturating_sub(1))
        });
        self.stamp(now_ms);
    }

    fn stamp(&self, now_ms: u64) {
        self.last_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn last(&self) -> Option<Timestamp> {
        match self.last_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))),
        }
    }
}

/// Per-VM count of open proxied exchanges and time of the last traffic.
#[derive(Debug, Default)]
pub struct ActiveConnections {
    vms: Mutex<HashMap<String, Arc<VmActivity>>>,
}

impl ActiveConnections {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whether any request, stream or tunnel for the VM is open right now.
    pub fn is_active(&self, vm_id: &str) -> bool {
        self.active_count(vm_id) > 0
    }

    /// How many requests, streams and tunnels for the VM are open.
    pub fn active_count(&self, vm_id: &str) -> usize {
        self.lock().get(vm_id).map_or(0, |vm| vm.open_count())
    }

    /// When traffic for the VM was last seen (start or end of an exchange,
    /// or a periodic tick of a long-lived one). `None` if never since start.
    pub fn last_activity(&self, vm_id: &str) -> Option<Timestamp> {
        self.lock().get(vm_id).and_then(|vm| vm.last())
    }

    /// Records traffic for the VM without opening anything.
    pub fn touch(&self, vm_id: &str) {
        self.of(vm_id).stamp(coarse_clock::wall_ms());
    }

    /// Counts work for the VM as open until the guard is dropped (an exec
    /// or a file transfer through the guest agent).
    pub fn hold(&self, vm_id: &str) -> HeldActivity {
        let activity = self.of(vm_id);
        activity.open(coarse_clock::wall_ms());
        HeldActivity { activity }
    }

    /// The VM's counters, made on first use. The proxy keeps them with a
    /// connection's known route, so its requests skip this lookup.
    pub(crate) fn of(&self, vm_id: &str) -> Arc<VmActivity> {
        let mut vms = self.lock();
        if let Some(vm) = vms.get(vm_id) {
            return Arc::clone(vm);
        }
        Arc::clone(vms.entry(vm_id.to_string()).or_default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<VmActivity>>> {
        // A panic elsewhere while holding the lock leaves the map whole.
        self.vms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Work counted as activity while it lasts (see [`ActiveConnections::hold`]).
pub struct HeldActivity {
    activity: Arc<VmActivity>,
}

impl Drop for HeldActivity {
    fn drop(&mut self) {
        self.activity.close(coarse_clock::wall_ms());
    }
}

/// Keeps one exchange counted as open; reports its end when dropped.
pub(crate) struct ActivityGuard {
    vm_id: Arc<str>,
    activity: Arc<VmActivity>,
    resolver: Arc<dyn RouteResolver>,
    end_event: ActivityEvent,
    tick_every_ms: u64,
    last_tick_ms: u64,
}

impl ActivityGuard {
    pub(crate) fn begin(
        vm_id: Arc<str>,
        activity: Arc<VmActivity>,
        resolver: Arc<dyn RouteResolver>,
        tick_every: Duration,
    ) -> Self {
        let now = coarse_clock::wall_ms();
        activity.open(now);
        resolver.activity(&vm_id, ActivityEvent::RequestStarted);
        Self {
            vm_id,
            activity,
            resolver,
            end_event: ActivityEvent::RequestFinished,
            tick_every_ms: u64::try_from(tick_every.as_millis()).unwrap_or(u64::MAX),
            last_tick_ms: now,
        }
    }

    pub(crate) fn vm_id(&self) -> &str {
        &self.vm_id
    }

    /// The request became a tunnel: it stays open, and its end is reported
    /// as a closed tunnel.
    pub(crate) fn into_tunnel(mut self) -> Self {
        self.resolver.activity(&self.vm_id, ActivityEvent::TunnelOpened);
        self.end_event = ActivityEvent::TunnelClosed;
        self
    }

    /// Reports that a long-lived exchange is still open, at most once per
    /// `tick_every` however often it is called.
    pub(crate) fn tick(&mut self) {
        let now = coarse_clock::wall_ms();
        if now.saturating_sub(self.last_tick_ms) >= self.tick_every_ms {
            self.tick_at(now);
        }
    }

    pub(crate) fn force_tick(&mut self) {
        self.tick_at(coarse_clock::wall_ms());
    }

    fn tick_at(&mut self, now: u64) {
        self.last_tick_ms = now;
        self.activity.stamp(now);
        self.resolver.activity(&self.vm_id, ActivityEvent::StillOpen);
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.activity.close(coarse_clock::wall_ms());
        self.resolver.activity(&self.vm_id, self.end_event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_open_exchanges_per_vm() {
        let registry = ActiveConnections::new();
        assert!(!registry.is_active("vm-a"));
        assert_eq!(registry.last_activity("vm-a"), None);
        let first = registry.hold("vm-a");
        let second = registry.hold("vm-a");
        let other = registry.hold("vm-b");
        assert_eq!(registry.active_count("vm-a"), 2);
        drop(first);
        assert!(registry.is_active("vm-a"));
        drop(second);
        assert!(!registry.is_active("vm-a"));
        assert!(registry.is_active("vm-b"));
        let last = registry.last_activity("vm-a").expect("stamped");
        assert!((crate::model::now() - last).num_seconds().abs() < 5, "{last}");
        drop(other);
    }

    #[test]
    fn closing_more_than_opened_never_underflows() {
        let registry = ActiveConnections::new();
        registry.of("vm-a").close(coarse_clock::wall_ms());
        assert_eq!(registry.active_count("vm-a"), 0);
    }
}
