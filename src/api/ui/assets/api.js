// The API client. The key lives in this tab's sessionStorage only: it is
// gone when the tab closes and never written to disk by the page.

const KEY_ITEM = 'hatch.api_key';

/** An error answer, as the API worded it (or a transport failure, code "unreachable"). */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

let onUnauthorized = () => {};

/** Called when the daemon answers 401 (the key was revoked, say). */
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export function savedKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function saveKey(key) {
  sessionStorage.setItem(KEY_ITEM, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
}

export function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${savedKey() || ''}`, ...extra };
}

/** The API's error object from an answer that is not 2xx. */
export async function errorOf(response) {
  const text = await response.text().catch(() => '');
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON (a proxy in between, say): show what came.
  }
  const error = body && body.error;
  if (response.status === 401) onUnauthorized();
  return new ApiError(
    response.status,
    (error && error.code) || `http_${response.status}`,
    (error && error.message) || text || response.statusText,
    (error && error.field) || null,
  );
}

async function send(method, path, body, accept) {
  const headers = authHeaders({ Accept: accept });
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (cause) {
    throw new ApiError(0, 'unreachable', `the daemon could not be reached (${cause.message})`, null);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

/** A JSON call; resolves to the parsed body (null for 204). */
export async function call(method, path, body) {
  const response = await send(method, path, body, 'application/json');
  if (response.status === 204) return null;
  return response.json();
}

/** A GET whose answer is text (metrics, console). */
export async function getText(path) {
  const response = await send('GET', path, undefined, 'text/plain');
  return response.text();
}

/**
 * A GET whose answer streams text (a followed console): `onText` gets each
 * decoded piece until the answer ends or `signal` aborts.
 */
export async function streamText(path, onText, signal) {
  let response;
  try {
    response = await fetch(path, { headers: authHeaders({ Accept: 'text/plain' }), signal });
  } catch (cause) {
    if (signal.aborted) return;
    throw new ApiError(0, 'unreachable', `the daemon could not be reached (${cause.message})`, null);
  }
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      onText(decoder.decode(value, { stream: true }));
    }
  } catch (cause) {
    if (!signal.aborted) throw cause;
  }
}
