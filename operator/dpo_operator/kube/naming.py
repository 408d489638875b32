"""Deterministic names and labels for the objects the operator creates."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from dpo_operator.api import API_VERSION

MANAGED_BY = "dpo-operator"
LABEL_PREFIX = "dpo.ai"


def child_name(owner: str, suffix: str, limit: int = 63) -> str:
    """``{owner}-{suffix}``, shortened with a stable hash when longer than a DNS label allows.

    Deterministic, so an operator restart finds the child it created instead of creating another.
    """
    name = f"{owner}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    head = re.sub(r"[-.]+$", "", owner[: limit - len(suffix) - len(digest) - 2])
    return f"{head}-{digest}-{suffix}"


def owner_label(kind: str) -> str:
    return f"{LABEL_PREFIX}/{kind.lower()}"


def labels_for(kind: str, owner: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": component,
        owner_label(kind): owner[:63],
    }


def owner_reference(kind: str, body: Any) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
