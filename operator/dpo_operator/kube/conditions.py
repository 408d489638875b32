"""metav1.Condition bookkeeping: a transition time changes only when the status does."""

from __future__ import annotations

import datetime
import re
from typing import Any


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(timestamp: Any) -> datetime.datetime | None:
    """An RFC 3339 timestamp in any of its valid forms (``Z`` or an offset, fractional seconds, lower-case ``t``/
    ``z``), as an aware datetime; None for anything else (a timestamp without an offset counts as UTC)."""
    if not isinstance(timestamp, str) or not timestamp.strip():
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", timestamp.strip().upper().replace(" ", "T"))  # any fraction: microseconds
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


def seconds_since(timestamp: Any) -> float | None:
    """Wall-clock seconds since a timestamp kept in status (so restarts keep the clock); None when it is not an
    RFC 3339 timestamp (someone edited it): the caller decides what an unknown start means."""
    started = parse_time(timestamp)
    return None if started is None else (datetime.datetime.now(tz=datetime.UTC) - started).total_seconds()


CLOCK_SKEW_SECONDS = 60.0  # how far in the future a start time kept in status may lie (clocks differ a little)


def elapsed_since_start(timestamp: Any) -> float | None:
    """Seconds since a clock start kept in status (a rollout, a submission); None when it is not a timestamp or
    lies in the future (edited by hand, or a far-off clock): the caller starts the clock again, so a timeout is
    never disabled."""
    elapsed = seconds_since(timestamp)
    return None if elapsed is None or elapsed < -CLOCK_SKEW_SECONDS else max(0.0, elapsed)


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


