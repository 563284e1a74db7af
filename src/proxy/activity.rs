//! Which VMs have proxied traffic in flight, and when each last had any.
//!
//! An in-flight request counts as active from the moment it is accepted until
//! its response body is finished (so streaming downloads and server-sent
//! events keep a VM busy), and an upgraded tunnel (WebSocket) counts until
//! either side closes it. The idle monitor asks [`ActiveConnections`] before
//! suspending a VM.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::model::Timestamp;

use super::resolver::{ActivityEvent, RouteResolver};

#[derive(Debug, Default)]
struct VmActivity {
    open: usize,
    /// Kept as the clock gives it; made a [`Timestamp`] only when read.
    last: Option<SystemTime>,
}

/// Per-VM count of open proxied exchanges and time of the last traffic.
#[derive(Debug, Default)]
pub struct ActiveConnections {
    vms: Mutex<HashMap<String, VmActivity>>,
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
        self.lock().get(vm_id).map_or(0, |vm| vm.open)
    }

    /// When traffic for the VM was last seen (start or end of an exchange,
    /// or a periodic tick of a long-lived one). `None` if never since start.
    pub fn last_activity(&self, vm_id: &str) -> Option<Timestamp> {
        self.lock().get(vm_id).and_then(|vm| vm.last).map(Timestamp::from)
    }

    /// Records traffic for the VM without opening anything.
    pub fn touch(&self, vm_id: &str) {
        self.update(vm_id, |_| {});
    }

    /// Counts work for the VM as open until the guard is dropped (an exec
    /// or a file transfer through the guest agent).
    pub fn hold(self: &Arc<Self>, vm_id: &str) -> HeldActivity {
        self.open(vm_id);
        HeldActivity {
            vm_id: vm_id.to_string(),
            registry: self.clone(),
        }
    }

    /// Drops what is known about a VM (after it is deleted). Open exchanges
    /// keep their guards; closing them later recreates a harmless entry.
    pub fn forget(&self, vm_id: &str) {
        self.lock().remove(vm_id);
    }

    fn open(&self, vm_id: &str) {
        self.update(vm_id, |vm| vm.open += 1);
    }

    fn close(&self, vm_id: &str) {
        self.update(vm_id, |vm| vm.open = vm.open.saturating_sub(1));
    }

    /// Applies `change` and stamps the time; allocates only for a new VM
    /// (this runs twice per proxied request).
    fn update(&self, vm_id: &str, change: impl FnOnce(&mut VmActivity)) {
        let stamp = SystemTime::now();
        let mut vms = self.lock();
        if let Some(vm) = vms.get_mut(vm_id) {
            change(vm);
            vm.last = Some(stamp);
            return;
        }
        let vm = vms.entry(vm_id.to_string()).or_default();
        change(vm);
        vm.last = Some(stamp);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, VmActivity>> {
        // A panic elsewhere while holding the lock leaves plain counters
        // behind; they are still usable.
        self.vms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Work counted as activity while it lasts (see [`ActiveConnections::hold`]).
pub struct HeldActivity {
    vm_id: String,
    registry: Arc<ActiveConnections>,
}

impl Drop for HeldActivity {
    fn drop(&mut self) {
        self.registry.close(&self.vm_id);
    }
}

/// Keeps one exchange counted as open; reports its end when dropped.
pub(crate) struct ActivityGuard {
    vm_id: Arc<str>,
    registry: Arc<ActiveConnections>,
    resolver: Arc<dyn RouteResolver>,
    end_event: ActivityEvent,
    tick_every: Duration,
    last_tick: Instant,
}

impl ActivityGuard {
    pub(crate) fn begin(
        vm_id: Arc<str>,
        registry: Arc<ActiveConnections>,
        resolver: Arc<dyn RouteResolver>,
        tick_every: Duration,
    ) -> Self {
        registry.open(&vm_id);
        resolver.activity(&vm_id, ActivityEvent::RequestStarted);
        Self {
            vm_id,
            registry,
            resolver,
            end_event: ActivityEvent::RequestFinished,
            tick_every,
            last_tick: Instant::now(),
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
        if self.last_tick.elapsed() >= self.tick_every {
            self.force_tick();
        }
    }

    pub(crate) fn force_tick(&mut self) {
        self.last_tick = Instant::now();
        self.registry.touch(&self.vm_id);
        self.resolver.activity(&self.vm_id, ActivityEvent::StillOpen);
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.registry.close(&self.vm_id);
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
        registry.open("vm-a");
        registry.open("vm-a");
        registry.open("vm-b");
        assert_eq!(registry.active_count("vm-a"), 2);
        registry.close("vm-a");
        assert!(registry.is_active("vm-a"));
        registry.close("vm-a");
        assert!(!registry.is_active("vm-a"));
        assert!(registry.is_active("vm-b"));
        assert!(registry.last_activity("vm-a").is_some());
    }

    #[test]
    fn closing_more_than_opened_never_underflows() {
        let registry = ActiveConnections::new();
        registry.close("vm-a");
        assert_eq!(registry.active_count("vm-a"), 0);
    }
}
