//! An in-memory copy of every VM and route, for the reads on the hot paths
//! (`GET /vms`, the proxy's route lookup, `wait=ready`) so they never wait
//! for SQLite or for a writer holding it.
//!
//! The database stays the source of truth: the view is loaded from it at
//! start-up and kept current by the orchestrator's observer hook, which
//! rereads the changed VM's row and routes right after each change is
//! stored, under the VM's lock (so two changes of one VM reach the view in
//! the order they were stored). Every change also bumps a counter that
//! waiters (`wait=ready`) watch, so they wake on the event instead of
//! polling.
//!
//! Each VM is kept with its JSON as `GET /vms` shows it (agent status
//! included), rendered again only when its row changes or its agent link
//! reports a connect or disconnect; a listing then only joins bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::agent::Agents;
use crate::model::{AgentStatus, Route, Timestamp, Vm};
use crate::store::{Store, StoreError};

use super::observe::{VmChange, VmObserver};

/// Where a VM sits in every listing: oldest first; VMs created in the same
/// instant in the order the view first saw them (the database's rowid order).
type Place = (Timestamp, u64);

/// One VM, and its JSON as a listing shows it.
struct Entry {
    /// As stored (its `agent` is the default: the live status is not stored).
    vm: Arc<Vm>,
    /// The agent status `json` shows.
    agent: AgentStatus,
    /// `None` when rendering failed; a listing renders it again and reports
    /// the error.
    json: Option<Vec<u8>>,
}

impl Entry {
    fn new(vm: Arc<Vm>, agent: AgentStatus) -> Entry {
        let json = render(&vm, &agent)
            .inspect_err(|error| tracing::error!(vm = %vm.id, %error, "rendering a VM as JSON failed"))
            .ok();
        Entry { vm, agent, json }
    }
}

/// `vm` as the API shows it, with `agent` as its agent's status.
fn render(vm: &Vm, agent: &AgentStatus) -> serde_json::Result<Vec<u8>> {
    let mut shown = Vm::clone(vm);
    shown.agent = agent.clone();
    serde_json::to_vec(&shown)
}

/// Which VMs a listing holds.
#[derive(Debug, Clone, Copy)]
pub enum Listing<'a> {
    /// Every VM but those waiting in a warm pool.
    Listed,
    /// The VMs waiting in the warm pool of this template.
    Pool(&'a str),
    /// The VMs of this API key.
    Owner(&'a str),
}

impl Listing<'_> {
    fn holds(&self, vm: &Vm) -> bool {
        match self {
            Listing::Listed => vm.pool_template_id.is_none(),
            Listing::Pool(template_id) => vm.pool_template_id.as_deref() == Some(*template_id),
            Listing::Owner(owner) => vm.owner_key_id.as_deref() == Some(*owner),
        }
    }
}

#[derive(Default)]
struct Tables {
    places: HashMap<String, Place>,
    vms: BTreeMap<Place, Entry>,
    next_seq: u64,
    /// By subdomain.
    routes: HashMap<String, Route>,
}

impl Tables {
    fn put_vm(&mut self, vm: Vm, agent: AgentStatus) {
        let seq = match self.places.remove(&vm.id) {
            Some(place) => {
                self.vms.remove(&place);
                place.1
            }
            None => {
                self.next_seq += 1;
                self.next_seq
            }
        };
        let place = (vm.created_at, seq);
        self.places.insert(vm.id.clone(), place);
        self.vms.insert(place, Entry::new(Arc::new(vm), agent));
    }

    fn remove_vm(&mut self, vm_id: &str) {
        if let Some(place) = self.places.remove(vm_id) {
            self.vms.remove(&place);
        }
    }

    fn entry_mut(&mut self, vm_id: &str) -> Option<&mut Entry> {
        let place = self.places.get(vm_id)?;
        self.vms.get_mut(place)
    }

    fn put_routes(&mut self, vm_id: &str, routes: Vec<Route>) {
        self.routes.retain(|_, route| route.vm_id != vm_id);
        for route in routes {
            self.routes.insert(route.subdomain.clone(), route);
        }
    }
}

