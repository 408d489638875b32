"""The Secrets a resource may use, and the values the operator itself needs (API keys for remote services).

A user who may create our resources is not necessarily allowed to read Secrets. So that the operator does not
read (or hand to a pod, or send to a URL from the spec) a Secret on such a user's behalf, it uses only Secrets
that opt in with the label ``dpo.ai/usable: "true"``; the Secret's owner grants that. Values are never logged or
written anywhere, and every value read is remembered for redaction (:mod:`dpo_operator.kube.redact`).

The label says who may use a Secret, the annotation ``dpo.ai/allowed-urls`` where its value may go: URL prefixes
(comma- or space-separated, e.g. ``http://nemo-entity-store.nemo:8000, https://huggingface.co``), or ``*`` for
anywhere. The operator sends a value (as a bearer token) only to a URL under one of them, and hands a Secret to a
pod only where the spec says where the pod sends it (a Hub endpoint, ``llm.baseUrl``, the Datastore) and that URL
is allowed; a Secret a template passes to a pod itself (``template.env``/``envFrom``), whose destination the
operator cannot tell, needs ``*``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from kubernetes.client.exceptions import ApiException

from dpo_operator.api.common import SecretKeyRef
from dpo_operator.api.reasons import Reason
from dpo_operator.kube import client, redact

USABLE_LABEL = "dpo.ai/usable"
ALLOWED_URLS_ANNOTATION = "dpo.ai/allowed-urls"
# on a pod template the operator builds: {env var: the URL the pod sends that Secret to}; set by the operator only
DESTINATIONS_ANNOTATION = "dpo.ai/secret-destinations"


class SecretMissing(Exception):
    """The Secret or its key does not exist (yet): the message names which, never a value."""

    reason = Reason.SecretNotFound
    hint = "retrying until it exists"


class SecretNotUsable(SecretMissing):
    """The Secret exists but has not opted in to being used by the operator."""

    reason = Reason.SecretNotUsable
    hint = "retrying until it is labelled"


class SecretDestinationNotAllowed(SecretMissing):
    """The Secret is usable, but not for the URL it would be sent to."""

    reason = Reason.SecretDestinationNotAllowed
    hint = f"retrying until the Secret's {ALLOWED_URLS_ANNOTATION} annotation allows it"


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or {"http": 80, "https": 443}.get(url.scheme)


def url_allowed(url: str, allowed: str) -> bool:
    """Is ``url`` under one of the prefixes listed in ``allowed`` (same scheme, host and port; the path at or below
    the prefix's, segment by segment)? ``*`` allows any URL."""
    prefixes = allowed.replace(",", " ").split()
    if "*" in prefixes:
        return True
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return False
    if target.userinfo or not target.host or ".." in target.path.split("/"):  # (%2e%2e decodes to ..)
        return False
    for prefix in prefixes:
        try:
            base = httpx.URL(prefix)
        except httpx.InvalidURL:
            continue
        if base.host and _origin(base) == _origin(target):
            root = base.path.rstrip("/")
            if target.path == root or target.path.startswith(root + "/") or not root:
                return True
    return False


def check_destination(namespace: str, name: str, annotations: dict[str, str], destination: str | None) -> None:
    """Raise unless the Secret's annotation allows sending it to ``destination`` (None: a place the operator
    cannot tell, which only ``*`` allows)."""
    allowed = annotations.get(ALLOWED_URLS_ANNOTATION, "")
    if url_allowed(destination, allowed) if destination is not None else "*" in allowed.replace(",", " ").split():
        return
    where = f"to {destination}" if destination is not None else "to a pod that may send it anywhere (template.env/envFrom)"
    example = destination or "*"
    raise SecretDestinationNotAllowed(
        f"Secret {namespace}/{name} may not be sent {where}: its annotation {ALLOWED_URLS_ANNOTATION} "
        f"({allowed or 'not set'}) does not allow it (its owner runs: kubectl annotate secret -n {namespace} {name} "
        f"{ALLOWED_URLS_ANNOTATION}='{example}', adding to the URLs already allowed)")


def _read_usable(namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret as a dict (values remembered for redaction; its annotations under the key None), None when
    absent; raises when it has not opted in."""
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
    return {**data, None: dict((secret.metadata.annotations or {}) if secret.metadata else {})}


def read_secret_key(namespace: str, ref: SecretKeyRef | None, *destinations: str) -> str | None:
    """The value of a Secret key the operator itself sends (an API key) to each of ``destinations``, which the
    Secret's annotation must allow."""
    if ref is None:
        return None
    data = _read_usable(namespace, ref.name)
    if data is None:
        raise SecretMissing(f"Secret {namespace}/{ref.name} does not exist")
    if ref.key not in data:
        raise SecretMissing(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
    for destination in destinations or (None,):
        check_destination(namespace, ref.name, data[None], destination)
    return data[ref.key].strip()


def destinations_annotation(destinations: dict[str, str | None]) -> dict[str, str]:
    """The pod template annotation saying where the pod sends the Secrets in these env vars (None entries: none)."""
    known = {var: url for var, url in destinations.items() if url}
    return {DESTINATIONS_ANNOTATION: json.dumps(known, sort_keys=True)} if known else {}


def pod_secret_refs(template: dict[str, Any]) -> Iterator[tuple[str, str | None, bool, str | None]]:
    """(Secret name, key or None for a whole-Secret envFrom, optional, where the pod sends it or None) for every
    Secret a pod template's containers read through the kubelet."""
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    try:
        destinations = json.loads(annotations.get(DESTINATIONS_ANNOTATION) or "{}")
    except ValueError:
        destinations = {}
    pod_spec = template.get("spec") or {}
    containers = [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]
    for container in containers:
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                yield ref.get("name", ""), ref.get("key"), bool(ref.get("optional")), destinations.get(var.get("name"))
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef")
            if ref:
                yield ref.get("name", ""), None, bool(ref.get("optional")), None


def check_pod_secrets(namespace: str, template: dict[str, Any]) -> None:
    """Refuse a pod template that reads a Secret which does not exist (unless optional), has not opted in, or may
    not go where the pod sends it."""
    check_refs(namespace, pod_secret_refs(template))


def check_refs(namespace: str, refs: Iterable[tuple[str, str | None, bool, str | None]]) -> None:
    seen: dict[str, dict[Any, Any] | None] = {}
    for name, key, optional, destination in refs:
        if name not in seen:
            seen[name] = _read_usable(namespace, name)
        data = seen[name]
        if data is None:
            if optional:
                continue
            raise SecretMissing(f"Secret {namespace}/{name} does not exist")
        if key is not None and key not in data and not optional:
            raise SecretMissing(f"Secret {namespace}/{name} has no key {key!r}")
        check_destination(namespace, name, data[None], destination)
