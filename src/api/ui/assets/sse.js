// GET /events read with fetch(): EventSource cannot send the Authorization
// header. Parses Server-Sent Events itself and, after a dropped connection,
// resumes with Last-Event-ID so no event is missed or repeated.

import { authHeaders, errorOf } from './api.js';

/** Incremental SSE parser (the WHATWG event-stream rules). */
export class SseParser {
  constructor(dispatch) {
    this.dispatch = dispatch;
    this.buffer = '';
    this.reset();
  }

  reset() {
    this.id = null;
    this.event = '';
    this.data = [];
  }

  push(text) {
    this.buffer += text;
    for (;;) {
      const end = this.buffer.search(/\r\n|\r|\n/);
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (end < 0 || (end === this.buffer.length - 1 && this.buffer[end] === '\r')) return;
      const line = this.buffer.slice(0, end);
      const width = this.buffer.startsWith('\r\n', end) ? 2 : 1;
      this.buffer = this.buffer.slice(end + width);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length > 0) {
        this.dispatch({ id: this.id, event: this.event || 'message', data: this.data.join('\n') });
      }
      this.reset();
      return;
    }
    if (line.startsWith(':')) return; // a keep-alive comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Follows the event log from now on. `onOpen(fresh)` is called on each
 * connection (`fresh`: no cursor yet, so whatever the page holds may be
 * stale and should be read again); `onEvent` gets each event as JSON;
 * `onStatus` gets "live" or "reconnecting: <why>".
 */
export class EventStream {
  constructor({ onOpen, onEvent, onStatus }) {
    this.onOpen = onOpen;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.lastId = null;
    this.controller = null;
    this.stopped = false;
  }

  start() {
    this.run();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async run() {
    let wait = 500;
    while (!this.stopped) {
      try {
        await this.connect();
        wait = 500;
        if (!this.stopped) this.onStatus('reconnecting: the stream ended');
      } catch (error) {
        if (this.stopped) return;
        if (error.status === 401) {
          this.stopped = true;
          return;
        }
        this.onStatus(`reconnecting: ${error.message}`);
      }
      await sleep(wait);
      wait = Math.min(wait * 2, 10000);
    }
  }

  async connect() {
    this.controller = new AbortController();
    const headers = authHeaders({ Accept: 'text/event-stream' });
    const fresh = this.lastId === null;
    if (!fresh) headers['Last-Event-ID'] = this.lastId;
    // `since=now`: only what happens from here on; the page reads the present itself.
    const url = fresh ? '/events?since=now' : '/events';
    const response = await fetch(url, { headers, signal: this.controller.signal, cache: 'no-store' });
    if (!response.ok) throw await errorOf(response);
    this.onStatus('live');
    this.onOpen(fresh);
    const parser = new SseParser((message) => {
      if (message.id !== null) this.lastId = message.id;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      this.onEvent(event);
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      parser.push(decoder.decode(value, { stream: true }));
    }
  }
}
