/** Typed shapes of the API's JSON bodies (the schemas of `/openapi.json`). */

export type VmState =
  | "creating"
  | "starting"
  | "running"
  | "stopping"
  | "stopped"
  | "snapshotting"
  | "snapshotted"
  | "restoring"
  | "error"
  | "deleting";
export type EventKind = "state" | "ready" | "repair" | "idle" | "error" | "agent";
/** internet (default), none (only DHCP and DNS on the gateway), or at most 64 CIDRs the guest may reach. */
export type Egress = "internet" | "none" | string[];
export type Hypervisor = "qemu" | "firecracker";
export type RestartPolicy = "never" | "on-failure";
/** What happens to a VM once idle: snapshot, stop, or none (never idled). */
export type OnIdle = "snapshot" | "stop" | "none";
export type Role = "admin" | "member";

export interface VmLimits {
  memory_max_bytes: number;
  cpu_max: string;
  pids_max: number;
}

/** The guest agent's connection: exec and file calls need it. */
export interface AgentStatus {
  connected: boolean;
  /** hatch-agent's version, while connected. */
  version: string | null;
}

export interface Vm {
  agent: AgentStatus;
  id: string;
  state: VmState;
  restart_policy: RestartPolicy;
  image_id: string;
  vcpu_count: number;
  mem_mib: number;
  limits: VmLimits;
  enable_network: boolean;
  hypervisor: Hypervisor;
  created_at: string;
  updated_at: string;
  guest_ip?: string;
  guest_mac?: string;
  tap_name?: string;
  ssh_port?: number;
  egress?: Egress;
  /** cloud-init user data when its bytes are UTF-8 text. */
  user_data?: string;
  /** The user data in standard base64 when it is not UTF-8. */
  user_data_base64?: string;
  ssh_authorized_keys?: string[];
  pid?: number;
  state_reason?: string;
  /** Set once the guest accepts SSH. */
  ready_at?: string;
  last_activity_at?: string;
  idle_status?: string;
  /** While snapshotted: the snapshot restore and wake load. */
  snapshot_id?: string;
  /** Deleted this long after creation (1 to 31536000 seconds). */
  ttl_seconds?: number;
  /** Idle this long before on_idle applies (default HATCH_IDLE_TIMEOUT). */
  idle_timeout_seconds?: number;
  on_idle?: OnIdle;
  /** created_at + ttl_seconds: when the VM is deleted. */
  expires_at?: string;
  owner_key_id?: string;
  /** An admin looking at a VM waiting in a template's warm pool: that template. */
  pool_template_id?: string;
}

export interface CreateVm {
  image_id?: string;
  template_id?: string;
  vcpu_count?: number;
  mem_mib?: number;
  enable_network?: boolean;
  guest_ip?: string;
  guest_mac?: string;
  /** cloud-init user data as text (at most 64 KiB); not with user_data_base64. */
  user_data?: string;
  /** cloud-init user data of any bytes in standard base64; not with user_data. */
  user_data_base64?: string;
  ssh_authorized_keys?: string[];
  restart_policy?: RestartPolicy;
  egress?: Egress;
  /** Deleted this long after creation (1 to 31536000 seconds). */
  ttl_seconds?: number;
  /** Idle this long before on_idle applies (default HATCH_IDLE_TIMEOUT). */
  idle_timeout_seconds?: number;
  on_idle?: OnIdle;
  /**
   * Restore the VM from this snapshot (any the key may read) with a fresh
   * identity; the guest is the snapshot's, so image_id, template_id,
   * vcpu_count, mem_mib, enable_network, user_data(_base64),
   * ssh_authorized_keys, guest_ip and guest_mac are refused with it.
   */
  snapshot_id?: string;
}

export interface Image {
  id: string;
  name: string;
  profile: "debian" | "minimal" | "registered";
  kernel_path: string | null;
  bzimage_path: string | null;
  initrd_path: string | null;
  rootfs_path: string | null;
  login_user: string;
  boot_args: string;
  size_bytes: number;
  created_at: string;
}

export interface RegisterImage {
  name: string;
  kernel_path: string;
  initrd_path?: string;
  rootfs_path?: string;
  login_user?: string;
  boot_args?: string;
}

export interface Template {
  id: string;
  name: string;
  image_id: string;
  vcpu_count: number;
  mem_mib: number;
  user_data: string | null;
  user_data_base64?: string;
  ssh_authorized_keys: string[];
  egress?: Egress;
  /** Deleted this long after creation (1 to 31536000 seconds). */
  ttl_seconds?: number;
  /** Idle this long before on_idle applies (default HATCH_IDLE_TIMEOUT). */
  idle_timeout_seconds?: number;
  on_idle?: OnIdle;
  created_at: string;
  owner_key_id?: string;
  /** VMs kept booted and snapshotted for takes (0 to 8). */
  warm_pool_size: number;
  warm_pool: WarmPool;
}

/** How full a template's warm pool is. */
export interface WarmPool {
  size: number;
  /** Snapshotted and ready to be taken. */
  ready: number;
  /** Being booted, snapshotted or stored. */
  filling: number;
}

