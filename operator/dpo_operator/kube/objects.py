"""Create-once semantics for the objects the operator owns under deterministic names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


def none_if_missing(read: Callable[[], T]) -> T | None:
    """``read()``, or None when the object does not exist (404)."""
    try:
        return read()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def read_or_create(read: Callable[[], dict[str, Any] | None], create: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The existing object, else a new one; when another worker (or a restarted operator) created it meanwhile,
    that one is adopted instead of failing on 409."""
    existing = read()
    if existing is not None:
        return existing
    try:
        return create()
    except ApiException as exc:
        if exc.status == 409 and (found := read()) is not None:
            return found
        raise
