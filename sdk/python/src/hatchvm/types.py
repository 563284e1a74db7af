"""Typed shapes of the API's JSON bodies (the schemas of ``/openapi.json``).

They are ``TypedDict`` s: answers stay the plain ``dict`` s the daemon sent
(fields a newer daemon adds are kept), while type checkers know each field.
Keys that may be absent are in the ``total=False`` half of each pair.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Optional, TypedDict, Union

VmState = Literal[
    "creating", "starting", "running", "stopping", "stopped",
    "snapshotting", "snapshotted", "restoring", "error", "deleting",
]
EventKind = Literal["state", "ready", "repair", "idle", "error", "agent"]
Egress = Union[Literal["internet", "none"], List[str]]
#: What happens to a VM once idle (see ``idle_timeout_seconds``).
OnIdle = Literal["snapshot", "stop", "none"]


class VmLimits(TypedDict):
    memory_max_bytes: int
    cpu_max: str
    pids_max: int


class AgentStatus(TypedDict):
    """The guest agent's connection: exec and file calls need it."""
    connected: bool
    version: Optional[str]


class _VmRequired(TypedDict):
    agent: AgentStatus
    id: str
    state: VmState
    restart_policy: Literal["never", "on-failure"]
    image_id: str
    vcpu_count: int
    mem_mib: int
    limits: VmLimits
    enable_network: bool
    hypervisor: Literal["qemu", "firecracker"]
    created_at: str
    updated_at: str


class Vm(_VmRequired, total=False):
    guest_ip: str
    guest_mac: str
    tap_name: str
    ssh_port: int
    egress: Egress
    user_data: str
    user_data_base64: str
    ssh_authorized_keys: List[str]
    pid: int
    state_reason: str
    ready_at: str
    last_activity_at: str
    idle_status: str
    snapshot_id: str
    ttl_seconds: int
    idle_timeout_seconds: int
    on_idle: OnIdle
    expires_at: str
    owner_key_id: str
    pool_template_id: str


class CreateVm(TypedDict, total=False):
    image_id: str
    template_id: str
    vcpu_count: int
    mem_mib: int
    enable_network: bool
    guest_ip: str
    guest_mac: str
    user_data: str
    user_data_base64: str
    ssh_authorized_keys: List[str]
    restart_policy: Literal["never", "on-failure"]
    egress: Egress
    ttl_seconds: int
    idle_timeout_seconds: int
    on_idle: OnIdle
    #: Restore the VM from this snapshot with a fresh identity; the guest is
    #: the snapshot's (image_id ... guest_mac are refused with it).
    snapshot_id: str


class RestoreVm(TypedDict, total=False):
    snapshot_id: str


class ForkVm(TypedDict, total=False):
    #: How many VMs to make, 1 to 16 (default 1).
    count: int


class ForkedVms(TypedDict):
    vms: List[Vm]


class ReassignVm(TypedDict):
    key_id: str


class Image(TypedDict):
    id: str
    name: str
    profile: Literal["debian", "minimal", "registered"]
    kernel_path: Optional[str]
    bzimage_path: Optional[str]
    initrd_path: Optional[str]
    rootfs_path: Optional[str]
    login_user: str
    boot_args: str
    size_bytes: int
    created_at: str


class _RegisterImageRequired(TypedDict):
    name: str
    kernel_path: str


class RegisterImage(_RegisterImageRequired, total=False):
    initrd_path: str
    rootfs_path: str
    login_user: str
    boot_args: str


class WarmPool(TypedDict):
    """How full a template's warm pool is."""
    size: int
    ready: int
    filling: int


class _TemplateRequired(TypedDict):
    id: str
    name: str
    image_id: str
    vcpu_count: int
    mem_mib: int
    user_data: Optional[str]
    ssh_authorized_keys: List[str]
    created_at: str
    warm_pool_size: int
    warm_pool: WarmPool


class Template(_TemplateRequired, total=False):
    user_data_base64: str
    egress: Egress
    ttl_seconds: int
    idle_timeout_seconds: int
    on_idle: OnIdle
    owner_key_id: str


class _CreateTemplateRequired(TypedDict):
    name: str
    image_id: str


class CreateTemplate(_CreateTemplateRequired, total=False):
    vcpu_count: int
    mem_mib: int
    user_data: str
    user_data_base64: str
    ssh_authorized_keys: List[str]
    egress: Egress
    ttl_seconds: int
    idle_timeout_seconds: int
    on_idle: OnIdle
    warm_pool_size: int


class SnapshotArtefact(TypedDict):
    name: str
    size_bytes: int
    compressed_bytes: int
    sha256: str


