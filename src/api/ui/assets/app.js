// The dashboard: log in with an API key, then the VM list (live from
// GET /events) or one VM's page (#/vm/<id>).

import { forgetKey, call, saveKey, savedKey, whenUnauthorized } from './api.js';
import { loadSources, setUpCreate } from './create.js';
import { byId, el, fill } from './dom.js';
import { renderList } from './list.js';
import { EventStream } from './sse.js';
import { VmStore } from './store.js';
import { showVm } from './vm.js';

const store = new VmStore();
let stream = null;
let me = null;
let leaveVmPage = () => {};

/** Shows an API error as the API worded it (null: hides the last one). */
function report(error) {
  const box = byId('error');
  if (!error) {
    box.hidden = true;
    return;
  }
  const detail = [error.status ? `HTTP ${error.status}` : null, error.code, error.field ? `field ${error.field}` : null]
    .filter(Boolean)
    .join(', ');
  fill(byId('error-text'), error.message);
  fill(byId('error-detail'), detail);
  box.hidden = false;
}

function setStatus(text) {
  const live = byId('live');
  live.textContent = text;
  live.className = text === 'live' ? 'live on' : 'live off';
}

function route() {
  leaveVmPage();
  leaveVmPage = () => {};
  const match = /^#\/vm\/(.+)$/.exec(window.location.hash);
  byId('list-view').hidden = Boolean(match);
  byId('vm-view').hidden = !match;
  if (match) {
    leaveVmPage = showVm(decodeURIComponent(match[1]), { store, report, admin: me && me.role === 'admin' });
  }
}

function showLogin(message) {
  byId('login').hidden = false;
  byId('app').hidden = true;
  byId('logout').hidden = true;
  byId('live').hidden = true;
  fill(byId('who'));
  if (message) report({ message });
}

function logout(message) {
  forgetKey();
  if (stream) stream.stop();
  stream = null;
  leaveVmPage();
  leaveVmPage = () => {};
  me = null;
  store.clear();
  showLogin(message);
}

async function enter() {
  try {
    me = await call('GET', '/keys/me');
  } catch (error) {
    forgetKey();
    showLogin();
    report(error);
    return;
  }
  report(null);
  byId('login').hidden = true;
  byId('app').hidden = false;
  byId('logout').hidden = false;
  byId('live').hidden = false;
  fill(byId('who'), el('span', {}, `${me.name} (${me.role}, ${me.prefix}…)`));
  stream = new EventStream({
    // A fresh stream (no cursor): read the list again, so nothing that
    // happened before it opened is missed.
    onOpen: (fresh) => fresh && store.reload().catch(report),
    onEvent: (event) => {
      store.apply(event);
      if (event.kind === 'error' && event.vm_id) report({ message: `${event.vm_id}: ${event.reason || 'an operation failed'}`, code: 'error event' });
    },
    onStatus: setStatus,
  });
  stream.start();
  loadSources().catch(report);
  route();
}

function start() {
  whenUnauthorized(() => me && logout('The key was refused (revoked?): log in again.'));
  byId('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = byId('login-key').value.trim();
    byId('login-key').value = '';
    if (!key) return;
    saveKey(key);
    enter();
  });
  byId('logout').addEventListener('click', () => logout());
  byId('error-close').addEventListener('click', () => report(null));
  byId('refresh-sources').addEventListener('click', () => loadSources().catch(report));
  window.addEventListener('hashchange', () => me && route());
  setUpCreate(store, report);
  store.onChange((id) => renderList(store, report, id));
  if (savedKey()) enter();
  else showLogin();
}

start();
