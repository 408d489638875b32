"""Where the emulated API server used to differ silently from kube-apiserver (issue 30, item 2), checked through
the kubernetes client: field selectors per kind, limit/continue, cascades, built-in defaulting, generation."""

from __future__ import annotations

import json

import httpx
import pytest
from kubernetes.client.exceptions import ApiException

from tests.kubehelpers import Kube

GOOD = {"llm": {"baseUrl": "http://x/v1", "model": "m"}, "output": {"pvc": {"claimName": "d"}}}


def _owned(name: str, owner: dict[str, object], **meta: object) -> dict[str, object]:
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],  # type: ignore[index]
           "uid": owner["metadata"]["uid"]}  # type: ignore[index]
    return {"metadata": {"name": name, "ownerReferences": [ref], **meta}}


def test_field_selectors_are_validated_per_kind(kube: Kube, namespace: str) -> None:
    kube.usable_secret(namespace, "plain", {"a": "b"})
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                                                   "data": {"tls.crt": "", "tls.key": ""}})
    listed = kube.core.list_namespaced_secret(namespace, field_selector="type=kubernetes.io/tls").items
    assert [s.metadata.name for s in listed] == ["tls"]
    assert [s.metadata.name for s in kube.core.list_namespaced_secret(namespace, field_selector="metadata.name=plain").items] \
        == ["plain"]
    for call, selector in ((kube.core.list_namespaced_config_map, "data.a=b"),
                           (kube.core.list_namespaced_secret, "data.a=b"),
                           (kube.core.list_namespaced_pod, "spec.containers=x")):
        with pytest.raises(ApiException) as refused:
            call(namespace, field_selector=selector)
        assert refused.value.status == 400
        assert json.loads(refused.value.body)["message"] == f"field label not supported: {selector.split('=')[0]}"

    kube.create("DPOCollection", namespace, "sel", GOOD)
    custom = ("dpo.ai", "v1alpha1", namespace, "dpocollections")
    named = kube.custom.list_namespaced_custom_object(*custom, field_selector="metadata.name=sel")["items"]
    assert [c["metadata"]["name"] for c in named] == ["sel"]
    with pytest.raises(ApiException) as refused:
        kube.custom.list_namespaced_custom_object(*custom, field_selector="spec.numRuns=1")
    assert refused.value.status == 400 and "field label not supported: spec.numRuns" in refused.value.body
    with pytest.raises(ApiException) as watch_refused:  # a watch is refused the same way, before it starts
        kube.custom.list_namespaced_custom_object(*custom, field_selector="spec.numRuns=1", watch=True,
                                                  _preload_content=False)
    assert watch_refused.value.status == 400


def test_pods_select_on_phase_and_node(kube: Kube, namespace: str) -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
    kube.core.create_namespaced_pod(namespace, pod)
    kube.core.patch_namespaced_pod_status("p", namespace, {"status": {"phase": "Succeeded"}})
    names = lambda selector: [p.metadata.name for p in kube.core.list_namespaced_pod(namespace, field_selector=selector).items]  # noqa: E731
    assert names("status.phase=Succeeded") == ["p"]
    assert names("status.phase!=Succeeded") == []
    assert names("spec.nodeName=") == ["p"]  # unscheduled: the empty value, as kube-apiserver selects it


def test_limit_and_continue_page_through_a_list_in_key_order(kube: Kube, namespace: str) -> None:
    for name in ("e", "c", "a", "d", "b"):
        kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    first = kube.core.list_namespaced_config_map(namespace, limit=2)
    assert [c.metadata.name for c in first.items] == ["a", "b"]
    assert first.metadata.remaining_item_count == 3 and first.metadata._continue
    second = kube.core.list_namespaced_config_map(namespace, limit=2, _continue=first.metadata._continue)
    assert [c.metadata.name for c in second.items] == ["c", "d"]
    assert second.metadata.resource_version == first.metadata.resource_version  # the list's snapshot version
    last = kube.core.list_namespaced_config_map(namespace, limit=2, _continue=second.metadata._continue)
    assert [c.metadata.name for c in last.items] == ["e"] and not last.metadata._continue
    filtered = kube.core.list_namespaced_config_map(namespace, limit=1, field_selector="metadata.name!=a")
    assert filtered.metadata.remaining_item_count is None  # unknown once a selector filters, as on kube-apiserver
    with pytest.raises(ApiException) as bad:
        kube.core.list_namespaced_config_map(namespace, limit=2, _continue="not-a-token")
    assert bad.value.status == 400


