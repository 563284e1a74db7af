"""Python SDK for Hatch, the microVM control plane (standard library only).

>>> from hatchvm import Client
>>> hatch = Client()                       # HATCH_URL, HATCH_API_KEY
>>> vm = hatch.create_vm(user_data="#!/bin/sh\\necho hi > /dev/console\\n", wait_ready=True)
"""

from .client import Client, covered_operations, endpoint
from .guest import ExecSession, output_bytes
from .errors import (AgentUnavailable, ApiError, Conflict, Forbidden, HatchError, InsufficientCapacity, Internal,
                     InvalidState, MethodNotAllowed, NotFound, QuotaExceeded, RateLimited,
                     SnapshotCorrupt, Timeout, TooLarge, Unauthorized, UnexpectedState, Unavailable,
                     UnsupportedMediaType, ValidationError, WaitTimeout)
from .types import (AgentStatus, ApiKey, ExecExit, ExecRequest, ExecResult, ExecStart, FileEntry,
                    FileListing, FileWritten, AuditEntry, CreateKey, CreateRoute, CreateTemplate, CreateVm,
                    ErrorBody, Event, ForkedVms, ForkVm, Health, HostEvent, Image, KeyUsage, NewApiKey, Quotas,
                    ReassignVm, RegisterImage, RestoreVm, Route, Snapshot, Template, UpdateKey, Vm,
                    VmEvent, VmState, WarmPool)

__version__ = "0.1.0"

__all__ = [
    "Client", "covered_operations", "endpoint", "ExecSession", "output_bytes",
    "AgentUnavailable", "ApiError", "Conflict", "Forbidden", "HatchError", "InsufficientCapacity", "Internal",
    "InvalidState", "MethodNotAllowed", "NotFound", "QuotaExceeded", "RateLimited",
    "SnapshotCorrupt", "Timeout", "TooLarge", "Unauthorized", "UnexpectedState", "Unavailable",
    "UnsupportedMediaType", "ValidationError", "WaitTimeout",
    "AgentStatus", "ExecExit", "ExecRequest", "ExecResult", "ExecStart", "FileEntry", "FileListing",
    "FileWritten", "ApiKey", "AuditEntry", "CreateKey", "CreateRoute", "CreateTemplate", "CreateVm", "ErrorBody",
    "Event", "ForkedVms", "ForkVm", "Health", "HostEvent", "Image", "KeyUsage", "NewApiKey", "Quotas", "ReassignVm",
    "RegisterImage", "RestoreVm", "Route", "Snapshot", "Template", "UpdateKey", "Vm", "VmEvent",
    "VmState", "WarmPool",
]
