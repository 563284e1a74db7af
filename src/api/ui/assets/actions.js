// The operations on one VM, as buttons offered in the states that allow
// them (the API decides anyway: a refusal is shown as it words it).

import { call } from './api.js';
import { byId, el, fill } from './dom.js';

const OPERATIONS = [
  { op: 'start', label: 'Start', states: ['stopped', 'error'] },
  { op: 'stop', label: 'Stop', states: ['running'] },
  { op: 'snapshot', label: 'Snapshot', states: ['running'] },
  { op: 'restore', label: 'Restore', states: ['snapshotted'] },
];
const DELETABLE = ['running', 'stopped', 'snapshotted', 'error'];

/** Asks before deleting; resolves to whether the user confirmed. */
export function confirmDelete(id) {
  const dialog = byId('confirm');
  fill(byId('confirm-text'), 'Delete ', el('code', {}, id), '? Its disk and snapshots are removed; this cannot be undone.');
  return new Promise((resolve) => {
    const done = (answer) => {
      byId('confirm-ok').removeEventListener('click', ok);
      byId('confirm-cancel').removeEventListener('click', cancel);
      dialog.removeEventListener('cancel', cancel);
      dialog.close();
      resolve(answer);
    };
    const ok = () => done(true);
    const cancel = (event) => {
      event.preventDefault();
      done(false);
    };
    byId('confirm-ok').addEventListener('click', ok);
    byId('confirm-cancel').addEventListener('click', cancel);
    dialog.addEventListener('cancel', cancel);
    dialog.showModal();
  });
}

/**
 * The buttons for `vm`. Each operation is asked to answer at once
 * (`?async=true`: 202 with the VM in its transitional state); the rest
 * arrives on the event stream.
 */
export function actionButtons(vm, { store, report }) {
  const path = `/vms/${encodeURIComponent(vm.id)}`;
  const run = async (button, method, url) => {
    button.disabled = true;
    try {
      const answer = await call(method, url);
      if (answer && answer.id) store.put(answer);
    } catch (error) {
      report(error);
      button.disabled = false;
    }
  };
  const buttons = OPERATIONS.filter((o) => o.states.includes(vm.state)).map((o) =>
    el('button', {
      type: 'button',
      className: `op op-${o.op}`,
      dataset: { op: o.op, vm: vm.id },
      onclick: (event) => run(event.currentTarget, 'POST', `${path}/${o.op}?async=true`),
    }, o.label),
  );
  if (DELETABLE.includes(vm.state)) {
    buttons.push(
      el('button', {
        type: 'button',
        className: 'op op-delete danger',
        dataset: { op: 'delete', vm: vm.id },
        onclick: async (event) => {
          const button = event.currentTarget;
          if (await confirmDelete(vm.id)) run(button, 'DELETE', `${path}?async=true`);
        },
      }, 'Delete'),
    );
  }
  return el('span', { className: 'actions' }, buttons);
}
