// One VM's page: its fields, its events (recorded, then live), its serial
// console (followed live) and its usage from GET /metrics.

import { call, getText, streamText } from './api.js';
import { actionButtons } from './actions.js';
import { stateBadge } from './list.js';
import { byId, bytes, el, fill, orDash, when } from './dom.js';

/** How much console text the page keeps (the newest). */
const CONSOLE_KEEP = 256 * 1024;
const METRICS_EVERY_MS = 5000;

function details(vm, routes) {
  const rows = [
    ['State', stateBadge(vm)],
    ['Reason', orDash(vm.state_reason)],
    ['Image', orDash(vm.image_id)],
    ['Size', `${vm.vcpu_count} vCPU, ${vm.mem_mib} MiB`],
    ['Hypervisor', orDash(vm.hypervisor)],
    ['IP', orDash(vm.guest_ip)],
    ['MAC', orDash(vm.guest_mac)],
    ['SSH port', orDash(vm.ssh_port)],
    ['Routes', routes && routes.length > 0 ? routes.map((r) => `${r.subdomain} → :${r.target_port}`).join(', ') : '—'],
    ['Idle', orDash(vm.idle_status)],
    ['Last activity', when(vm.last_activity_at)],
    ['Ready since', when(vm.ready_at)],
    ['Created', when(vm.created_at)],
    ['SSH keys', vm.ssh_authorized_keys && vm.ssh_authorized_keys.length > 0 ? vm.ssh_authorized_keys.join('\n') : '—'],
    ['User data', vm.user_data ?? (vm.user_data_base64 ? `(binary, base64) ${vm.user_data_base64}` : '—')],
  ];
  return rows.map(([name, value]) => el('tr', {}, el('th', {}, name), el('td', { className: `field-${name.toLowerCase().replace(/ /g, '_')}` }, value)));
}

function eventLine(event) {
  const change = event.kind === 'state' ? `${orDash(event.from_state)} → ${event.to_state || 'deleted'}` : event.kind;
  return el('li', { className: `event event-${event.kind}` }, el('time', {}, when(event.at)), ' ', el('b', {}, change), event.reason ? ` — ${event.reason}` : '');
}

/** The numbers GET /metrics has for `id` (Prometheus text format). */
export function vmMetrics(text, id) {
  const found = {};
  const label = `vm="${id.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.includes(label)) continue;
    const match = /^(\w+)\{([^}]*)\}\s+(\S+)/.exec(line);
    if (!match) continue;
    const direction = /direction="(\w+)"/.exec(match[2]);
    found[direction ? `${match[1]}:${direction[1]}` : match[1]] = Number(match[3]);
  }
  return found;
}

function metricsRows(found) {
  const rows = [
    ['CPU time', found.hatch_vm_cpu_seconds_total !== undefined ? `${found.hatch_vm_cpu_seconds_total.toFixed(2)} s` : '—'],
    ['Memory', bytes(found.hatch_vm_memory_bytes)],
    ['Network from guest', bytes(found['hatch_vm_network_bytes_total:rx'])],
    ['Network to guest', bytes(found['hatch_vm_network_bytes_total:tx'])],
  ];
  return rows.map(([name, value]) => el('tr', {}, el('th', {}, name), el('td', {}, value)));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Follows the console into `screen`, keeping the newest text; reads the
 * tail again after a broken connection (a daemon restart, say) and stops
 * when the VM is gone or `signal` aborts.
 */
async function followConsole(url, screen, signal, report) {
  let reported = false;
  while (!signal.aborted) {
    let kept = null;
    try {
      await streamText(url, (text) => {
        // Each connection starts with the tail again: it replaces what was shown.
        kept = ((kept ?? '') + text).slice(-CONSOLE_KEEP);
        const atEnd = screen.scrollTop + screen.clientHeight >= screen.scrollHeight - 8;
        screen.textContent = kept;
        if (atEnd) screen.scrollTop = screen.scrollHeight;
      }, signal);
    } catch (error) {
      if (error.status === 404 || error.status === 401) return;
      // A dropped connection is shown by the live indicator; refusals are shown once.
      if (error.status >= 400 && !reported) report(error);
      reported = reported || error.status >= 400;
    }
    await sleep(2000);
  }
}

/** Shows VM `id`; returns a function that stops its streams and timers. */
export function showVm(id, { store, report, admin }) {
  const path = `/vms/${encodeURIComponent(id)}`;
  const stops = [];
  fill(byId('vm-title'), id);
  fill(byId('vm-events'));
  fill(byId('vm-console'));
  fill(byId('vm-metrics'));
  byId('vm-gone').hidden = true;

  const draw = () => {
    const vm = store.vms.get(id);
    if (!vm) {
      byId('vm-gone').hidden = false;
      fill(byId('vm-actions'));
      return;
    }
    fill(byId('vm-details'), details(vm, store.routes.get(id)));
    fill(byId('vm-actions'), actionButtons(vm, { store, report }));
  };
  stops.push(store.onChange((changed) => (changed === null || changed === id) && draw()));
  store.refresh(id).then(draw);

  // Recorded events first; live ones are added as they come.
  // One that happens while the recorded ones are read comes both ways: shown once.
  const events = byId('vm-events');
  const seen = new Set();
  const fresh = (event) => {
    const key = [event.kind, event.at, event.to_state, event.reason].join('|');
    return !seen.has(key) && seen.add(key);
  };
  stops.push(store.onEvent((event) => event.vm_id === id && fresh(event) && events.append(eventLine(event))));
  call('GET', `${path}/events`)
    .then((recorded) => events.prepend(...recorded.filter(fresh).map(eventLine)))
    .catch(report);

  const controller = new AbortController();
  stops.push(() => controller.abort());
  followConsole(`${path}/logs?follow=true&bytes=65536`, byId('vm-console'), controller.signal, report);

  const metrics = byId('vm-metrics');
  if (admin) {
    const read = () =>
      getText('/metrics')
        .then((text) => fill(metrics, metricsRows(vmMetrics(text, id))))
        .catch(report);
    read();
    const timer = setInterval(read, METRICS_EVERY_MS);
    stops.push(() => clearInterval(timer));
  } else {
    fill(metrics, el('tr', {}, el('td', {}, 'Usage numbers come from GET /metrics, which needs an admin key.')));
  }
  return () => stops.forEach((stop) => stop());
}
