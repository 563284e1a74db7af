// The VMs the page knows: read with GET /vms, then kept current from the
// live event stream (a state change is shown at once, then the VM and its
// routes are read again for the fields an event does not carry).

import { ApiError, call } from './api.js';

const vmPath = (id) => `/vms/${encodeURIComponent(id)}`;

export class VmStore {
  constructor() {
    this.vms = new Map();
    this.routes = new Map();
    this.changeListeners = new Set();
    this.eventListeners = new Set();
    this.timers = new Map();
  }

  /** `listener(id)` after a VM changed (`id` null: the whole list). */
  onChange(listener) {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** `listener(event)` for every live event. */
  onEvent(listener) {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  changed(id) {
    for (const listener of this.changeListeners) listener(id);
  }

  sorted() {
    return [...this.vms.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  }

  async routesOf(id) {
    try {
      return await call('GET', `${vmPath(id)}/routes`);
    } catch {
      return [];
    }
  }

  async reload() {
    const vms = await call('GET', '/vms');
    const routes = await Promise.all(vms.map((vm) => this.routesOf(vm.id)));
    this.vms = new Map(vms.map((vm) => [vm.id, vm]));
    this.routes = new Map(vms.map((vm, i) => [vm.id, routes[i]]));
    this.changed(null);
  }

  /** Forgets everything (on log-out). */
  clear() {
    this.vms.clear();
    this.routes.clear();
    this.changed(null);
  }

  /** Takes a VM object an operation answered with. */
  put(vm) {
    this.vms.set(vm.id, vm);
    this.changed(vm.id);
  }

  remove(id) {
    if (this.vms.delete(id)) {
      this.routes.delete(id);
      this.changed(id);
    }
  }

  async refresh(id) {
    try {
      const [vm, routes] = await Promise.all([call('GET', vmPath(id)), this.routesOf(id)]);
      this.vms.set(id, vm);
      this.routes.set(id, routes);
      this.changed(id);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) this.remove(id);
    }
  }

  /** Reads a VM again soon; a burst of events reads it once. */
  schedule(id) {
    if (this.timers.has(id)) return;
    this.timers.set(
      id,
      setTimeout(() => {
        this.timers.delete(id);
        this.refresh(id);
      }, 150),
    );
  }

  apply(event) {
    const id = event.vm_id;
    if (id) {
      const vm = this.vms.get(id);
      if (event.kind === 'state' && !event.to_state) {
        // The VM's deletion finished.
        this.remove(id);
      } else {
        if (vm && event.kind === 'state') {
          vm.state = event.to_state;
          this.changed(id);
        }
        this.schedule(id);
      }
    }
    for (const listener of this.eventListeners) listener(event);
  }
}
