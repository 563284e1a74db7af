// The VM list: state, address, SSH port, routes and idle status of each VM,
// redrawn whenever the store changes.

import { actionButtons } from './actions.js';
import { byId, el, fill, orDash } from './dom.js';

function routesCell(routes) {
  if (!routes || routes.length === 0) return '—';
  return routes.map((r) => el('div', { className: 'route' }, `${r.subdomain} → :${r.target_port}`, r.auto_wake ? ' (auto-wake)' : ''));
}

export function stateBadge(vm) {
  return el('span', { className: `state state-${vm.state}`, title: vm.state_reason || '' }, vm.state);
}

function row(vm, store, report) {
  return el(
    'tr',
    { dataset: { vm: vm.id, state: vm.state } },
    el('td', {}, el('a', { href: `#/vm/${encodeURIComponent(vm.id)}`, className: 'vm-link' }, vm.id)),
    el('td', { className: 'col-state' }, stateBadge(vm)),
    el('td', { className: 'col-ip' }, orDash(vm.guest_ip)),
    el('td', { className: 'col-ssh' }, orDash(vm.ssh_port)),
    el('td', { className: 'col-routes' }, routesCell(store.routes.get(vm.id))),
    el('td', { className: 'col-idle' }, orDash(vm.idle_status)),
    el('td', {}, actionButtons(vm, { store, report })),
  );
}

/** Redraws the row of VM `id`, or the whole list (`id` null, or a VM not shown yet or gone). */
export function renderList(store, report, id = null) {
  const shown = id && [...byId('vm-rows').children].find((tr) => tr.dataset.vm === id);
  const vm = id && store.vms.get(id);
  if (shown && vm) {
    shown.replaceWith(row(vm, store, report));
    return;
  }
  const vms = store.sorted();
  fill(byId('vm-rows'), vms.map((vm) => row(vm, store, report)));
  byId('vm-empty').hidden = vms.length > 0;
}
