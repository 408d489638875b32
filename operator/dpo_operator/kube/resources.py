"""Reading and creating our own custom resources through the API."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from dpo_operator.api import GROUP, VERSION, KindInfo
from dpo_operator.kube import client


def read(kind: KindInfo, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return client.custom().get_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def list_in(kind: KindInfo, namespace: str) -> list[dict[str, Any]]:
    return client.custom().list_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural)["items"]


def ensure(kind: KindInfo, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create the resource unless one of that name exists (then return that one)."""
    existing = read(kind, namespace, body["metadata"]["name"])
    if existing is not None:
        return existing
    try:
        return client.custom().create_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, body)
    except ApiException as exc:
        if exc.status == 409:
            found = read(kind, namespace, body["metadata"]["name"])
            if found is not None:
                return found
        raise
