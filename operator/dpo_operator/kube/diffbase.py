"""kopf's last-handled configuration, kept small whatever the size of the object.

kopf stores the "essence" it last handled (spec, labels, annotations) in an annotation, to diff the next event
against. kube-apiserver allows 256 KiB of annotations in all, so a spec (or set of annotations) of that size would
make every handler's write fail with 422 and be retried forever. Our handlers only enqueue the object for a
level-triggered reconcile: they need to know *that* the spec changed, not how. So an essence over
:data:`FULL_ESSENCE_LIMIT` is stored as a digest of each of its parts: a change still shows as a diff of that part.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from typing import Any

import kopf

FULL_ESSENCE_LIMIT = 16 * 1024  # bytes of JSON kept as they are (readable in the annotation)


def digested(essence: dict[str, Any]) -> dict[str, Any]:
    """``essence`` when small; else each top-level part replaced by ``{"sha256": ...}`` of its JSON."""
    if len(json.dumps(essence, separators=(",", ":")).encode()) <= FULL_ESSENCE_LIMIT:
        return essence
    return {part: {"sha256": hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()}
            for part, value in essence.items()}


# what kopf's essence keeps of metadata (labels, annotations) and reads to name its annotation (ownerReferences)
ESSENCE_METADATA = ("labels", "annotations", "ownerReferences")


def _root(field: Any) -> str:
    return field.split(".")[0] if isinstance(field, str) else str(field[0])


def essential_part(body: Any, extra_fields: Collection[Any] | None = None) -> Any:
    """``body`` without what kopf's essence drops anyway (status, metadata other than :data:`ESSENCE_METADATA`):
    kopf deep-copies the whole body before dropping them, on every event of every object, and managedFields and
    status are most of a body. Unchanged when a handler tracks a field of status or metadata."""
    if any(_root(field) in ("status", "metadata") for field in extra_fields or ()):
        return body
    meta = body.get("metadata") or {}
    light = {key: value for key, value in body.items() if key not in ("status", "metadata")}
    light["metadata"] = {key: meta[key] for key in ESSENCE_METADATA if key in meta}
    return kopf.Body(light)


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base storage, storing a digest for a large essence (see the module docstring), built
    from the part of the body the essence keeps (:func:`essential_part`)."""

    def build(self, *, body: Any, extra_fields: Collection[Any] | None = None) -> Any:
        return digested(dict(super().build(body=essential_part(body, extra_fields), extra_fields=extra_fields)))
