"""The emulated API server refuses what kube-apiserver (and etcd behind it) refuses: NaN/Infinity in JSON (400),
more than 256 KiB of annotations (422), an object over 1.5 MiB (413), a request body over 3 MiB (413)."""

from __future__ import annotations

import json

import httpx
import pytest
from kubernetes.client.exceptions import ApiException

from tests.kubehelpers import Kube

GOOD = {"llm": {"baseUrl": "http://x/v1", "model": "m"}, "output": {"pvc": {"claimName": "d"}}}


def _patch(kube: Kube, path: str, body: str) -> httpx.Response:
    return httpx.patch(f"{kube.api.configuration.host}{path}", content=body,
                       headers={"Content-Type": "application/merge-patch+json"})


def test_nan_and_infinity_are_not_json(kube: Kube, namespace: str) -> None:
    kube.require_emulated()
    kube.create("DPOCollection", namespace, "nan", GOOD)
    path = f"/apis/dpo.ai/v1alpha1/namespaces/{namespace}/dpocollections/nan/status"
    for constant in ("NaN", "Infinity", "-Infinity"):
        refused = _patch(kube, path, '{"status": {"meanScoreDiff": %s}}' % constant)
        assert refused.status_code == 400, (constant, refused.status_code)
        assert refused.json()["reason"] == "BadRequest"
    assert "meanScoreDiff" not in (kube.get("DPOCollection", namespace, "nan").get("status") or {})


def test_annotations_are_bounded_to_256_kib(kube: Kube, namespace: str) -> None:
    kube.require_emulated()
    kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "small", "annotations": {
        "a": "x" * (256 * 1024 - 1)}}})  # exactly at the limit: key + value
    with pytest.raises(ApiException) as refused:
        kube.core.patch_namespaced_config_map("small", namespace, {"metadata": {"annotations": {"b": "y"}}})
    assert refused.value.status == 422
    assert "metadata.annotations: Too long: may not be more than 262144 bytes" in json.loads(refused.value.body)["message"]


def test_objects_over_1_5_mib_and_bodies_over_3_mib_are_too_large(kube: Kube, namespace: str) -> None:
    kube.require_emulated()
    with pytest.raises(ApiException) as stored:
        kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "big"}, "data": {"d": "x" * 1_600_000}})
    assert stored.value.status == 413
    assert json.loads(stored.value.body)["message"] == "etcdserver: request is too large"
    kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "fits"}, "data": {"d": "x" * 1_500_000}})
    with pytest.raises(ApiException) as body:
        kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "huge"}, "data": {"d": "x" * 3_200_000}})
    assert body.value.status == 413
    assert json.loads(body.value.body)["message"] == "Request entity too large: limit is 3145728"
