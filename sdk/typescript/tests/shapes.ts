// Every schema of /openapi.json as the SDK's interfaces see it: each key of
// each interface, "required" or "optional". The compiler checks these
// tables against the interfaces (a key missing, extra or of the wrong
// kind fails the build); the live test compares them with the daemon's
// document, so the two cannot drift apart.

import type * as t from "../src/types.js";

type RequiredKeys<T> = { [K in keyof T]-?: {} extends Pick<T, K> ? never : K }[keyof T];
/** For each key of T: whether it is required. */
export type Shape<T> = { [K in keyof T]-?: K extends RequiredKeys<T> ? "required" : "optional" };

const R = "required" as const;
const O = "optional" as const;

const quotas: Shape<t.Quotas> = { max_vms: O, max_vcpus: O, max_mem_mib: O, max_snapshots: O, max_routes: O };
/** ttl_seconds, idle_timeout_seconds and on_idle: on VMs, templates and their create requests. */
const lifetime = { ttl_seconds: O, idle_timeout_seconds: O, on_idle: O } as const;
/** cmd, env, cwd, user and timeout_s: both forms of exec. */
const execCommand = { cmd: R, env: O, cwd: O, user: O, timeout_s: O } as const;
const apiKey: Shape<t.ApiKey> = { id: R, name: R, prefix: R, role: R, quotas: R, created_at: R, revoked_at: O };

/** By the schema's name in `components.schemas`. */
export const SHAPES: Record<string, Record<string, "required" | "optional">> = {
  Error: { error: R } satisfies Shape<t.ApiErrorBody>,
  Health: { status: R, version: R, vms: R, images: R, snapshot_storage: R } satisfies Shape<t.Health>,
  Image: {
    id: R, name: R, profile: R, kernel_path: R, bzimage_path: R, initrd_path: R, rootfs_path: R,
    login_user: R, boot_args: R, size_bytes: R, created_at: R,
  } satisfies Shape<t.Image>,
  RegisterImage: {
    name: R, kernel_path: R, initrd_path: O, rootfs_path: O, login_user: O, boot_args: O,
  } satisfies Shape<t.RegisterImage>,
  Template: {
    id: R, name: R, image_id: R, vcpu_count: R, mem_mib: R, user_data: R, user_data_base64: O,
    ssh_authorized_keys: R, egress: O, ...lifetime, created_at: R, owner_key_id: O, warm_pool_size: R,
    warm_pool: R,
  } satisfies Shape<t.Template>,
  CreateTemplate: {
    name: R, image_id: R, vcpu_count: O, mem_mib: O, user_data: O, user_data_base64: O,
    ssh_authorized_keys: O, egress: O, ...lifetime, warm_pool_size: O,
  } satisfies Shape<t.CreateTemplate>,
  Vm: {
    agent: R, id: R, state: R, restart_policy: R, image_id: R, vcpu_count: R, mem_mib: R, limits: R,
    enable_network: R, hypervisor: R, created_at: R, updated_at: R, guest_ip: O, guest_mac: O,
    tap_name: O, ssh_port: O, egress: O, user_data: O, user_data_base64: O, ssh_authorized_keys: O,
    pid: O, state_reason: O, ready_at: O, last_activity_at: O, idle_status: O, snapshot_id: O,
    ...lifetime, expires_at: O, owner_key_id: O, pool_template_id: O,
  } satisfies Shape<t.Vm>,
  CreateVm: {
    image_id: O, template_id: O, vcpu_count: O, mem_mib: O, enable_network: O, guest_ip: O,
    guest_mac: O, user_data: O, user_data_base64: O, ssh_authorized_keys: O, restart_policy: O,
    egress: O, ...lifetime, snapshot_id: O,
  } satisfies Shape<t.CreateVm>,
  VmEvent: { vm_id: R, kind: R, from_state: R, to_state: R, reason: R, at: R } satisfies Shape<t.VmEvent>,
  Event: { id: R, vm_id: R, kind: R, from_state: R, to_state: R, reason: R, at: R } satisfies Shape<t.Event>,
  HostEvent: { kind: R, detail: R, at: R } satisfies Shape<t.HostEvent>,
  Snapshot: {
    id: R, vm_id: R, created_at: R, hypervisor: R, artefacts: R, total_bytes: R, durable: R, owner_key_id: O,
  } satisfies Shape<t.Snapshot>,
  Route: {
    id: R, vm_id: R, subdomain: R, target_port: R, auto_wake: R, created_at: R, owner_key_id: O,
  } satisfies Shape<t.Route>,
  CreateRoute: { subdomain: O, target_port: R, auto_wake: O } satisfies Shape<t.CreateRoute>,
  RestoreVm: { snapshot_id: O } satisfies Shape<t.RestoreVm>,
  ForkVm: { count: O } satisfies Shape<t.ForkVm>,
  ForkedVms: { vms: R } satisfies Shape<t.ForkedVms>,
  Quotas: quotas,
  ApiKey: apiKey,
  KeyUsage: { ...apiKey, usage: R } satisfies Shape<t.KeyUsage>,
  NewApiKey: { ...apiKey, key: R } satisfies Shape<t.NewApiKey>,
  UpdateKey: { quotas: R } satisfies Shape<t.UpdateKey>,
  ReassignVm: { key_id: R } satisfies Shape<t.ReassignVm>,
  CreateKey: { name: R, role: O, quotas: O } satisfies Shape<t.CreateKey>,
  AgentStatus: { connected: R, version: R } satisfies Shape<t.AgentStatus>,
  ExecRequest: { ...execCommand, stdin: O, stdin_base64: O } satisfies Shape<t.ExecRequest>,
  ExecStart: { ...execCommand, tty: O, rows: O, cols: O } satisfies Shape<t.ExecStart>,
  ExecResult: {
    exit_code: R, signal: O, stdout: O, stdout_base64: O, stderr: O, stderr_base64: O, timed_out: R,
    duration_ms: R, truncated: R, stdout_truncated: R, stderr_truncated: R,
  } satisfies Shape<t.ExecResult>,
  ExecExit: { type: R, exit_code: R, signal: R, timed_out: R, duration_ms: R } satisfies Shape<t.ExecExit>,
  FileWritten: { path: R, bytes: R } satisfies Shape<t.FileWritten>,
  FileEntry: { name: R, type: R, size: R, mode: R, uid: R, gid: R, modified: R } satisfies Shape<t.FileEntry>,
  FileListing: { path: R, entries: R } satisfies Shape<t.FileListing>,
  AuditEntry: { id: R, at: R, key_id: R, method: R, path: R, status: R } satisfies Shape<t.AuditEntry>,
};
