"""Create-once semantics for the objects the operator owns under deterministic names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from dpo_operator.api.reasons import Reason

T = TypeVar("T")


class NameConflict(Exception):
    """An object of the child's name exists but is not ours: it is left untouched and the owner fails."""

    reason = Reason.NameConflict


def none_if_missing(read: Callable[[], T]) -> T | None:
    """``read()``, or None when the object does not exist (404)."""
    try:
        return read()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the object's controller owner reference, if it has one."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((r.get("uid") for r in refs if r.get("controller")), None)


def ours(found: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """``found`` when its controller owner reference is the one in ``manifest``; else :class:`NameConflict`."""
    wanted = controller_uid(manifest)
    if wanted is not None and controller_uid(found) != wanted:
        meta = manifest["metadata"]
        owner = next(r for r in meta["ownerReferences"] if r.get("controller"))
        raise NameConflict(
            f"{manifest.get('kind', 'an object')} {meta.get('namespace', '')}/{meta['name']} already exists and is not "
            f"controlled by {owner['kind']} {owner['name']}; it was left untouched: delete or rename it, or give "
            f"this {owner['kind']} another name")
    return found


def read_or_create(read: Callable[[], dict[str, Any] | None], create: Callable[[], dict[str, Any]],
                   manifest: dict[str, Any]) -> dict[str, Any]:
    """The existing object, else a new one; when another worker (or a restarted operator) created it meanwhile,
    that one is adopted instead of failing on 409. An existing object is used only when its controller owner
    reference is the one in ``manifest`` (same uid): otherwise :class:`NameConflict`."""
    existing = read()
    if existing is not None:
        return ours(existing, manifest)
    try:
        return create()
    except ApiException as exc:
        if exc.status == 409 and (found := read()) is not None:
            return ours(found, manifest)
        raise
