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


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base storage, storing a digest for a large essence (see the module docstring)."""

    def build(self, *, body: Any, extra_fields: Collection[Any] | None = None) -> Any:
        return digested(dict(super().build(body=body, extra_fields=extra_fields)))
