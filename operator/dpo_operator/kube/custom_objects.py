"""Our own custom resources (DPOCollection, DPOTrainingJob, ModelDeployment) through the API: read, list, create once."""

from __future__ import annotations

from typing import Any

from dpo_operator.api import GROUP, VERSION, KindInfo
from dpo_operator.kube import client
from dpo_operator.kube.objects import none_if_missing, read_or_create


def read(kind: KindInfo, namespace: str, name: str) -> dict[str, Any] | None:
    return none_if_missing(lambda: client.custom().get_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, name))


def list_in(kind: KindInfo, namespace: str) -> list[dict[str, Any]]:
    return client.custom().list_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural)["items"]


def ensure(kind: KindInfo, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create the resource unless one of that name exists (then return that one)."""
    return read_or_create(lambda: read(kind, namespace, body["metadata"]["name"]),
                          lambda: client.custom().create_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, body),
                          body)
