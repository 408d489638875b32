"""The emulated API server behaves like kube-apiserver where the operator and kopf depend on it."""

from __future__ import annotations

from typing import Any

import httpx
import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.kubehelpers import Kube

GOOD = {"llm": {"baseUrl": "http://x/v1", "model": "m"}, "output": {"pvc": {"claimName": "d"}}}


def test_create_fills_metadata_and_defaults(kube: Kube, namespace: str) -> None:
    obj = kube.create("DPOCollection", namespace, "a", GOOD)
    meta = obj["metadata"]
    assert meta["namespace"] == namespace and meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    assert obj["spec"]["candidatesPerTurn"] == 4 and obj["spec"]["workflow"]["name"] == "tictactoe"
    with pytest.raises(ApiException) as conflict:
        kube.create("DPOCollection", namespace, "a", GOOD)
    assert conflict.value.status == 409


def test_schema_violations_answer_422_with_the_field(kube: Kube, namespace: str) -> None:
    with pytest.raises(ApiException) as invalid:
        kube.create("DPOCollection", namespace, "b", {**GOOD, "numRuns": 0})
    assert invalid.value.status == 422 and "spec.numRuns" in invalid.value.body


def test_status_subresource_and_generation(kube: Kube, namespace: str) -> None:
    kube.create("DPOCollection", namespace, "c", GOOD)
    args = ("dpo.ai", "v1alpha1", namespace, "dpocollections", "c")
    obj = kube.custom.patch_namespaced_custom_object(*args, {"status": {"phase": "Running"}})
    assert "status" not in obj  # the main resource ignores status
    obj = kube.custom.patch_namespaced_custom_object_status(*args, {"status": {"phase": "Running"}, "spec": {"suspend": True}})
    assert obj["status"]["phase"] == "Running" and obj["spec"]["suspend"] is False and obj["metadata"]["generation"] == 1
    obj = kube.patch_spec("DPOCollection", namespace, "c", {"suspend": True})
    assert obj["metadata"]["generation"] == 2 and obj["status"]["phase"] == "Running"


def test_failed_json_patch_test_is_422_and_stale_update_is_409(kube: Kube, namespace: str) -> None:
    obj = kube.create("DPOCollection", namespace, "d", GOOD)
    args = ("dpo.ai", "v1alpha1", namespace, "dpocollections", "d")
    with pytest.raises(ApiException) as failed:
        kube.custom.patch_namespaced_custom_object(*args, [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"}],
                                                   _content_type="application/json-patch+json")
    assert failed.value.status == 422
    stale = {**obj, "spec": {**obj["spec"], "suspend": True}}
    kube.patch_spec("DPOCollection", namespace, "d", {"seed": 1})
    with pytest.raises(ApiException) as conflict:
        kube.custom.replace_namespaced_custom_object(*args, stale)
    assert conflict.value.status == 409


def test_watch_resumes_from_a_resource_version(kube: Kube, namespace: str) -> None:
    first = kube.create("DPOCollection", namespace, "e", GOOD)
    kube.patch_spec("DPOCollection", namespace, "e", {"seed": 5})
    watch = kubernetes.watch.Watch()
    events = [(e["type"], e["object"]["spec"]["seed"]) for e in watch.stream(
        kube.custom.list_namespaced_custom_object, "dpo.ai", "v1alpha1", namespace, "dpocollections",
        resource_version=first["metadata"]["resourceVersion"], timeout_seconds=1)]
    assert events == [("MODIFIED", 5)]


def test_finalizers_and_owner_garbage_collection(kube: Kube, namespace: str) -> None:
    owner = kube.create("DPOCollection", namespace, "f", GOOD)
    kube.custom.patch_namespaced_custom_object("dpo.ai", "v1alpha1", namespace, "dpocollections", "f",
                                               {"metadata": {"finalizers": ["test/hold"]}})
    kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "child", "ownerReferences": [
        {"apiVersion": "dpo.ai/v1alpha1", "kind": "DPOCollection", "name": "f", "uid": owner["metadata"]["uid"]}]}})
    kube.delete("DPOCollection", namespace, "f")
    held = kube.get("DPOCollection", namespace, "f")
    assert held["metadata"]["deletionTimestamp"]
    assert [c.metadata.name for c in kube.core.list_namespaced_config_map(namespace).items] == ["child"]
    kube.custom.patch_namespaced_custom_object("dpo.ai", "v1alpha1", namespace, "dpocollections", "f",
                                               {"metadata": {"finalizers": None}})
    assert not kube.exists("DPOCollection", namespace, "f")
    assert kube.core.list_namespaced_config_map(namespace).items == []


