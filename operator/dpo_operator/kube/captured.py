"""Credentials captured at submission, so remote work can be cancelled after the user's Secret is gone.

When the operator is about to create remote work (a NeMo Customizer job), it copies the API key it sends, and the
URL it sends it to, into a Secret of its own (``<resource>-remote-credentials``): controlled by the resource (so
the garbage collector removes it with the resource), not labelled ``dpo.ai/usable`` (no pod or other resource can
use it), never echoed in status. Cancelling prefers the user's Secret as it is now (a rotated key), and falls
back to the captured one when that is gone or refused (401/403): the captured key goes only to the captured URL.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from dpo_operator.kube import client, redact
from dpo_operator.kube.naming import child_name, labels_for, owner_reference
from dpo_operator.kube.objects import controller_uid, none_if_missing

URL_KEY = "url"
API_KEY = "api-key"


@dataclass(frozen=True)
class Captured:
    url: str
    api_key: str | None


def captured_name(owner: str) -> str:
    return child_name(owner, "remote-credentials")


def _encode(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def capture(kind: str, body: Any, url: str, api_key: str | None) -> None:
    """Keep ``api_key`` for ``url`` in the resource's own Secret (once: a later submission keeps the first)."""
    meta = body["metadata"]
    name = captured_name(meta["name"])
    data = {URL_KEY: _encode(url), **({API_KEY: _encode(api_key)} if api_key else {})}
    manifest = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "labels": labels_for(kind, meta["name"], "remote-credentials"),
                             "ownerReferences": [owner_reference(kind, body)]},
                "data": data}
    try:
        client.core().create_namespaced_secret(meta["namespace"], manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise


def read_captured(namespace: str, owner: str, uid: str) -> Captured | None:
    """The credentials captured for the resource with this uid; None when there are none (or the Secret of that
    name belongs to something else: a stranger's Secret never redirects a key)."""
    secret = none_if_missing(lambda: client.core().read_namespaced_secret(captured_name(owner), namespace))
    if secret is None:
        return None
    as_dict = client.api_client().sanitize_for_serialization(secret)
    if controller_uid(as_dict) != uid:
        return None
    data = {k: base64.b64decode(v).decode(errors="replace") for k, v in (as_dict.get("data") or {}).items()}
    if not data.get(URL_KEY):
        return None
    redact.remember(data.get(API_KEY))
    return Captured(data[URL_KEY], (data.get(API_KEY) or "").strip() or None)