export interface CreateTemplate {
  name: string;
  image_id: string;
  vcpu_count?: number;
  mem_mib?: number;
  user_data?: string;
  user_data_base64?: string;
  ssh_authorized_keys?: string[];
  egress?: Egress;
  /** Deleted this long after creation (1 to 31536000 seconds). */
  ttl_seconds?: number;
  /** Idle this long before on_idle applies (default HATCH_IDLE_TIMEOUT). */
  idle_timeout_seconds?: number;
  on_idle?: OnIdle;
  /** VMs kept booted and snapshotted for takes (0 to 8; default 0). */
  warm_pool_size?: number;
}

export interface SnapshotArtefact {
  name: string;
  size_bytes: number;
  compressed_bytes: number;
  sha256: string;
}

export interface Snapshot {
  id: string;
  vm_id: string;
  created_at: string;
  hypervisor: Hypervisor;
  artefacts: SnapshotArtefact[];
  total_bytes: number;
  /** False until the artefacts are compressed, checksummed and stored (restorable at once, from the daemon's local copy). */
  durable: boolean;
  owner_key_id?: string;
}

export interface Route {
  id: string;
  vm_id: string;
  subdomain: string;
  target_port: number;
  auto_wake: boolean;
  created_at: string;
  owner_key_id?: string;
}

export interface CreateRoute {
  target_port: number;
  subdomain?: string;
  auto_wake?: boolean;
}

export interface VmEvent {
  vm_id: string;
  kind: EventKind;
  from_state: VmState | null;
  to_state: VmState;
  reason: string | null;
  at: string;
}

/** One message of `GET /events`; `vm_id` is null for host-wide events. */
export interface Event {
  id: number;
  vm_id: string | null;
  kind: EventKind;
  from_state: VmState | null;
  to_state: VmState | null;
  reason: string | null;
  at: string;
}

export interface HostEvent {
  kind: "repair";
  detail: string;
  at: string;
}

/** Each null or absent: unlimited. */
export interface Quotas {
  max_vms?: number | null;
  max_vcpus?: number | null;
  max_mem_mib?: number | null;
  max_snapshots?: number | null;
  max_routes?: number | null;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  role: Role;
  quotas: Quotas;
  created_at: string;
  revoked_at?: string;
}

export interface NewApiKey extends ApiKey {
  /** The key itself; shown only in this answer. */
  key: string;
}

export interface KeyUsage extends ApiKey {
  usage: { vms: number; vcpus: number; mem_mib: number; snapshots: number; routes: number };
}

export interface CreateKey {
  name: string;
  role?: Role;
  quotas?: Quotas;
}

export interface AuditEntry {
  id: number;
  at: string;
  key_id: string | null;
  method: string;
  path: string;
  status: number;
}

export interface Health {
  status: "ok" | "degraded";
  version: string;
  vms: { total: number; by_state: Record<string, number> };
  images: number;
  snapshot_storage: { kind: "local" | "s3"; ok: boolean; detail: string };
}

export interface RestoreVm {
  /** Default: the snapshot the VM was suspended with. */
  snapshot_id?: string;
}

export interface ForkVm {
  /** How many VMs to make, 1 to 16 (default 1). */
  count?: number;
}

/** The answer to a fork: the new VMs. */
export interface ForkedVms {
  vms: Vm[];
}

export interface ReassignVm {
  /** An active key. */
  key_id: string;
}

export interface UpdateKey {
  quotas: Quotas;
}

/** The schema `Error`: what every error answer carries (see the classes in errors). */
export interface ApiErrorBody {
  error: { code: string; message: string; field: string | null };
}

// --- the guest agent: exec and files ------------------------------------------

/** What exec runs: an argv (no shell) with its environment. */
interface ExecCommand {
  cmd: string[];
  env?: Record<string, string>;
  /** Absolute working directory (default /). */
  cwd?: string;
  /** User name or uid (default root). */
  user?: string;
  /** Seconds before the command and its process group are killed (default 60, at most 3600; streaming: none). */
  timeout_s?: number;
}

/** `POST /vms/{id}/exec`: stdin as text, or any bytes as stdin_base64. */
export interface ExecRequest extends ExecCommand {
  stdin?: string;
  stdin_base64?: string;
}

/** The first message of the WebSocket form of exec. */
export interface ExecStart extends ExecCommand {
  tty?: boolean;
  rows?: number;
  cols?: number;
}

/** Output is text when it is UTF-8, else in the `*_base64` field (see `outputBytes`). */
export interface ExecResult {
  /** null when a signal ended the command. */
  exit_code: number | null;
  signal?: number | null;
  stdout?: string;
  stdout_base64?: string;
  stderr?: string;
  stderr_base64?: string;
  timed_out: boolean;
  duration_ms: number;
  truncated: boolean;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
}

/** The WebSocket form's last message when the command ended. */
export interface ExecExit {
  type: "exit";
  exit_code: number | null;
  signal: number | null;
  timed_out: boolean;
  duration_ms: number;
}

export interface FileWritten {
  path: string;
  bytes: number;
}

export interface FileEntry {
  name: string;
  type: "file" | "dir" | "symlink" | "other";
  size: number;
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  modified: number;
}

export interface FileListing {
  path: string;
  entries: FileEntry[];
}
