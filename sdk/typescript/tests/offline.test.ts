// What needs no daemon: the SSE parser, the error mapping, URL checks.

import assert from "node:assert/strict";
import { test } from "node:test";

import * as hatch from "../src/index.js";
import { errorFromResponse } from "../src/errors.js";
import { lines, parse } from "../src/sse.js";

async function* chunks(...parts: string[]): AsyncGenerator<Uint8Array> {
  for (const part of parts) yield new TextEncoder().encode(part);
}

test("SSE: messages split across chunks, comments skipped, a cut-off tail dropped", async () => {
  const stream = chunks(": keep-alive\n", "id: 7\nevent: st", 'ate\ndata: {"id": 7}\n\n', "data:first\r\ndata: second\r\n\r\n", "id: 9\ndata: {}\n");
  const messages = [];
  for await (const message of parse(lines(stream))) messages.push(message);
  assert.deepEqual(messages, [
    { id: "7", event: "state", data: '{"id": 7}' },
    { id: "7", event: "message", data: "first\nsecond" },
  ]);
});

test("error codes map to classes with field and retry-after", () => {
  let err = errorFromResponse(400, '{"error": {"code": "invalid_field", "message": "bad", "field": "vcpu_count"}}');
  assert.ok(err instanceof hatch.ValidationError);
  assert.deepEqual([err.status, err.code, err.field], [400, "invalid_field", "vcpu_count"]);
  err = errorFromResponse(403, '{"error": {"code": "quota_exceeded", "message": "m", "field": "max_vms"}}');
  assert.ok(err instanceof hatch.QuotaExceeded && err instanceof hatch.Forbidden);
  err = errorFromResponse(429, '{"error": {"code": "rate_limited", "message": "slow", "field": null}}', "3");
  assert.ok(err instanceof hatch.RateLimited);
  assert.equal(err.retryAfter, 3);
  err = errorFromResponse(409, '{"error": {"code": "invalid_state", "message": "m", "field": null}}');
  assert.ok(err instanceof hatch.InvalidState && !(err instanceof hatch.Conflict));
  assert.equal(err.name, "InvalidState");
});

test("unknown codes and bodies that are not the error JSON keep what was said", () => {
  let err = errorFromResponse(418, '{"error": {"code": "teapot", "message": "short", "field": null}}');
  assert.equal(err.constructor, hatch.ApiError);
  assert.equal(err.code, "teapot");
  err = errorFromResponse(502, "bad gateway");
  assert.deepEqual([err.code, err.detail], ["http_502", "bad gateway"]);
});

test("unsupported URLs are refused", () => {
  assert.throws(() => new hatch.Client({ url: "unix:/run/hatch.sock" }), hatch.HatchError);
});

test("every method named in OPERATIONS exists on the client", () => {
  for (const name of Object.keys(hatch.OPERATIONS)) {
    assert.equal(typeof (hatch.Client.prototype as unknown as Record<string, unknown>)[name], "function", name);
  }
});
