/** The client: one method per operation of `/openapi.json`, plus waiting helpers. */

import { readFileSync } from "node:fs";
import { join } from "node:path";

import { ApiError, HatchError, NotFound, UnexpectedState, WaitTimeout, errorFromResponse } from "./errors.js";
import { ExecSession } from "./guest.js";
import { lines, parse, Parser } from "./sse.js";
import { TEXT, WebSocketConnection } from "./websocket.js";
import type {
  ApiKey,
  AuditEntry,
  CreateKey,
  CreateRoute,
  CreateTemplate,
  CreateVm,
  Event,
  ExecRequest,
  ExecResult,
  ExecStart,
  FileListing,
  FileWritten,
  ForkedVms,
  ForkVm,
  Health,
  HostEvent,
  Image,
  KeyUsage,
  NewApiKey,
  Quotas,
  ReassignVm,
  RegisterImage,
  RestoreVm,
  Route,
  Snapshot,
  Template,
  UpdateKey,
  Vm,
  VmEvent,
  VmState,
} from "./types.js";

export const DEFAULT_URL = "http://127.0.0.1:8080";

/**
 * Every operation of the API (method and path as `/openapi.json` writes them),
 * by the name of the {@link Client} method that calls it. The methods take
 * their paths from here, so this table is what the SDK covers.
 */
export const OPERATIONS = {
  health: ["GET", "/healthz"],
  openapi: ["GET", "/openapi.json"],
  metrics: ["GET", "/metrics"],
  hostEvents: ["GET", "/host/events"],
  registerImage: ["POST", "/images"],
  listImages: ["GET", "/images"],
  getImage: ["GET", "/images/{id}"],
  deleteImage: ["DELETE", "/images/{id}"],
  createTemplate: ["POST", "/templates"],
  listTemplates: ["GET", "/templates"],
  getTemplate: ["GET", "/templates/{id}"],
  deleteTemplate: ["DELETE", "/templates/{id}"],
  createVm: ["POST", "/vms"],
  listVms: ["GET", "/vms"],
  getVm: ["GET", "/vms/{id}"],
  deleteVm: ["DELETE", "/vms/{id}"],
  stopVm: ["POST", "/vms/{id}/stop"],
  startVm: ["POST", "/vms/{id}/start"],
  fork: ["POST", "/vms/{id}/fork"],
  reassignVm: ["POST", "/vms/{id}/owner"],
  logs: ["GET", "/vms/{id}/logs"],
  vmEvents: ["GET", "/vms/{id}/events"],
  events: ["GET", "/events"],
  snapshotVm: ["POST", "/vms/{id}/snapshot"],
  restoreVm: ["POST", "/vms/{id}/restore"],
  listSnapshots: ["GET", "/vms/{id}/snapshots"],
  deleteSnapshot: ["DELETE", "/snapshots/{id}"],
  createRoute: ["POST", "/vms/{id}/routes"],
  listRoutes: ["GET", "/vms/{id}/routes"],
  deleteRoute: ["DELETE", "/routes/{id}"],
  createKey: ["POST", "/keys"],
  listKeys: ["GET", "/keys"],
  me: ["GET", "/keys/me"],
  updateKey: ["PATCH", "/keys/{id}"],
  revokeKey: ["DELETE", "/keys/{id}"],
  audit: ["GET", "/audit"],
  exec: ["POST", "/vms/{id}/exec"],
  execStream: ["GET", "/vms/{id}/exec"],
  uploadFile: ["PUT", "/vms/{id}/files"],
  downloadFile: ["GET", "/vms/{id}/files"],
  listFiles: ["GET", "/vms/{id}/files"],
  deleteFile: ["DELETE", "/vms/{id}/files"],
} as const satisfies Record<string, readonly [string, string]>;

export type OperationName = keyof typeof OPERATIONS;

export interface ClientOptions {
  /** Default `HATCH_URL`, else `http://127.0.0.1:8080` (http:// or https://). */
  url?: string;
  /** Default `HATCH_API_KEY`, else `$HATCH_DATA_DIR/admin.key` when readable (as on the daemon's host). */
  apiKey?: string;
  /** Milliseconds a plain request may take (default 60 000); operations get more. */
  timeoutMs?: number;
  /** Another fetch (a test double, or one with a custom dispatcher); default the global fetch. */
  fetch?: typeof fetch;
}

