"""Secret values the operator itself needs (API keys for remote services); never logged or written anywhere."""

from __future__ import annotations

import base64

from kubernetes.client.exceptions import ApiException

from dpo_operator.api.common import SecretKeyRef
from dpo_operator.kube import client


class SecretMissing(Exception):
    """The Secret or its key does not exist (yet): the message names which, never a value."""


def read_secret_key(namespace: str, ref: SecretKeyRef | None) -> str | None:
    if ref is None:
        return None
    try:
        secret = client.core().read_namespaced_secret(ref.name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise SecretMissing(f"Secret {namespace}/{ref.name} does not exist") from None
        raise
    data = secret.data or {}
    if ref.key not in data:
        raise SecretMissing(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
    return base64.b64decode(data[ref.key]).decode().strip()
