"""Deterministic names and labels for the objects the operator creates.

Every valid resource name (a DNS-1123 subdomain: up to 253 characters, dots allowed, may start with a digit) must
give children a real API server accepts: Job and other object names are DNS-1123 labels of at most 63 characters,
Service names DNS-1035 labels (starting with a letter), label values at most 63 characters that start and end
alphanumeric. Names that already fit are used as they are; others are shortened or rewritten with a stable hash
of the original, so an operator restart finds the child it created instead of creating another.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from dpo_operator.api import API_VERSION

MANAGED_BY = "dpo-operator"
LABEL_PREFIX = "dpo.ai"
MAX_LABEL = 63

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def child_name(owner: str, suffix: str, limit: int = MAX_LABEL, hostname: bool = False) -> str:
    """``{owner}-{suffix}``, at most ``limit`` characters: a DNS-1123 subdomain (the owner's dots kept), or with
    ``hostname`` a DNS-1123 label (what pod hostnames of an Indexed Job are built from). A name that had to change
    is shortened and gets a hash of the original."""
    name = f"{owner}-{suffix}"
    if len(name) <= limit and (DNS1123_LABEL if hostname else DNS1123_SUBDOMAIN).fullmatch(name):
        return name
    tail = f"-{_digest(name)}-{suffix}"
    head = re.sub(r"[^a-z0-9]+", "-", owner.lower()) if hostname else owner
    head = re.sub(r"[-.]+$", "", head[: max(0, limit - len(tail))])
    return f"{head}{tail}" if head else tail.lstrip("-")


def service_name(owner: str, suffix: str = "", limit: int = MAX_LABEL) -> str:
    """A DNS-1035 label (what a Service name must be): ``owner`` or ``{owner}-{suffix}`` when that fits, else a
    letter-led, shortened form with a hash of the original."""
    name = f"{owner}-{suffix}" if suffix else owner
    if len(name) <= limit and DNS1035_LABEL.fullmatch(name):
        return name
    tail = f"-{_digest(name)}" + (f"-{suffix}" if suffix else "")
    head = re.sub(r"[^a-z0-9]+", "-", owner.lower()).strip("-")
    if not head or not head[0].isalpha():
        head = f"s-{head}".rstrip("-")
    return head[: max(1, limit - len(tail))].rstrip("-") + tail


def label_value(value: str) -> str:
    """``value`` as a valid label value (at most 63 characters, alphanumeric at both ends)."""
    if len(value) <= MAX_LABEL and LABEL_VALUE.fullmatch(value):
        return value
    tail = f"-{_digest(value)}"
    head = re.sub(r"[^-A-Za-z0-9_.]+", "-", value)[: MAX_LABEL - len(tail)]
    head = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", head)
    return f"{head}{tail}" if head else tail.lstrip("-")


def owner_label(kind: str) -> str:
    return f"{LABEL_PREFIX}/{kind.lower()}"


def labels_for(kind: str, owner: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": component,
        owner_label(kind): label_value(owner),
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
