"""Our own custom resources through the API: read, list, create once, delete our own, patch a spec."""

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


def delete_owned(kind: KindInfo, namespace: str, name: str, owner_uid: str) -> bool:
    """Delete the resource if it exists and ``owner_uid`` controls it (never someone else's); True once gone."""
    from kubernetes.client import V1DeleteOptions, V1Preconditions

    from dpo_operator.kube.objects import controller_uid

    found = read(kind, namespace, name)
    if found is None:
        return True
    if controller_uid(found) != owner_uid:
        return False
    options = V1DeleteOptions(preconditions=V1Preconditions(uid=found["metadata"]["uid"]))
    none_if_missing(lambda: client.custom().delete_namespaced_custom_object(
        GROUP, VERSION, namespace, kind.plural, name, body=options))
    return True


def patch_spec(kind: KindInfo, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch of the resource's spec (a None value removes a field)."""
    return client.custom().patch_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, name, {"spec": spec})