/** Ask for the answer as soon as the operation is recorded (202, the VM in its transitional state). */
export interface AsyncOption {
  async?: boolean;
}

export interface WaitOptions {
  /** Milliseconds to wait before throwing {@link WaitTimeout} (default 300 000). */
  timeoutMs?: number;
}

type Query = Record<string, string | number | boolean | undefined>;

/** A file's content for {@link Client.uploadFile}: bytes, text, or a stream sent as it is read. */
export type FileContent = Uint8Array | string | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

/** What a command runs with (both forms of exec). */
export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  /** Seconds before the command and its process group are killed (default 60, at most 3600). */
  timeoutS?: number;
}

interface RequestOptions {
  id?: string;
  body?: unknown;
  /** Sent as application/octet-stream instead of a JSON body. */
  raw?: FileContent;
  query?: Query;
  timeoutMs?: number;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** Operations finish in the server; give their requests more than a plain one. */
const OPERATION_MS = 600_000;

function queryString(query: Query | undefined): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined) params.append(name, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

/** The request fields of {@link ExecOptions}, as the API spells them. */
function execFields(options: ExecOptions): Omit<ExecRequest, "cmd"> {
  const fields: Omit<ExecRequest, "cmd"> = {};
  if (options.env !== undefined) fields.env = options.env;
  if (options.cwd !== undefined) fields.cwd = options.cwd;
  if (options.user !== undefined) fields.user = options.user;
  if (options.timeoutS !== undefined) fields.timeout_s = options.timeoutS;
  return fields;
}

function adminKeyFromDataDir(): string | undefined {
  try {
    return readFileSync(join(process.env.HATCH_DATA_DIR || "/var/lib/hatch", "admin.key"), "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

function asyncQuery(options: AsyncOption | undefined): Query {
  return options?.async ? { async: true } : {};
}

/** A connection to one Hatch daemon. */
export class Client {
  readonly url: string;
  private readonly apiKey: string | undefined;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(options: ClientOptions = {}) {
    const url = options.url ?? process.env.HATCH_URL ?? DEFAULT_URL;
    if (!/^https?:\/\/[^/]/.test(url)) {
      throw new HatchError(`unsupported URL ${JSON.stringify(url)}: expected http:// or https:// (Node's fetch has no unix sockets)`);
    }
    this.url = url.replace(/\/+$/, "");
    this.apiKey = (options.apiKey ?? (process.env.HATCH_API_KEY || adminKeyFromDataDir()))?.trim() || undefined;
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.fetchImpl = options.fetch ?? fetch;
  }

  /** The path of `operation` for the object `id`. */
  private path(operation: OperationName, id: string | undefined): string {
    return OPERATIONS[operation][1].replace("{id}", encodeURIComponent(id ?? ""));
  }

  /** Sends one request of `operation`; an error status throws the mapped exception. */
  private async send(operation: OperationName, options: RequestOptions = {}): Promise<Response> {
    const method = OPERATIONS[operation][0];
    const path = this.path(operation, options.id);
    const headers: Record<string, string> = { Accept: "application/json", ...options.headers };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    let body: RequestInit["body"];
    if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers["Content-Type"] = "application/json";
    } else if (options.raw !== undefined) {
      body = options.raw as RequestInit["body"];
      headers["Content-Type"] = "application/octet-stream";
    }
    const signal = options.signal ?? AbortSignal.timeout(options.timeoutMs ?? this.timeoutMs);
    let response: Response;
    try {
      // duplex: a streamed body goes out as it is read (Node's fetch needs it said).
      const init = { method, headers, body, signal, duplex: "half" } as RequestInit;
      response = await this.fetchImpl(this.url + path + queryString(options.query), init);
    } catch (err) {
      throw new HatchError(`${method} ${this.url}${path}: ${(err as Error).message}`, { cause: err });
    }
    if (response.status >= 400) {
      throw errorFromResponse(response.status, await response.text(), response.headers.get("Retry-After"));
    }
    return response;
  }

  /** One request answered with JSON (undefined for 204) or text. */
  private async call<T>(operation: OperationName, options: RequestOptions = {}): Promise<T> {
    const response = await this.send(operation, options);
    const text = await response.text();
    if (!text) return undefined as T;
    return ((response.headers.get("Content-Type") ?? "").includes("json") ? JSON.parse(text) : text) as T;
  }

  // --- health and the API description ----------------------------------------

  health(): Promise<Health> {
    return this.call("health");
  }

  /** The OpenAPI 3.1 document describing every endpoint. */
  openapi(): Promise<Record<string, unknown>> {
    return this.call("openapi");
  }

  /** Prometheus text format (admin keys only). */
  metrics(): Promise<string> {
    return this.call("metrics");
  }

  hostEvents(): Promise<HostEvent[]> {
    return this.call("hostEvents");
  }

  // --- images -----------------------------------------------------------------

  registerImage(image: RegisterImage): Promise<Image> {
    return this.call("registerImage", { body: image });
  }

  listImages(): Promise<Image[]> {
    return this.call("listImages");
  }

  /** By id or name. */
  getImage(id: string): Promise<Image> {
    return this.call("getImage", { id });
  }

  async deleteImage(id: string): Promise<void> {
    await this.call("deleteImage", { id });
  }

  // --- templates --------------------------------------------------------------

  createTemplate(template: CreateTemplate): Promise<Template> {
    return this.call("createTemplate", { body: template });
  }

  listTemplates(): Promise<Template[]> {
    return this.call("listTemplates");
  }

  getTemplate(id: string): Promise<Template> {
    return this.call("getTemplate", { id });
  }

  async deleteTemplate(id: string): Promise<void> {
    await this.call("deleteTemplate", { id });
  }

  // --- VMs --------------------------------------------------------------------

  /**
   * Creates and boots a VM. By default the answer comes once it runs;
   * `waitReady` answers once the guest accepts SSH (the daemon waits, up to
   * `readyTimeoutSeconds`); `async` answers at once with the VM in
   * `creating` (see {@link waitReady}).
   */
  createVm(spec: CreateVm = {}, options: AsyncOption & { waitReady?: boolean; readyTimeoutSeconds?: number } = {}): Promise<Vm> {
    const query: Query = asyncQuery(options);
    if (options.waitReady) {
      query.wait = "ready";
      if (options.readyTimeoutSeconds !== undefined) query.timeout = `${Math.ceil(options.readyTimeoutSeconds)}s`;
    }
    const timeoutMs = Math.max(OPERATION_MS, ((options.readyTimeoutSeconds ?? 0) + 30) * 1000);
    return this.call("createVm", { body: spec, query, timeoutMs });
  }

  listVms(): Promise<Vm[]> {
    return this.call("listVms");
  }

  getVm(id: string): Promise<Vm> {
    return this.call("getVm", { id });
  }

  /** Deletes the VM and everything it held; `async`: answers with the VM in `deleting` (see {@link waitDeleted}). */
  deleteVm(id: string): Promise<void>;
  deleteVm(id: string, options: { async: true }): Promise<Vm>;
  deleteVm(id: string, options: AsyncOption = {}): Promise<Vm | void> {
    return this.call("deleteVm", { id, query: asyncQuery(options), timeoutMs: OPERATION_MS });
  }

  stopVm(id: string, options: AsyncOption = {}): Promise<Vm> {
    return this.call("stopVm", { id, query: asyncQuery(options), timeoutMs: OPERATION_MS });
  }

  startVm(id: string, options: AsyncOption = {}): Promise<Vm> {
    return this.call("startVm", { id, query: asyncQuery(options), timeoutMs: OPERATION_MS });
  }

  /**
   * `count` (1 to 16) new VMs from the VM as it is now (a running VM pauses
   * while its memory is saved; a snapshotted one's snapshot is used),
   * answered once they are ready; all of them or none. Each has its own id,
   * IP, MAC, SSH port, hostname and cloud-init instance-id; memory,
   * processes and disk (and SSH host keys) are the parent's. The image needs
   * hatch-agent (else AgentUnavailable, 409). For one VM from a stored
   * snapshot: `createVm({ snapshot_id })`.
   */
  async fork(id: string, count = 1): Promise<Vm[]> {
    const body: ForkVm = { count };
    const answer: ForkedVms = await this.call("fork", { id, body, timeoutMs: OPERATION_MS });
    return answer.vms;
  }

  /** Gives the VM, with its snapshots and routes, to another key (admin keys only). */
  reassignVm(id: string, keyId: string): Promise<Vm> {
    const body: ReassignVm = { key_id: keyId };
    return this.call("reassignVm", { id, body });
  }

  /** The end of the VM's serial console. */
  logs(id: string, options: { bytes?: number } = {}): Promise<string> {
    return this.call("logs", { id, query: { bytes: options.bytes } });
  }

  /**
   * The console's end, then what the guest prints next, line by line
   * (`?follow=true`); break out of the loop or abort `signal` to close it.
   */
  async *followLogs(id: string, options: { bytes?: number; signal?: AbortSignal } = {}): AsyncGenerator<string> {
    const abort = new AbortController();
    const forward = () => abort.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", forward, { once: true });
    try {
      const response = await this.send("logs", { id, query: { bytes: options.bytes, follow: true }, signal: abort.signal });
      if (response.body) yield* lines(response.body);
    } finally {
      options.signal?.removeEventListener("abort", forward);
      abort.abort();
    }
  }

  vmEvents(id: string): Promise<VmEvent[]> {
    return this.call("vmEvents", { id });
  }

  /**
   * The event log as it streams (Server-Sent Events): what was recorded
   * after `since` (0: from the first), then, with `follow` (default true),
   * what happens next. `vm` keeps one VM's (the stream ends after its
   * deletion). Break out of the loop or abort `signal` to close it.
   */
  async *events(options: { vm?: string; since?: number; follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<Event> {
    const abort = new AbortController();
    const forward = () => abort.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", forward, { once: true });
    try {
      const response = await this.send("events", {
        query: { vm: options.vm, since: options.since, follow: options.follow ?? true },
        headers: { Accept: "text/event-stream" },
        signal: abort.signal,
      });
      if (!response.body) return;
      for await (const message of parse(lines(response.body))) {
        yield JSON.parse(message.data) as Event;
      }
    } finally {
      options.signal?.removeEventListener("abort", forward);
      abort.abort();
    }
  }

  // --- snapshots --------------------------------------------------------------

  /** Saves a running VM (memory, device state, disk) and stops its VMM; `async`: answers with the VM in `snapshotting`. */
  snapshotVm(id: string): Promise<Snapshot>;
  snapshotVm(id: string, options: { async: true }): Promise<Vm>;
  snapshotVm(id: string, options: AsyncOption = {}): Promise<Snapshot | Vm> {
    return this.call("snapshotVm", { id, query: asyncQuery(options), timeoutMs: OPERATION_MS });
  }

  /** Runs a snapshotted VM again (from the snapshot it was suspended with unless `snapshotId` is given). */
  restoreVm(id: string, options: AsyncOption & { snapshotId?: string } = {}): Promise<Vm> {
    const body: RestoreVm = options.snapshotId ? { snapshot_id: options.snapshotId } : {};
    return this.call("restoreVm", { id, body, query: asyncQuery(options), timeoutMs: OPERATION_MS });
  }

  listSnapshots(vmId: string): Promise<Snapshot[]> {
    return this.call("listSnapshots", { id: vmId });
  }

  async deleteSnapshot(id: string): Promise<void> {
    await this.call("deleteSnapshot", { id });
  }

  // --- routes -----------------------------------------------------------------

  createRoute(vmId: string, route: CreateRoute): Promise<Route> {
    return this.call("createRoute", { id: vmId, body: route });
  }

  listRoutes(vmId: string): Promise<Route[]> {
    return this.call("listRoutes", { id: vmId });
  }

  async deleteRoute(id: string): Promise<void> {
    await this.call("deleteRoute", { id });
  }

  // --- keys and audit ---------------------------------------------------------

  /** A new key; its secret (`key`) is shown only in this answer. */
  createKey(key: CreateKey): Promise<NewApiKey> {
    return this.call("createKey", { body: key });
  }

  listKeys(): Promise<ApiKey[]> {
    return this.call("listKeys");
  }

  /** The calling key: role, quotas and what its objects use. */
  me(): Promise<KeyUsage> {
    return this.call("me");
  }

  /** Replaces the key's quotas. */
  updateKey(id: string, quotas: Quotas): Promise<ApiKey> {
    const body: UpdateKey = { quotas };
    return this.call("updateKey", { id, body });
  }

  async revokeKey(id: string): Promise<void> {
    await this.call("revokeKey", { id });
  }

  audit(options: { limit?: number } = {}): Promise<AuditEntry[]> {
    return this.call("audit", { query: { limit: options.limit } });
  }

  // --- commands and files in the guest (its agent) ------------------------------
  // A snapshotted VM is woken by these calls; a VM whose image has no agent
  // throws AgentUnavailable (409).

  /**
   * Runs `cmd` (an argv, no shell) in the guest and answers when it has
   * ended: exit_code (null when a signal ended it), stdout and stderr (see
   * `outputBytes`), timed_out, truncated.
   */
  exec(id: string, cmd: string[], options: ExecOptions & { stdin?: string | Uint8Array } = {}): Promise<ExecResult> {
    const body: ExecRequest = { cmd, ...execFields(options) };
    if (typeof options.stdin === "string") body.stdin = options.stdin;
    else if (options.stdin !== undefined) body.stdin_base64 = Buffer.from(options.stdin).toString("base64");
    const timeoutMs = Math.max(this.timeoutMs, ((options.timeoutS ?? 60) + 30) * 1000);
    return this.call("exec", { id, body, timeoutMs });
  }

  /**
   * Starts `cmd` over a WebSocket: write its stdin, read its output as it
   * comes, resize its terminal (`tty`). No timeout unless `timeoutS` is given.
   */
  async execStream(id: string, cmd: string[], options: ExecOptions & { tty?: boolean; rows?: number; cols?: number } = {}): Promise<ExecSession> {
    const start: ExecStart = { cmd, ...execFields(options) };
    if (options.tty) start.tty = true;
    if (options.rows !== undefined) start.rows = options.rows;
    if (options.cols !== undefined) start.cols = options.cols;
    const headers: Record<string, string> = this.apiKey ? { Authorization: `Bearer ${this.apiKey}` } : {};
    const socket = await WebSocketConnection.open(this.url + this.path("execStream", id), headers);
    socket.send(TEXT, Buffer.from(JSON.stringify(start), "utf8"));
    return new ExecSession(socket);
  }

  /** Writes `content` to the absolute `path` in the guest (atomically); `mode` as 0o755 or "0755". */
  uploadFile(id: string, path: string, content: FileContent, options: { mode?: number | string; uid?: number; gid?: number } = {}): Promise<FileWritten> {
    const mode = typeof options.mode === "number" ? options.mode.toString(8).padStart(4, "0") : options.mode;
    const query = { path, mode, uid: options.uid, gid: options.gid };
    return this.call("uploadFile", { id, query, raw: content, timeoutMs: OPERATION_MS });
  }

  /** The guest file's bytes. */
  async downloadFile(id: string, path: string): Promise<Buffer> {
    const response = await this.send("downloadFile", { id, query: { path }, timeoutMs: OPERATION_MS });
    return Buffer.from(await response.arrayBuffer());
  }

  /** The guest file as a stream (large files), with its mode, uid and gid from the headers. */
  async openFile(id: string, path: string, options: { signal?: AbortSignal } = {}): Promise<Response> {
    return this.send("downloadFile", { id, query: { path }, signal: options.signal });
  }

  /** A guest directory's entries (name, type, size, mode, uid, gid, modified). */
  listFiles(id: string, path: string): Promise<FileListing> {
    return this.call("listFiles", { id, query: { path, list: true } });
  }

  async deleteFile(id: string, path: string): Promise<void> {
    await this.call("deleteFile", { id, query: { path } });
  }

  // --- waiting ----------------------------------------------------------------

  /** Waits until the VM runs and its guest accepts SSH (`ready_at` set). */
  async waitReady(id: string, options: WaitOptions = {}): Promise<Vm> {
    const vm = await this.waitFor(id, (vm) => vm?.state === "running" && !!vm.ready_at, "ready", new Set(), options);
    return vm!;
  }

  /** Waits until the VM is in one of `states` (e.g. after an asynchronous operation). */
  async waitState(id: string, states: VmState | VmState[], options: WaitOptions = {}): Promise<Vm> {
    const wanted = new Set<string>(Array.isArray(states) ? states : [states]);
    const vm = await this.waitFor(id, (vm) => !!vm && wanted.has(vm.state), [...wanted].join(" or "), wanted, options);
    return vm!;
  }

  /** Waits until the VM no longer exists. */
  async waitDeleted(id: string, options: WaitOptions = {}): Promise<void> {
    await this.waitFor(id, (vm) => vm === null, "deleted", new Set(), options);
  }

  private async getOrNull(id: string): Promise<Vm | null> {
    try {
      return await this.getVm(id);
    } catch (err) {
      if (err instanceof NotFound) return null;
      throw err;
    }
  }

  /**
   * Looks at the VM each time one of its events arrives on `GET /events`
   * (no polling): first the cursor of its last recorded event, then the VM,
   * then the events after that cursor, so a change between the two looks is
   * never missed. A stream that breaks is opened again from the cursor.
   */
  private async waitFor(
    id: string,
    done: (vm: Vm | null) => boolean,
    what: string,
    wanted: Set<string>,
    options: WaitOptions,
  ): Promise<Vm | null> {
    const timeoutMs = options.timeoutMs ?? 300_000;
    const deadline = AbortSignal.timeout(timeoutMs);
    let cursor = 0;
    let vm: Vm | null = null;
    const check = () => {
      if (done(vm)) return true;
      if (vm === null) throw new UnexpectedState(`VM ${id} was deleted while waiting for it to be ${what}`, vm);
      if (vm.state === "error" && !wanted.has("error") && vm.restart_policy !== "on-failure") {
        throw new UnexpectedState(`VM ${id} is in error (${vm.state_reason ?? "no reason given"}) while waiting for it to be ${what}`, vm);
      }
      if (deadline.aborted) throw new WaitTimeout(`VM ${id} was not ${what} after ${timeoutMs / 1000}s (it is ${vm.state})`, vm);
      return false;
    };
    try {
      try {
        for await (const event of this.events({ vm: id, since: 0, follow: false, signal: deadline })) cursor = event.id;
      } catch (err) {
        if (!(err instanceof NotFound)) throw err; // already gone: the look below tells
      }
      vm = await this.getOrNull(id);
      while (!check()) {
        try {
          const response = await this.send("events", {
            query: { vm: id, since: cursor },
            headers: { Accept: "text/event-stream" },
            signal: deadline,
          });
          const parser = new Parser();
          for await (const line of lines(response.body!)) {
            const message = parser.feed(line);
            if (!message) continue;
            cursor = Number(message.id ?? cursor);
            vm = await this.getOrNull(id);
            if (check()) return vm;
          }
        } catch (err) {
          // Deleted before the stream opened: the look below tells. A broken
          // stream is opened again; other API errors and the deadline end the wait.
          if (err instanceof ApiError && !(err instanceof NotFound)) throw err;
          if (deadline.aborted) throw new WaitTimeout(`VM ${id} was not ${what} after ${timeoutMs / 1000}s`, vm);
        }
        vm = await this.getOrNull(id);
      }
      return vm;
    } catch (err) {
      if (deadline.aborted && !(err instanceof WaitTimeout) && !(err instanceof UnexpectedState)) {
        throw new WaitTimeout(`VM ${id} was not ${what} after ${timeoutMs / 1000}s`, vm);
      }
      throw err;
    }
  }
}
