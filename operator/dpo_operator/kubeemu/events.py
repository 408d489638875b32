"""Events are one resource served at two group-versions (core ``v1`` and ``events.k8s.io/v1``): an Event written
through either is read through both, converted the way kube-apiserver converts them, so ``kubectl describe`` and
``kubectl get events`` (core v1) list what an operator posted through events.k8s.io/v1, and the other way round.
Lists and gets only: a watch sees the Events written through its own group-version (nothing we run watches Events).
"""

from __future__ import annotations

import copy
from typing import Any

import kmock

CORE = kmock.resource("", "v1", "events")
EVENTS_V1 = kmock.resource("events.k8s.io", "v1", "events")
# events.k8s.io/v1 field -> core v1 field (the rest share their names)
_RENAMED = {"regarding": "involvedObject", "note": "message", "deprecatedSource": "source",
            "deprecatedFirstTimestamp": "firstTimestamp", "deprecatedLastTimestamp": "lastTimestamp",
            "deprecatedCount": "count", "reportingController": "reportingComponent"}
_SHARED = ("metadata", "eventTime", "series", "action", "reason", "related", "reportingInstance", "type")


def other(res: Any) -> Any | None:
    """The same Events' other group-version, for an Event resource; None for everything else."""
    return EVENTS_V1 if res == CORE else CORE if res == EVENTS_V1 else None


def convert(event: dict[str, Any], to: Any) -> dict[str, Any]:
    """``event`` as ``to`` (CORE or EVENTS_V1) serves it."""
    renames = _RENAMED if to == CORE else {core: new for new, core in _RENAMED.items()}
    result: dict[str, Any] = {"apiVersion": "v1" if to == CORE else "events.k8s.io/v1", "kind": "Event"}
    for key, value in event.items():
        if key in _SHARED:
            result[key] = copy.deepcopy(value)
        elif key in renames:
            result[renames[key]] = copy.deepcopy(value)
    if to == CORE and "series" in event:  # core v1 keeps the series' count and time in its own fields too
        result.setdefault("count", event["series"].get("count"))
        result.setdefault("lastTimestamp", event["series"].get("lastObservedTime"))
    return result
