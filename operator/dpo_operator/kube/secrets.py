"""The Secrets a resource may use, and the values the operator itself needs (API keys for remote services).

A user who may create our resources is not necessarily allowed to read Secrets. So that the operator does not
read (or hand to a pod, or send to a URL from the spec) a Secret on such a user's behalf, it uses only Secrets
that opt in with the label ``dpo.ai/usable: "true"``; the Secret's owner grants that. Values are never logged or
written anywhere, and every value read is remembered for redaction (:mod:`dpo_operator.kube.redact`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from typing import Any

from kubernetes.client.exceptions import ApiException

from dpo_operator.api.common import SecretKeyRef
from dpo_operator.kube import client, redact

USABLE_LABEL = "dpo.ai/usable"


class SecretMissing(Exception):
    """The Secret or its key does not exist (yet): the message names which, never a value."""

    reason = "SecretNotFound"
    hint = "retrying until it exists"


class SecretNotUsable(SecretMissing):
    """The Secret exists but has not opted in to being used by the operator."""

    reason = "SecretNotUsable"
    hint = "retrying until it is labelled"


def _read_usable(namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret as a dict (values remembered for redaction), None when absent; raises when it has not opted in."""
    try:
        secret = client.core().read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    data = {key: base64.b64decode(value).decode(errors="replace") for key, value in (secret.data or {}).items()}
    for value in data.values():
        redact.remember(value)
    labels = (secret.metadata.labels or {}) if secret.metadata else {}
    if labels.get(USABLE_LABEL) != "true":
        raise SecretNotUsable(
            f"Secret {namespace}/{name} is not labelled {USABLE_LABEL}=\"true\": the operator uses only Secrets that "
            f"opt in (its owner runs: kubectl label secret -n {namespace} {name} {USABLE_LABEL}=true)")
    return data


def read_secret_key(namespace: str, ref: SecretKeyRef | None) -> str | None:
    """The value of a Secret key the operator itself needs (an API key)."""
    if ref is None:
        return None
    data = _read_usable(namespace, ref.name)
    if data is None:
        raise SecretMissing(f"Secret {namespace}/{ref.name} does not exist")
    if ref.key not in data:
        raise SecretMissing(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
    return data[ref.key].strip()


def pod_secret_refs(pod_spec: dict[str, Any]) -> Iterator[tuple[str, str | None, bool]]:
    """(Secret name, key or None for a whole-Secret envFrom, optional) for every Secret a pod spec's containers
    read through the kubelet."""
    containers = [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]
    for container in containers:
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                yield ref.get("name", ""), ref.get("key"), bool(ref.get("optional"))
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef")
            if ref:
                yield ref.get("name", ""), None, bool(ref.get("optional"))


def check_pod_secrets(namespace: str, pod_spec: dict[str, Any]) -> None:
    """Refuse a pod spec that reads a Secret which does not exist (unless optional) or has not opted in."""
    check_refs(namespace, pod_secret_refs(pod_spec))


def check_refs(namespace: str, refs: Iterable[tuple[str, str | None, bool]]) -> None:
    seen: dict[str, dict[str, Any] | None] = {}
    for name, key, optional in refs:
        if name not in seen:
            seen[name] = _read_usable(namespace, name)
        data = seen[name]
        if data is None:
            if optional:
                continue
            raise SecretMissing(f"Secret {namespace}/{name} does not exist")
        if key is not None and key not in data and not optional:
            raise SecretMissing(f"Secret {namespace}/{name} has no key {key!r}")