def test_label_selectors(kube: Kube, namespace: str) -> None:
    for name, tier in (("x", "gpu"), ("y", "cpu"), ("z", None)):
        labels = {"tier": tier} if tier else {}
        kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})
    names = lambda selector: sorted(c.metadata.name for c in kube.core.list_namespaced_config_map(namespace, label_selector=selector).items)  # noqa: E731
    assert names("tier=gpu") == ["x"]
    assert names("tier!=gpu") == ["y", "z"]
    assert names("tier in (gpu,cpu)") == ["x", "y"]
    assert names("!tier") == ["z"]


def _raw(kube: Kube, path: str, accept: str = "application/json") -> tuple[Any, str]:
    response = httpx.get(kube.api.configuration.host + path, headers={"Accept": accept})
    response.raise_for_status()
    return response.json(), response.headers["Content-Type"]


def test_legacy_discovery_as_kube_apiserver_serves_it(kube: Kube) -> None:
    kube.require_emulated()
    core = kubernetes.client.CoreV1Api(kube.api).get_api_resources()
    assert core.group_version == "v1"
    by_name = {r.name: r for r in core.resources}
    pvc, status = by_name["persistentvolumeclaims"], by_name["persistentvolumeclaims/status"]
    assert (pvc.singular_name, pvc.short_names, pvc.namespaced) == ("persistentvolumeclaim", ["pvc"], True)
    assert status.verbs == ["get", "patch", "update"] and not status.categories and not status.short_names
    ours, _ = _raw(kube, "/apis/dpo.ai/v1alpha1")
    main = next(r for r in ours["resources"] if r["name"] == "dpocollections")
    assert main["singularName"] == "dpocollection" and main["shortNames"] == ["dpoc"] and main["categories"] == ["dpo"]
    assert "categories" not in next(r for r in ours["resources"] if r["name"] == "dpocollections/status")
    aggregated, content_type = _raw(kube, "/apis", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    assert content_type == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    group = next(i for i in aggregated["items"] if i["metadata"].get("name") == "dpo.ai")
    resource = next(r for r in group["versions"][0]["resources"] if r["resource"] == "dpocollections")
    assert resource["subresources"][0]["subresource"] == "status" and resource["scope"] == "Namespaced"


def test_table_responses_carry_the_printer_columns(kube: Kube, namespace: str) -> None:
    kube.require_emulated()
    kube.create("DPOCollection", namespace, "t", GOOD)
    table, _ = _raw(kube, f"/apis/dpo.ai/v1alpha1/namespaces/{namespace}/dpocollections",
                    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns == [("Name", 0), ("Phase", 0), ("Pairs", 0), ("Progress", 0), ("ETA", 0), ("Age", 0), ("Candidates", 1), ("Dataset", 1),
                       ("Reason", 1), ("Message", 1)]
    assert table["rows"][0]["cells"][:3] == ["t", None, None]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"

    kubernetes.client.CustomObjectsApi(kube.api).patch_namespaced_custom_object_status(
        "dpo.ai", "v1alpha1", namespace, "dpocollections", "t",
        {"status": {"phase": "Failed", "reason": "InvalidSpec", "message": "llm.model must not be empty"}})
    table, _ = _raw(kube, f"/apis/dpo.ai/v1alpha1/namespaces/{namespace}/dpocollections",
                    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    cells = dict(zip([name for name, _ in columns], table["rows"][0]["cells"]))
    assert (cells["Phase"], cells["Reason"], cells["Message"]) == \
        ("Failed", "InvalidSpec", "llm.model must not be empty")


def test_strategic_merge_patch_merges_containers_by_name(kube: Kube, namespace: str) -> None:
    kube.require_emulated()
    apps = kubernetes.client.AppsV1Api(kube.api)
    containers = [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]
    apps.create_namespaced_deployment(namespace, {"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": containers}}}})
    patched = apps.patch_namespaced_deployment("d", namespace, {"spec": {"template": {"spec": {"containers": [
        {"name": "b", "image": "b:2"}]}}}})  # the client sends this as a strategic merge patch
    assert [(c.name, c.image) for c in patched.spec.template.spec.containers] == [("a", "a:1"), ("b", "b:2")]


def test_deleting_a_namespace_deletes_what_is_in_it(kube: Kube) -> None:
    kube.require_emulated()
    kube.core.create_namespace({"metadata": {"name": "doomed"}})
    kube.core.create_namespaced_config_map("doomed", {"metadata": {"name": "c"}})
    kube.core.delete_namespace("doomed")
    with pytest.raises(ApiException) as gone:
        kube.core.read_namespace("doomed")
    assert gone.value.status == 404
    with pytest.raises(ApiException) as missing:
        kube.core.create_namespaced_config_map("doomed", {"metadata": {"name": "c"}})
    assert missing.value.status == 404 and 'namespaces \\"doomed\\" not found' in missing.value.body