def test_orphan_background_and_foreground_cascades(kube: Kube, namespace: str) -> None:
    core = kube.core
    owner = kube.to_dict(core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}}))
    core.create_namespaced_config_map(namespace, _owned("kept", owner))
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Orphan")
    kept = core.read_namespaced_config_map("kept", namespace)
    assert kept.metadata.owner_references is None  # the garbage collector removed the reference

    owner = kube.to_dict(core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner2"}}))
    core.create_namespaced_config_map(namespace, _owned("gone", owner))
    core.delete_namespaced_config_map("owner2", namespace, propagation_policy="Background")
    assert [c.metadata.name for c in core.list_namespaced_config_map(namespace).items] == ["kept"]

    owner = kube.to_dict(core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner3"}}))
    core.create_namespaced_config_map(namespace, _owned("held", owner, finalizers=["test/hold"]))
    core.delete_namespaced_config_map("owner3", namespace, propagation_policy="Foreground")
    waiting = core.read_namespaced_config_map("owner3", namespace)
    assert waiting.metadata.deletion_timestamp and waiting.metadata.finalizers == ["foregroundDeletion"]
    assert core.read_namespaced_config_map("held", namespace).metadata.deletion_timestamp
    core.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})
    assert sorted(c.metadata.name for c in core.list_namespaced_config_map(namespace).items) == ["kept"]


def test_a_job_deleted_without_a_policy_orphans_its_pods_with_a_warning(kube: Kube, namespace: str) -> None:
    job = kube.to_dict(kube.batch.create_namespaced_job(namespace, {"metadata": {"name": "j"}, "spec": {"template": {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}))
    kube.core.create_namespaced_pod(namespace, {"metadata": {"name": "j-0", "ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": job["metadata"]["uid"], "controller": True}]},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}})
    deleted = httpx.delete(f"{kube.api.configuration.host}/apis/batch/v1/namespaces/{namespace}/jobs/j")
    assert deleted.status_code == 200 and "child pods are preserved by default" in deleted.headers["Warning"]
    assert kube.core.read_namespaced_pod("j-0", namespace).metadata.owner_references is None


def test_built_in_kinds_get_kube_apiservers_defaults(kube: Kube, namespace: str) -> None:
    secret = kube.to_dict(kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}}))
    assert secret["type"] == "Opaque" and "generation" not in secret["metadata"]
    cm = kube.to_dict(kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}}))
    assert "generation" not in cm["metadata"]
    updated = kube.to_dict(kube.core.patch_namespaced_config_map("cm", namespace, {"data": {"a": "2"}}))
    assert "generation" not in updated["metadata"]

    containers = [{"name": "latest", "image": "nginx"}, {"name": "pinned", "image": "nginx:1.27",
                                                         "ports": [{"containerPort": 80}]}]
    deployment = kube.to_dict(kube.apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
            "metadata": {"labels": {"app": "d"}}, "spec": {"containers": containers}}}}))
    spec = deployment["spec"]
    assert deployment["metadata"]["generation"] == 1
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    pod = spec["template"]["spec"]
    assert (pod["restartPolicy"], pod["dnsPolicy"], pod["schedulerName"], pod["terminationGracePeriodSeconds"]) == \
        ("Always", "ClusterFirst", "default-scheduler", 30)
    latest, pinned = pod["containers"]
    assert latest["imagePullPolicy"] == "Always" and pinned["imagePullPolicy"] == "IfNotPresent"
    assert pinned["terminationMessagePath"] == "/dev/termination-log" and pinned["terminationMessagePolicy"] == "File"
    assert pinned["ports"] == [{"containerPort": 80, "protocol": "TCP"}]

    job = kube.to_dict(kube.batch.create_namespaced_job(namespace, {"metadata": {"name": "j"}, "spec": {"template": {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}))
    uid, spec = job["metadata"]["uid"], job["spec"]
    assert (spec["backoffLimit"], spec["completions"], spec["parallelism"], spec["completionMode"]) == (6, 1, 1, "NonIndexed")
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert spec["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "j"


def test_scale_subresource_sets_replicas(kube: Kube, namespace: str) -> None:
    kube.apps.create_namespaced_deployment(namespace, {"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {
            "containers": [{"name": "c", "image": "nginx:1.27"}]}}}})
    scale = kube.to_dict(kube.apps.patch_namespaced_deployment_scale("d", namespace, {"spec": {"replicas": 3}}))
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3 and scale["status"]["selector"] == "app=d"
    deployment = kube.apps.read_namespaced_deployment("d", namespace)
    assert deployment.spec.replicas == 3 and deployment.metadata.generation == 2
    with pytest.raises(ApiException) as negative:
        kube.apps.patch_namespaced_deployment_scale("d", namespace, {"spec": {"replicas": -1}})
    assert negative.value.status == 422 and "spec.replicas" in negative.value.body
