"""The client: one method per operation of ``/openapi.json``, plus waiting helpers."""

from __future__ import annotations

import json
import os
import time
from typing import (Any, Callable, Dict, Iterator, List, Literal, Optional, Set, Tuple, Union, cast,
                    overload)

from . import sse
from .guest import GuestMixin
from .operations import endpoint
from .errors import ApiError, HatchError, NotFound, UnexpectedState, WaitTimeout
from .transport import Transport, expand, query_string
from .types import (ApiKey, AuditEntry, CreateKey, CreateRoute, CreateTemplate, CreateVm, Event,
                    ForkedVms, ForkVm, Health, HostEvent, Image, KeyUsage, NewApiKey, Quotas, ReassignVm, RegisterImage,
                    RestoreVm, Route, Snapshot, Template, UpdateKey, Vm, VmEvent, VmState)

DEFAULT_URL = "http://127.0.0.1:8080"

def covered_operations() -> Dict[Tuple[str, str], str]:
    """(method, path) → name of the :class:`Client` method that calls it."""
    covered = {}
    for name in dir(Client):
        operation = getattr(getattr(Client, name), "__hatch_operation__", None)
        if operation:
            covered[operation] = name
    return covered


def _admin_key_from_data_dir() -> Optional[str]:
    path = os.path.join(os.environ.get("HATCH_DATA_DIR") or "/var/lib/hatch", "admin.key")
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().strip() or None
    except OSError:
        return None


def _async_query(asynchronous: bool) -> Dict[str, Any]:
    return {"async": True} if asynchronous else {}