pub struct View {
    store: Store,
    /// The live agent links, whose status every VM's JSON shows.
    agents: Arc<Agents>,
    tables: RwLock<Tables>,
    /// Bumped after every change of the tables: an answer read from them
    /// holds until this moves (the proxy reuses routes on that promise).
    version: AtomicU64,
    changes: watch::Sender<u64>,
}

impl View {
    /// Reads every VM and route from the database.
    pub fn load(store: Store, agents: Arc<Agents>) -> Result<View, StoreError> {
        let mut tables = Tables::default();
        for vm in store.list_vms()? {
            let agent = agents.status(&vm.id);
            tables.put_vm(vm, agent);
        }
        for route in store.list_all_routes()? {
            tables.routes.insert(route.subdomain.clone(), route);
        }
        Ok(View {
            store,
            agents,
            tables: RwLock::new(tables),
            version: AtomicU64::new(0),
            changes: watch::channel(0).0,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        // Every write replaces whole entries, so a panic cannot leave one half-made.
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The VMs of `listing`, oldest first, as stored (agent status not filled in).
    pub fn vms(&self, listing: Listing<'_>) -> Vec<Vm> {
        self.read()
            .vms
            .values()
            .filter(|entry| listing.holds(&entry.vm))
            .map(|entry| Vm::clone(&entry.vm))
            .collect()
    }

    /// The JSON array of the VMs of `listing`, oldest first, each with its
    /// agent's live status: the kept renderings joined, except for a VM
    /// whose link changed a moment ago and has not reported it yet (a
    /// stream that just ended), which is rendered afresh.
    pub fn vms_json(&self, listing: Listing<'_>) -> serde_json::Result<Vec<u8>> {
        let tables = self.read();
        let mut json = vec![b'['];
        for entry in tables.vms.values().filter(|entry| listing.holds(&entry.vm)) {
            if json.len() > 1 {
                json.push(b',');
            }
            let agent = self.agents.status(&entry.vm.id);
            match &entry.json {
                Some(kept) if entry.agent == agent => json.extend_from_slice(kept),
                _ => json.extend(render(&entry.vm, &agent)?),
            }
        }
        json.push(b']');
        Ok(json)
    }

    pub fn vm(&self, id: &str) -> Option<Vm> {
        let tables = self.read();
        let place = tables.places.get(id)?;
        Some(Vm::clone(&tables.vms[place].vm))
    }

    /// `look` applied to the route of `subdomain` and its VM (if known),
    /// under one read lock and without copying either: the proxy does this
    /// for every request.
    pub fn with_route<T>(&self, subdomain: &str, look: impl FnOnce(&Route, Option<&Vm>) -> T) -> Option<T> {
        let tables = self.read();
        let route = tables.routes.get(subdomain)?;
        let vm = tables.places.get(&route.vm_id).and_then(|place| tables.vms.get(place));
        Some(look(route, vm.map(|entry| &*entry.vm)))
    }

    /// Moves after every change of a VM or its routes (see [`View::with_route`]).
    /// Read it before reading the view: an answer read after it holds
    /// until it moves.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// A receiver that sees a new value after every change of any VM.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Renders the VM again if its agent's status is no longer the one its
    /// JSON shows (its link connected or ended). The status is read under
    /// the write lock, so of two reports racing the later one wins.
    pub fn agent_changed(&self, vm_id: &str) {
        let mut tables = self.write();
        let agent = self.agents.status(vm_id);
        if let Some(entry) = tables.entry_mut(vm_id) {
            if entry.agent != agent {
                *entry = Entry::new(entry.vm.clone(), agent);
            }
        }
    }

    /// Rereads one VM and its routes. A read that fails leaves the entry
    /// as it was (and says so); the next change of the VM reads it again.
    fn refresh(&self, vm_id: &str) {
        let read = self
            .store
            .get_vm(vm_id)
            .and_then(|vm| Ok((vm, self.store.list_routes(vm_id)?)));
        match read {
            Ok((vm, routes)) => {
                let mut tables = self.write();
                match vm {
                    Some(vm) => tables.put_vm(vm, self.agents.status(vm_id)),
                    None => tables.remove_vm(vm_id),
                }
                tables.put_routes(vm_id, routes);
                self.version.fetch_add(1, Ordering::Release);
            }
            Err(error) => tracing::error!(vm = %vm_id, %error, "refreshing the in-memory view failed"),
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl VmObserver for View {
    fn on_vm_change(&self, event: &VmChange<'_>) {
        self.refresh(event.vm_id());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{Image, VmState};

    fn image(store: &Store) -> String {
        let image: Image = serde_json::from_value(json!({
            "id": "img-view", "name": "view", "profile": "registered", "kernel_path": "/vmlinux",
            "bzimage_path": null, "initrd_path": null, "rootfs_path": null, "login_user": "root",
            "boot_args": "", "size_bytes": 1, "created_at": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        store.insert_image(&image).unwrap();
        image.id
    }

    /// A VM without networking, created at `created_at`.
    fn vm(id: &str, image_id: &str, created_at: &str) -> Vm {
        serde_json::from_value(json!({
            "id": id, "state": "stopped", "image_id": image_id, "vcpu_count": 1, "mem_mib": 256,
            "limits": crate::model::VmmLimits::for_vm(1, 256), "enable_network": false,
            "hypervisor": "qemu", "created_at": created_at, "updated_at": created_at,
        }))
        .unwrap()
    }

    /// What `GET /vms` answered before the view kept JSON: the stored VMs,
    /// oldest first, serialised.
    fn serialised(store: &Store, keep: impl Fn(&Vm) -> bool) -> String {
        let vms: Vec<Vm> = store.list_vms().unwrap().into_iter().filter(keep).collect();
        serde_json::to_string(&vms).unwrap()
    }

    fn json(view: &View, listing: Listing<'_>) -> String {
        String::from_utf8(view.vms_json(listing).unwrap()).unwrap()
    }

    #[test]
    fn view_lists_the_json_serialising_the_stored_vms_gives() {
        let store = Store::open_in_memory().unwrap();
        let image_id = image(&store);
        let early = vm("vm-early", &image_id, "2026-01-01T00:00:00Z");
        // Recorded first but created later; two created in the same instant.
        store
            .insert_vm(&vm("vm-late", &image_id, "2026-01-03T00:00:00Z"), None)
            .unwrap();
        store.insert_vm(&early, None).unwrap();
        store
            .insert_vm(&vm("vm-twin-b", &image_id, "2026-01-02T00:00:00Z"), None)
            .unwrap();
        store
            .insert_vm(&vm("vm-twin-a", &image_id, "2026-01-02T00:00:00Z"), None)
            .unwrap();
        let view = View::load(store.clone(), Arc::default()).unwrap();
        assert_eq!(json(&view, Listing::Listed), serialised(&store, |_| true));
        assert_eq!(json(&view, Listing::Owner("key-a")), "[]");

        // A change, an owner, a VM recorded later and a deletion, each
        // shown as soon as the view is told.
        let mut changed = early.clone();
        changed.state = VmState::Running;
        changed.owner_key_id = Some("key-a".into());
        store.update_vm(&changed).unwrap();
        view.on_vm_change(&VmChange::Updated { vm_id: &changed.id });
        let newest = vm("vm-newest", &image_id, "2026-01-04T00:00:00Z");
        store.insert_vm(&newest, None).unwrap();
        view.on_vm_change(&VmChange::Updated { vm_id: &newest.id });
        store.delete_vm("vm-late").unwrap();
        view.on_vm_change(&VmChange::Deleted { vm_id: "vm-late" });
        assert_eq!(json(&view, Listing::Listed), serialised(&store, |_| true));
        assert_eq!(
            json(&view, Listing::Owner("key-a")),
            serialised(&store, |vm| vm.owner_key_id.as_deref() == Some("key-a"))
        );
        let ids: Vec<String> = view.vms(Listing::Listed).into_iter().map(|vm| vm.id).collect();
        assert_eq!(ids, ["vm-early", "vm-twin-b", "vm-twin-a", "vm-newest"]);
    }
}
