"""Exceptions raised for the API's error JSON ``{"error": {"code", "message", "field"}}``.

Each stable ``code`` the daemon answers with maps to one class, so callers can
``except hatchvm.NotFound`` instead of comparing strings; a code this SDK does
not know yet still raises :class:`ApiError` with the code kept.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class HatchError(Exception):
    """Base of every error this SDK raises."""


class ApiError(HatchError):
    """The daemon answered with an error status.

    ``status`` is the HTTP status, ``code`` the API's stable error code,
    ``field`` the request field at fault (when the API names one).
    """

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field: {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class ValidationError(ApiError):
    """400: a field is invalid (``invalid_field``) or the body is not JSON (``invalid_json``)."""


class Unauthorized(ApiError):
    """401: the key is missing, unknown or revoked."""


class Forbidden(ApiError):
    """403 ``forbidden``: the endpoint needs an admin key."""


class QuotaExceeded(Forbidden):
    """403 ``quota_exceeded``: ``field`` names the quota (``max_vms``, ...)."""


class NotFound(ApiError):
    """404: no such object, or one that belongs to another key."""


class MethodNotAllowed(ApiError):
    """405."""


class Conflict(ApiError):
    """409 ``conflict``: ``field`` is already taken (an IP, MAC or name)."""


class InvalidState(ApiError):
    """409 ``invalid_state``: the VM's state refuses the request."""


class AgentUnavailable(ApiError):
    """409 ``agent_unavailable``: the VM's guest agent is not connected (an
    image without hatch-agent, or a guest that has not started it)."""


class TooLarge(ApiError):
    """413."""


class UnsupportedMediaType(ApiError):
    """415."""


class SnapshotCorrupt(ApiError):
    """422: a snapshot artefact failed its checksum."""


class RateLimited(ApiError):
    """429: ``retry_after`` is the number of seconds the daemon asked to wait."""

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(status, code, message, field)
        self.retry_after = retry_after


class Internal(ApiError):
    """500."""


class Unavailable(ApiError):
    """503: the host cannot do it now (e.g. no free address, hypervisor missing)."""


class InsufficientCapacity(ApiError):
    """507: not enough memory or disk on the host for the request."""


class Timeout(ApiError):
    """504: the daemon's own wait (e.g. ``wait=ready``) ran out."""


class WaitTimeout(HatchError):
    """A client-side waiting helper gave up; ``last`` is the VM as last seen."""

    def __init__(self, message: str, last: object = None) -> None:
        super().__init__(message)
        self.last = last


class UnexpectedState(HatchError):
    """A waited-for VM ended in a state that will not lead to the one wanted."""

    def __init__(self, message: str, vm: object = None) -> None:
        super().__init__(message)
        self.vm = vm


ERRORS_BY_CODE: Dict[str, Type[ApiError]] = {
    "invalid_field": ValidationError,
    "invalid_json": ValidationError,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "quota_exceeded": QuotaExceeded,
    "rate_limited": RateLimited,
    "not_found": NotFound,
    "method_not_allowed": MethodNotAllowed,
    "conflict": Conflict,
    "invalid_state": InvalidState,
    "agent_unavailable": AgentUnavailable,
    "too_large": TooLarge,
    "unsupported_media_type": UnsupportedMediaType,
    "unavailable": Unavailable,
    "insufficient_capacity": InsufficientCapacity,
    "timeout": Timeout,
    "snapshot_corrupt": SnapshotCorrupt,
    "internal": Internal,
}


def error_from_response(status: int, body: bytes, retry_after: Optional[str] = None) -> ApiError:
    """The exception for an error answer; bodies that are not the error JSON keep their text."""
    import json

    code, message, field = "", "", None
    try:
        error = json.loads(body.decode("utf-8"))["error"]
        code, message, field = str(error["code"]), str(error["message"]), error.get("field")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        message = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
    cls = ERRORS_BY_CODE.get(code, ApiError)
    if cls is RateLimited:
        seconds: Optional[float] = None
        try:
            seconds = float(retry_after) if retry_after is not None else None
        except ValueError:
            pass
        return RateLimited(status, code, message, field, retry_after=seconds)
    return cls(status, code or f"http_{status}", message, field)