class Client(GuestMixin):
    """A connection to one Hatch daemon.

    ``url`` defaults to ``HATCH_URL`` (else ``http://127.0.0.1:8080``; also
    ``https://host:port`` and ``unix:/path/to.sock``), ``api_key`` to
    ``HATCH_API_KEY`` (else ``$HATCH_DATA_DIR/admin.key`` when readable, as
    on the daemon's host) and ``ca_cert`` (a private CA for HTTPS) to
    ``HATCH_CA_CERT``, as for the ``hatch`` CLI. ``timeout`` bounds each
    request (seconds); requests that wait for an operation get more.
    Commands and files in the guest: :class:`~hatchvm.guest.GuestMixin`.
    """

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None, *,
                 timeout: float = 60.0, ca_cert: Optional[str] = None) -> None:
        if api_key is None:
            api_key = os.environ.get("HATCH_API_KEY") or _admin_key_from_data_dir()
        self._http = Transport(
            url or os.environ.get("HATCH_URL") or DEFAULT_URL,
            api_key.strip() if api_key else None,
            timeout,
            ca_cert or os.environ.get("HATCH_CA_CERT"),
        )
        self.timeout = timeout

    def _call(self, method: str, template: str, ids: Optional[Dict[str, str]] = None,
              body: Any = None, query: Optional[Dict[str, Any]] = None,
              timeout: Optional[float] = None) -> Any:
        path = expand(template, ids or {}) + query_string(query)
        return self._http.call(method, path, body, timeout=timeout)[1]

    def _operation_timeout(self, seconds: Optional[float] = None) -> float:
        # Operations finish in the server; give them more than a plain request.
        return max(self.timeout, 600.0 if seconds is None else seconds + 30.0)

    # --- health and the API description -----------------------------------------

    @endpoint("GET", "/healthz")
    def health(self) -> Health:
        return cast(Health, self._call("GET", "/healthz"))

    @endpoint("GET", "/openapi.json")
    def openapi(self) -> Dict[str, Any]:
        """The OpenAPI 3.1 document describing every endpoint."""
        return cast(Dict[str, Any], self._call("GET", "/openapi.json"))

    @endpoint("GET", "/metrics")
    def metrics(self) -> str:
        """Prometheus text format (admin keys only)."""
        return cast(str, self._call("GET", "/metrics"))

    @endpoint("GET", "/host/events")
    def host_events(self) -> List[HostEvent]:
        return cast(List[HostEvent], self._call("GET", "/host/events"))

    # --- images ----------------------------------------------------------------

    @endpoint("POST", "/images")
    def register_image(self, image: RegisterImage) -> Image:
        return cast(Image, self._call("POST", "/images", body=image))

    @endpoint("GET", "/images")
    def list_images(self) -> List[Image]:
        return cast(List[Image], self._call("GET", "/images"))

    @endpoint("GET", "/images/{id}")
    def get_image(self, image_id: str) -> Image:
        """By id or name."""
        return cast(Image, self._call("GET", "/images/{id}", {"id": image_id}))

    @endpoint("DELETE", "/images/{id}")
    def delete_image(self, image_id: str) -> None:
        self._call("DELETE", "/images/{id}", {"id": image_id})

    # --- templates -------------------------------------------------------------

    @endpoint("POST", "/templates")
    def create_template(self, template: CreateTemplate) -> Template:
        return cast(Template, self._call("POST", "/templates", body=template))

    @endpoint("GET", "/templates")
    def list_templates(self) -> List[Template]:
        return cast(List[Template], self._call("GET", "/templates"))

    @endpoint("GET", "/templates/{id}")
    def get_template(self, template_id: str) -> Template:
        return cast(Template, self._call("GET", "/templates/{id}", {"id": template_id}))

    @endpoint("DELETE", "/templates/{id}")
    def delete_template(self, template_id: str) -> None:
        self._call("DELETE", "/templates/{id}", {"id": template_id})

    # --- VMs -------------------------------------------------------------------

    @endpoint("POST", "/vms")
    def create_vm(self, spec: Optional[CreateVm] = None, *, wait_ready: bool = False,
                  ready_timeout: Optional[float] = None, asynchronous: bool = False,
                  **fields: Any) -> Vm:
        """Creates and boots a VM (``spec`` and/or keyword fields: image_id,
        user_data, ssh_authorized_keys, ...); with ``snapshot_id``, restores
        one from that snapshot with a fresh identity (see :meth:`fork`).

        By default the answer comes once the VM runs. ``wait_ready=True``
        answers once the guest accepts SSH (the daemon waits: ``wait=ready``,
        up to ``ready_timeout`` seconds). ``asynchronous=True`` answers at
        once with the VM in ``creating``; see :meth:`wait_ready`.
        """
        body: Dict[str, Any] = dict(spec or {})
        body.update(fields)
        query: Dict[str, Any] = _async_query(asynchronous)
        if wait_ready:
            query["wait"] = "ready"
            if ready_timeout is not None:
                query["timeout"] = f"{int(ready_timeout)}s"
        return cast(Vm, self._call("POST", "/vms", body=body, query=query,
                                   timeout=self._operation_timeout(ready_timeout)))

    @endpoint("POST", "/vms/{id}/fork")
    def fork(self, vm_id: str, count: int = 1) -> List[Vm]:
        """``count`` (1 to 16) new VMs from the VM as it is now (a running VM
        pauses while its memory is saved; a snapshotted one's snapshot is
        used), answered once they are ready; all of them or none.

        Each has its own id, IP, MAC, SSH port, hostname and cloud-init
        instance-id; memory, processes and disk (and SSH host keys) are the
        parent's. The image needs ``hatch-agent`` (else :class:`~hatchvm.errors.AgentUnavailable`).
        """
        body: ForkVm = {"count": count}
        answer = cast(ForkedVms, self._call("POST", "/vms/{id}/fork", {"id": vm_id}, body=body,
                                            timeout=self._operation_timeout()))
        return answer["vms"]

    @endpoint("GET", "/vms")
    def list_vms(self) -> List[Vm]:
        return cast(List[Vm], self._call("GET", "/vms"))

    @endpoint("GET", "/vms/{id}")
    def get_vm(self, vm_id: str) -> Vm:
        return cast(Vm, self._call("GET", "/vms/{id}", {"id": vm_id}))

    @overload
    def delete_vm(self, vm_id: str, *, asynchronous: Literal[False] = False) -> None: ...

    @overload
    def delete_vm(self, vm_id: str, *, asynchronous: Literal[True]) -> Vm: ...

    @endpoint("DELETE", "/vms/{id}")
    def delete_vm(self, vm_id: str, *, asynchronous: bool = False) -> Optional[Vm]:
        """Deletes the VM and everything it held; asynchronous: answers with
        the VM in ``deleting`` (see :meth:`wait_deleted`)."""
        return cast(Optional[Vm], self._call("DELETE", "/vms/{id}", {"id": vm_id},
                                             query=_async_query(asynchronous),
                                             timeout=self._operation_timeout()))

    @endpoint("POST", "/vms/{id}/stop")
    def stop_vm(self, vm_id: str, *, asynchronous: bool = False) -> Vm:
        return cast(Vm, self._call("POST", "/vms/{id}/stop", {"id": vm_id},
                                   query=_async_query(asynchronous),
                                   timeout=self._operation_timeout()))

    @endpoint("POST", "/vms/{id}/start")
    def start_vm(self, vm_id: str, *, asynchronous: bool = False) -> Vm:
        return cast(Vm, self._call("POST", "/vms/{id}/start", {"id": vm_id},
                                   query=_async_query(asynchronous),
                                   timeout=self._operation_timeout()))

    @endpoint("POST", "/vms/{id}/owner")
    def reassign_vm(self, vm_id: str, key_id: str) -> Vm:
        """Gives the VM (with its snapshots and routes) to another key (admin keys only)."""
        body: ReassignVm = {"key_id": key_id}
        return cast(Vm, self._call("POST", "/vms/{id}/owner", {"id": vm_id}, body=body))

    @endpoint("GET", "/vms/{id}/logs")
    def logs(self, vm_id: str, *, tail_bytes: Optional[int] = None) -> str:
        """The end of the VM's serial console."""
        return cast(str, self._call("GET", "/vms/{id}/logs", {"id": vm_id}, query={"bytes": tail_bytes}))

    def follow_logs(self, vm_id: str, *, tail_bytes: Optional[int] = None,
                    timeout: Optional[float] = None) -> Iterator[str]:
        """The console's end, then what the guest prints next, line by line
        (``GET /vms/{id}/logs?follow=true``); stop iterating to close it.
        ``timeout`` bounds each wait for more output (None: wait forever)."""
        path = expand("/vms/{id}/logs", {"id": vm_id}) + query_string({"bytes": tail_bytes, "follow": True})
        return self._http.lines("GET", path, timeout=timeout)

    @endpoint("GET", "/vms/{id}/events")
    def vm_events(self, vm_id: str) -> List[VmEvent]:
        return cast(List[VmEvent], self._call("GET", "/vms/{id}/events", {"id": vm_id}))

    @endpoint("GET", "/events")
    def events(self, *, vm: Optional[str] = None, since: Optional[int] = None,
               follow: bool = True, timeout: Optional[float] = None) -> Iterator[Event]:
        """The event log as it streams (Server-Sent Events): what was recorded
        after ``since`` (0: from the first), then, with ``follow``, what
        happens next. ``vm`` keeps one VM's (the stream ends after its
        deletion). ``timeout`` bounds each wait for the next message (the
        daemon sends a keep-alive every 15 s); None waits forever."""
        path = "/events" + query_string({"vm": vm, "since": since, "follow": follow})
        lines = self._http.lines("GET", path, headers={"Accept": "text/event-stream"}, timeout=timeout)
        for message in sse.parse(lines):
            yield cast(Event, json.loads(message.data))

    # --- snapshots -------------------------------------------------------------

    @overload
    def snapshot_vm(self, vm_id: str, *, asynchronous: Literal[False] = False) -> Snapshot: ...

    @overload
    def snapshot_vm(self, vm_id: str, *, asynchronous: Literal[True]) -> Vm: ...

    @endpoint("POST", "/vms/{id}/snapshot")
    def snapshot_vm(self, vm_id: str, *, asynchronous: bool = False) -> Union[Snapshot, Vm]:
        """Saves a running VM (memory, device state, disk) and stops its VMM.
        Answers the snapshot; asynchronous: the VM in ``snapshotting``."""
        return cast(Union[Snapshot, Vm], self._call(
            "POST", "/vms/{id}/snapshot", {"id": vm_id}, query=_async_query(asynchronous),
            timeout=self._operation_timeout()))

    @endpoint("POST", "/vms/{id}/restore")
    def restore_vm(self, vm_id: str, snapshot_id: Optional[str] = None, *,
                   asynchronous: bool = False) -> Vm:
        """Runs a snapshotted VM again (from the snapshot it was suspended
        with unless ``snapshot_id`` is given)."""
        body: RestoreVm = {"snapshot_id": snapshot_id} if snapshot_id else {}
        return cast(Vm, self._call("POST", "/vms/{id}/restore", {"id": vm_id}, body=body,
                                   query=_async_query(asynchronous),
                                   timeout=self._operation_timeout()))

    @endpoint("GET", "/vms/{id}/snapshots")
    def list_snapshots(self, vm_id: str) -> List[Snapshot]:
        return cast(List[Snapshot], self._call("GET", "/vms/{id}/snapshots", {"id": vm_id}))

    @endpoint("DELETE", "/snapshots/{id}")
    def delete_snapshot(self, snapshot_id: str) -> None:
        self._call("DELETE", "/snapshots/{id}", {"id": snapshot_id})

    # --- routes ----------------------------------------------------------------

    @endpoint("POST", "/vms/{id}/routes")
    def create_route(self, vm_id: str, route: CreateRoute) -> Route:
        return cast(Route, self._call("POST", "/vms/{id}/routes", {"id": vm_id}, body=route))

    @endpoint("GET", "/vms/{id}/routes")
    def list_routes(self, vm_id: str) -> List[Route]:
        return cast(List[Route], self._call("GET", "/vms/{id}/routes", {"id": vm_id}))

    @endpoint("DELETE", "/routes/{id}")
    def delete_route(self, route_id: str) -> None:
        self._call("DELETE", "/routes/{id}", {"id": route_id})

    # --- keys and audit --------------------------------------------------------

    @endpoint("POST", "/keys")
    def create_key(self, name: str, *, role: Optional[Literal["admin", "member"]] = None,
                   quotas: Optional[Quotas] = None) -> NewApiKey:
        """A new key (its secret, ``key``, is shown only in this answer)."""
        body: CreateKey = {"name": name}
        if role is not None:
            body["role"] = role
        if quotas is not None:
            body["quotas"] = quotas
        return cast(NewApiKey, self._call("POST", "/keys", body=body))

    @endpoint("GET", "/keys")
    def list_keys(self) -> List[ApiKey]:
        return cast(List[ApiKey], self._call("GET", "/keys"))

    @endpoint("GET", "/keys/me")
    def me(self) -> KeyUsage:
        """The calling key: role, quotas and what its objects use."""
        return cast(KeyUsage, self._call("GET", "/keys/me"))

    @endpoint("PATCH", "/keys/{id}")
    def update_key(self, key_id: str, quotas: Quotas) -> ApiKey:
        """Replaces the key's quotas."""
        body: UpdateKey = {"quotas": quotas}
        return cast(ApiKey, self._call("PATCH", "/keys/{id}", {"id": key_id}, body=body))

    @endpoint("DELETE", "/keys/{id}")
    def revoke_key(self, key_id: str) -> None:
        self._call("DELETE", "/keys/{id}", {"id": key_id})

    @endpoint("GET", "/audit")
    def audit(self, *, limit: Optional[int] = None) -> List[AuditEntry]:
        return cast(List[AuditEntry], self._call("GET", "/audit", query={"limit": limit}))

    # --- waiting ---------------------------------------------------------------

    def wait_ready(self, vm_id: str, *, timeout: float = 300.0) -> Vm:
        """Waits until the VM runs and its guest accepts SSH (``ready_at`` set)."""
        return cast(Vm, self._wait(vm_id, lambda vm: vm is not None and vm["state"] == "running"
                                   and bool(vm.get("ready_at")), "ready", timeout, set()))

    def wait_state(self, vm_id: str, *states: VmState, timeout: float = 300.0) -> Vm:
        """Waits until the VM is in one of ``states`` (e.g. after an
        asynchronous operation)."""
        wanted: Set[str] = set(states)
        return cast(Vm, self._wait(vm_id, lambda vm: vm is not None and vm["state"] in wanted,
                                   " or ".join(states), timeout, wanted))

    def wait_deleted(self, vm_id: str, *, timeout: float = 300.0) -> None:
        """Waits until the VM no longer exists."""
        self._wait(vm_id, lambda vm: vm is None, "deleted", timeout, set())

    def _get_or_none(self, vm_id: str) -> Optional[Vm]:
        try:
            return self.get_vm(vm_id)
        except NotFound:
            return None

    def _wait(self, vm_id: str, done: Callable[[Optional[Vm]], bool], what: str,
              timeout: float, wanted: Set[str]) -> Optional[Vm]:
        """Looks at the VM each time one of its events arrives on
        ``GET /events`` (no polling): first the cursor of its last recorded
        event, then the VM, then the events after that cursor, so a change
        between the two looks is never missed."""
        deadline = time.monotonic() + timeout
        cursor = 0
        try:
            for event in self.events(vm=vm_id, since=0, follow=False, timeout=timeout):
                cursor = event["id"]
        except NotFound:
            pass  # already gone: the look below tells
        vm = self._get_or_none(vm_id)
        while True:
            self._check(vm_id, vm, done, what, wanted)
            if done(vm):
                return vm
            # Each read waits at most 20 s: the daemon's keep-alive comes every
            # 15 s, so the deadline is looked at often; a stream that breaks
            # (a restarting daemon) is opened again from the cursor.
            path = "/events" + query_string({"vm": vm_id, "since": cursor})
            parser = sse.Parser()
            try:
                for line in self._http.lines("GET", path, headers={"Accept": "text/event-stream"},
                                             timeout=min(20.0, max(deadline - time.monotonic(), 0.1))):
                    message = parser.feed(line)
                    if message is not None:
                        cursor = int(message.id or cursor)
                        vm = self._get_or_none(vm_id)
                        self._check(vm_id, vm, done, what, wanted)
                        if done(vm):
                            return vm
                    self._check_deadline(vm_id, vm, what, timeout, deadline)
            except NotFound:
                pass  # deleted before the stream opened: the look below tells
            except ApiError:
                raise
            except (OSError, HatchError):
                pass  # a read that timed out or a broken stream: open it again
            vm = self._get_or_none(vm_id)
            self._check_deadline(vm_id, vm, what, timeout, deadline)

    @staticmethod
    def _check(vm_id: str, vm: Optional[Vm], done: Callable[[Optional[Vm]], bool], what: str,
               wanted: Set[str]) -> None:
        if done(vm):
            return
        if vm is None:
            raise UnexpectedState(f"VM {vm_id} was deleted while waiting for it to be {what}")
        if vm["state"] == "error" and "error" not in wanted and vm["restart_policy"] != "on-failure":
            raise UnexpectedState(
                f"VM {vm_id} is in error ({vm.get('state_reason', 'no reason given')}) "
                f"while waiting for it to be {what}", vm)

    @staticmethod
    def _check_deadline(vm_id: str, vm: Optional[Vm], what: str, timeout: float, deadline: float) -> None:
        if time.monotonic() >= deadline:
            state = vm["state"] if vm else "gone"
            raise WaitTimeout(f"VM {vm_id} was not {what} after {timeout:g}s (it is {state})", vm)
