"""A Job its owner has not recorded yet is created first and read only when the name is taken: the same outcomes as
read-then-create (ours adopted, a stranger's refused, an existing Job used even while a Secret it needs is gone);
and the emulated API server's per-resource index lists what a full scan listed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kubehelpers import Kube

pytestmark = pytest.mark.e2e


def _manifest(name: str, owner_uid: str, secret: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox", "command": ["true"]}
    if secret:
        container["env"] = [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "ownerReferences": [
                {"apiVersion": "dpo.ai/v1alpha1", "kind": "DPOCollection", "name": "owner", "uid": owner_uid,
                 "controller": True}]},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}}


def test_create_first_adopts_ours_refuses_a_strangers_and_keeps_an_existing_job(kube: Kube, namespace: str) -> None:
    kube.require_emulated()  # calls the operator's job helpers directly
    from dpo_operator.kube import client
    from dpo_operator.kube.jobs import create_or_get_job
    from dpo_operator.kube.objects import NameConflict
    from dpo_operator.kube.secrets import SecretMissing

    client.load()
    job, created = create_or_get_job(namespace, _manifest("j", "uid-1"))
    assert created and kube.job(namespace, "j") is not None
    again, created_again = create_or_get_job(namespace, _manifest("j", "uid-1"))
    assert not created_again and again["metadata"]["uid"] == job["metadata"]["uid"]
    with pytest.raises(NameConflict):
        create_or_get_job(namespace, _manifest("j", "uid-2"))
    # the Job exists: a Secret its pods read that is gone now does not hide it
    kept, _ = create_or_get_job(namespace, _manifest("j", "uid-1", secret="absent"))
    assert kept["metadata"]["uid"] == job["metadata"]["uid"]
    with pytest.raises(SecretMissing):  # no Job yet: the missing Secret is what the owner waits for
        create_or_get_job(namespace, _manifest("other", "uid-1", secret="absent"))
    assert kube.job(namespace, "other") is None


def test_lists_read_each_resource_and_namespace_alone(kube: Kube, namespace: str) -> None:
    kube.require_emulated()
    other = f"{namespace}-b"
    kube.core.create_namespace({"metadata": {"name": other}})
    try:
        for ns, name in ((namespace, "a"), (namespace, "b"), (other, "a")):
            kube.core.create_namespaced_config_map(ns, {"metadata": {"name": name}, "data": {"ns": ns}})
        kube.core.delete_namespaced_config_map("b", namespace)
        kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
        kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "b"}, "data": {"again": "1"}})
        listed = kube.core.list_namespaced_config_map(namespace).items
        assert [(m.metadata.name, m.data) for m in listed] == [("a", {"ns": namespace}), ("b", {"again": "1"}),
                                                                ("c", None)]
        assert [m.metadata.name for m in kube.core.list_namespaced_config_map(other).items] == ["a"]
        everywhere = kube.core.list_config_map_for_all_namespaces().items
        assert {(m.metadata.namespace, m.metadata.name) for m in everywhere} >= {
            (namespace, "a"), (namespace, "b"), (namespace, "c"), (other, "a")}
        assert kube.core.list_namespaced_secret(other).items == []  # other resources' objects are not listed
    finally:
        kube.core.delete_namespace(other)