class _SnapshotRequired(TypedDict):
    id: str
    vm_id: str
    created_at: str
    hypervisor: Literal["qemu", "firecracker"]
    artefacts: List[SnapshotArtefact]
    total_bytes: int
    #: False until the artefacts are compressed, checksummed and stored
    #: (restorable at once, from the daemon's local copy).
    durable: bool


class Snapshot(_SnapshotRequired, total=False):
    owner_key_id: str


class _RouteRequired(TypedDict):
    id: str
    vm_id: str
    subdomain: str
    target_port: int
    auto_wake: bool
    created_at: str


class Route(_RouteRequired, total=False):
    owner_key_id: str


class _CreateRouteRequired(TypedDict):
    target_port: int


class CreateRoute(_CreateRouteRequired, total=False):
    subdomain: str
    auto_wake: bool


class VmEvent(TypedDict):
    vm_id: str
    kind: EventKind
    from_state: Optional[VmState]
    to_state: VmState
    reason: Optional[str]
    at: str


class Event(TypedDict):
    """One message of ``GET /events``; ``vm_id`` is None for host-wide events."""

    id: int
    vm_id: Optional[str]
    kind: EventKind
    from_state: Optional[VmState]
    to_state: Optional[VmState]
    reason: Optional[str]
    at: str


class HostEvent(TypedDict):
    kind: Literal["repair"]
    detail: str
    at: str


class Quotas(TypedDict, total=False):
    max_vms: Optional[int]
    max_vcpus: Optional[int]
    max_mem_mib: Optional[int]
    max_snapshots: Optional[int]
    max_routes: Optional[int]


class _ApiKeyRequired(TypedDict):
    id: str
    name: str
    prefix: str
    role: Literal["admin", "member"]
    quotas: Quotas
    created_at: str


class ApiKey(_ApiKeyRequired, total=False):
    revoked_at: str


class NewApiKey(ApiKey):
    key: str


class _CreateKeyRequired(TypedDict):
    name: str


class CreateKey(_CreateKeyRequired, total=False):
    role: Literal["admin", "member"]
    quotas: Quotas


class UpdateKey(TypedDict):
    quotas: Quotas


class Usage(TypedDict):
    vms: int
    vcpus: int
    mem_mib: int
    snapshots: int
    routes: int


class KeyUsage(ApiKey):
    usage: Usage


class AuditEntry(TypedDict):
    id: int
    at: str
    key_id: Optional[str]
    method: str
    path: str
    status: int


class HealthVms(TypedDict):
    total: int
    by_state: Dict[str, int]


class SnapshotStorage(TypedDict):
    kind: Literal["local", "s3"]
    ok: bool
    detail: str


class Health(TypedDict):
    status: Literal["ok", "degraded"]
    version: str
    vms: HealthVms
    images: int
    snapshot_storage: SnapshotStorage


class ErrorDetail(TypedDict):
    code: str
    message: str
    field: Optional[str]


class ErrorBody(TypedDict):
    """The schema ``Error``: what every error answer carries (see :mod:`hatchvm.errors`)."""

    error: ErrorDetail


# --- the guest agent: exec and files ------------------------------------------

class _ExecCommand(TypedDict):
    cmd: List[str]


class _ExecOptions(_ExecCommand, total=False):
    env: Dict[str, str]
    cwd: str
    user: str
    timeout_s: float


class ExecRequest(_ExecOptions, total=False):
    """``POST /vms/{id}/exec``: stdin as text, or any bytes as stdin_base64."""
    stdin: str
    stdin_base64: str


class ExecStart(_ExecOptions, total=False):
    """The first message of the WebSocket form of exec."""
    tty: bool
    rows: int
    cols: int


class _ExecResultRequired(TypedDict):
    exit_code: Optional[int]
    timed_out: bool
    duration_ms: int
    truncated: bool
    stdout_truncated: bool
    stderr_truncated: bool


class ExecResult(_ExecResultRequired, total=False):
    """Output is text when it is UTF-8, else in the ``*_base64`` field."""
    signal: Optional[int]
    stdout: str
    stdout_base64: str
    stderr: str
    stderr_base64: str


class ExecExit(TypedDict):
    """The WebSocket form's last message when the command ended."""
    type: Literal["exit"]
    exit_code: Optional[int]
    signal: Optional[int]
    timed_out: bool
    duration_ms: int


class FileWritten(TypedDict):
    path: str
    bytes: int


FileEntry = TypedDict("FileEntry", {
    "name": str, "type": Literal["file", "dir", "symlink", "other"], "size": int, "mode": int,
    "uid": int, "gid": int, "modified": int,
})


class FileListing(TypedDict):
    path: str
    entries: List[FileEntry]
