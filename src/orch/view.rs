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

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::model::{Route, Vm};
use crate::store::{Store, StoreError};

use super::observe::{VmChange, VmObserver};

#[derive(Default)]
struct Tables {
    /// By VM id, with the order the VM was first seen in (the database's
    /// rowid order for VMs created in the same instant).
    vms: HashMap<String, (u64, Arc<Vm>)>,
    next_seq: u64,
    /// By subdomain.
    routes: HashMap<String, Route>,
}

impl Tables {
    fn put_vm(&mut self, vm: Vm) {
        let seq = match self.vms.get(&vm.id) {
            Some((seq, _)) => *seq,
            None => {
                self.next_seq += 1;
                self.next_seq
            }
        };
        self.vms.insert(vm.id.clone(), (seq, Arc::new(vm)));
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
    tables: RwLock<Tables>,
    changes: watch::Sender<u64>,
}

impl View {
    /// Reads every VM and route from the database.
    pub fn load(store: Store) -> Result<View, StoreError> {
        let mut tables = Tables::default();
        for vm in store.list_vms()? {
            tables.put_vm(vm);
        }
        for route in store.list_all_routes()? {
            tables.routes.insert(route.subdomain.clone(), route);
        }
        Ok(View {
            store,
            tables: RwLock::new(tables),
            changes: watch::channel(0).0,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        // Every write replaces whole entries, so a panic cannot leave one half-made.
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Every VM but those waiting in a warm pool, oldest first.
    pub fn vms(&self) -> Vec<Vm> {
        self.select(|vm| vm.pool_template_id.is_none())
    }

    /// The VMs waiting in the warm pool of `template_id`, oldest first.
    pub fn pool_vms(&self, template_id: &str) -> Vec<Vm> {
        self.select(|vm| vm.pool_template_id.as_deref() == Some(template_id))
    }

    /// The VMs of one API key, oldest first.
    pub fn vms_of(&self, owner: &str) -> Vec<Vm> {
        self.select(|vm| vm.owner_key_id.as_deref() == Some(owner))
    }

    fn select(&self, keep: impl Fn(&Vm) -> bool) -> Vec<Vm> {
        let mut found: Vec<(u64, Arc<Vm>)> = self.read().vms.values().filter(|(_, vm)| keep(vm)).cloned().collect();
        found.sort_by(|(a_seq, a), (b_seq, b)| a.created_at.cmp(&b.created_at).then(a_seq.cmp(b_seq)));
        found.into_iter().map(|(_, vm)| Vm::clone(&vm)).collect()
    }

    pub fn vm(&self, id: &str) -> Option<Vm> {
        self.read().vms.get(id).map(|(_, vm)| Vm::clone(vm))
    }

    /// `look` applied to the route of `subdomain` and its VM (if known),
    /// under one read lock and without copying either: the proxy does this
    /// for every request.
    pub fn with_route<T>(&self, subdomain: &str, look: impl FnOnce(&Route, Option<&Vm>) -> T) -> Option<T> {
        let tables = self.read();
        let route = tables.routes.get(subdomain)?;
        Some(look(route, tables.vms.get(&route.vm_id).map(|(_, vm)| &**vm)))
    }

    /// A receiver that sees a new value after every change of any VM.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
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
                let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
                match vm {
                    Some(vm) => tables.put_vm(vm),
                    None => {
                        tables.vms.remove(vm_id);
                    }
                }
                tables.put_routes(vm_id, routes);
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
