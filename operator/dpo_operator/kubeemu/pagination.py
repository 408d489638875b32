"""``limit``/``continue`` list pagination as kube-apiserver (etcd3 storage) does it.

Lists come back in storage-key order (``<namespace>/<name>``, bytewise); a limited list carries a ``continue``
token, base64 JSON ``{"v": "meta.k8s.io/v1", "rv": <list resourceVersion>, "start": "<last key>\\u0000"}``
(k8s.io/apiserver/pkg/storage/continue.go), and ``remainingItemCount`` when no selector filtered the list.
Unlike etcd the emulator keeps no old snapshots: the next page is read from the current objects.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from dpo_operator.kubeemu.errors import error


def storage_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta.get("name", ""))


def _decode(token: str) -> tuple[str, str]:
    try:
        decoded = json.loads(base64.b64decode(token, validate=False).decode())
        if decoded.get("v") != "meta.k8s.io/v1" or not isinstance(decoded.get("start"), str):
            raise ValueError(decoded)
        return str(int(decoded["rv"])), decoded["start"]
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, AttributeError):
        raise error(400, "BadRequest", "continue key is not valid: incorrect encoded start resourceVersion "
                                       "(version meta.k8s.io/v1)") from None


def page(items: list[dict[str, Any]], params: Mapping[str, str], revision: str, *, filtered: bool
         ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The page of ``items`` the request asks for, and the list metadata that goes with it."""
    items = sorted(items, key=storage_key)
    meta: dict[str, Any] = {"resourceVersion": revision}
    if token := params.get("continue"):
        meta["resourceVersion"], start = _decode(token)
        items = [o for o in items if storage_key(o) >= start]
    try:
        limit = int(params.get("limit") or 0)
    except ValueError:
        raise error(400, "BadRequest", f"invalid limit: {params.get('limit')!r}") from None
    if 0 < limit < len(items):
        rest = len(items) - limit
        items = items[:limit]
        position = {"v": "meta.k8s.io/v1", "rv": int(meta["resourceVersion"]), "start": storage_key(items[-1]) + "\x00"}
        meta["continue"] = base64.b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()
        if not filtered:
            meta["remainingItemCount"] = rest
    return items, meta
