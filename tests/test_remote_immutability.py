"""Fields that locate something the operator created remotely cannot change after creation (CEL transition rules
in the CRDs, enforced by the API server), so deletion always cleans up where the remote job or deployment lives."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.kubehelpers import Kube

pytestmark = pytest.mark.e2e

CUSTOMIZER = {"backend": "customizer", "model": {"name": "meta/llama-3.2-1b-instruct@v1.0.0+A100"},
              "dataset": {"location": {"pvc": {"claimName": "d", "path": "/ds"}}},
              "customizer": {"entityStoreUrl": "http://es:8000", "datastoreUrl": "http://ds:3000", "namespace": "a"}}
NEMO = {"backend": "nemo", "model": {"explicit": {"name": "dpo/model@v1"}},
        "nemo": {"url": "http://dm:8000", "namespace": "a"}}


def refused(kube: Kube, kind: str, namespace: str, name: str, spec: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as caught:
        kube.patch_spec(kind, namespace, name, spec)
    assert caught.value.status == 422
    return caught.value.body


@pytest.mark.parametrize("change", [
    {"customizer": {"entityStoreUrl": "http://elsewhere:8000"}},
    {"customizer": {"customizerUrl": "http://customizer:8000"}},
    {"customizer": {"namespace": "b"}},
])
def test_where_a_remote_job_lives_is_immutable(kube: Kube, namespace: str, change: dict[str, Any]) -> None:
    kube.create("DPOTrainingJob", namespace, "remote", CUSTOMIZER)
    assert "customizer.entityStoreUrl, customizer.customizerUrl and customizer.namespace are immutable" in \
        refused(kube, "DPOTrainingJob", namespace, "remote", change)
    kube.patch_spec("DPOTrainingJob", namespace, "remote", {"customizer": {"pollIntervalSeconds": 5}})  # others may


def test_a_deployments_backend_and_nemo_location_are_immutable(kube: Kube, namespace: str) -> None:
    kube.create("ModelDeployment", namespace, "served", NEMO)
    assert "backend is immutable" in refused(kube, "ModelDeployment", namespace, "served", {"backend": "kubernetes"})
    assert "nemo.url and nemo.namespace are immutable" in \
        refused(kube, "ModelDeployment", namespace, "served", {"nemo": {"url": "http://other:8000"}})
    kube.patch_spec("ModelDeployment", namespace, "served", {"replicas": 2})
