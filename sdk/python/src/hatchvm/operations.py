"""Which SDK method covers which operation of ``/openapi.json``."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def endpoint(method: str, path: str) -> Callable[[F], F]:
    """Marks the method that covers one operation of the API (``method`` and
    ``path`` as ``/openapi.json`` writes them); see :func:`covered_operations`."""

    def mark(func: F) -> F:
        func.__hatch_operation__ = (method.upper(), path)  # type: ignore[attr-defined]
        return func

    return mark
