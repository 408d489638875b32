"""metav1.Condition bookkeeping: a transition time changes only when the status does."""

from __future__ import annotations

import datetime
from typing import Any


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_since(timestamp: str) -> float:
    """Wall-clock seconds since a timestamp written by :func:`now` (kept in status, so restarts keep the clock)."""
    started = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(tz=datetime.UTC) - started).total_seconds()


def set_condition(
    conditions: list[dict[str, Any]] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """Return the conditions with ``type_`` set; other types are kept as they are."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    existing = next((c for c in conditions or [] if c.get("type") == type_), None)
    transition = existing["lastTransitionTime"] if existing and existing.get("status") == status_text else now()
    updated = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        updated["observedGeneration"] = generation
    others = [c for c in conditions or [] if c.get("type") != type_]
    return sorted([*others, updated], key=lambda c: c["type"])


def get_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]] | None, type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.get("status") == "True"
