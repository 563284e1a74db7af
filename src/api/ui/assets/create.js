// The create form: an image or template, size, user data and SSH keys.
// Empty fields are left out, so the daemon's defaults apply; nothing is
// checked here that the API checks (its words are shown instead).

import { call } from './api.js';
import { byId, el, fill } from './dom.js';

export async function loadSources() {
  const [images, templates] = await Promise.all([call('GET', '/images'), call('GET', '/templates')]);
  fill(
    byId('create-source'),
    el('option', { value: '' }, 'default image'),
    el('optgroup', { label: 'Images' }, images.map((i) => el('option', { value: `image:${i.id}` }, `${i.name} (${i.profile})`))),
    templates.length > 0 &&
      el('optgroup', { label: 'Templates' }, templates.map((t) => el('option', { value: `template:${t.id}` }, t.name))),
  );
}

function request() {
  const body = {};
  const [kind, id] = byId('create-source').value.split(/:(.*)/s);
  if (kind === 'image') body.image_id = id;
  if (kind === 'template') body.template_id = id;
  for (const field of ['vcpu_count', 'mem_mib']) {
    const text = byId(`create-${field}`).value.trim();
    // A number when it reads as one; otherwise as typed, for the API to name.
    if (text !== '') body[field] = /^-?\d+$/.test(text) ? Number(text) : text;
  }
  const userData = byId('create-user_data').value;
  if (userData.trim() !== '') body.user_data = userData;
  const keys = byId('create-ssh_authorized_keys')
    .value.split('\n')
    .map((k) => k.trim())
    .filter((k) => k !== '');
  if (keys.length > 0) body.ssh_authorized_keys = keys;
  if (!byId('create-enable_network').checked) body.enable_network = false;
  return body;
}

export function setUpCreate(store, report) {
  const form = byId('create-form');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    for (const marked of form.querySelectorAll('[aria-invalid]')) marked.removeAttribute('aria-invalid');
    const button = byId('create-submit');
    button.disabled = true;
    try {
      const vm = await call('POST', '/vms?async=true', request());
      store.put(vm);
      report(null);
    } catch (error) {
      const input = error.field && byId(`create-${error.field}`);
      if (input) input.setAttribute('aria-invalid', 'true');
      report(error);
    } finally {
      button.disabled = false;
    }
  });
}
