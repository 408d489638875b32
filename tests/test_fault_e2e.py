"""Fault tolerance: the operator stops in the middle of a pipeline and a new one takes over. Every resource
converges, and nothing the operator creates (Jobs, Deployments, remote Customizer jobs) exists twice."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dpo_operator.nemo import customizer as nemo_api
from dpo_operator.nemo.http import NemoApi
from tests.fakes.nemo import FakeNemo
from tests.fakes.nim import FakeNim
from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import RESULT as COLLECTION_RESULT
from tests.test_collection_e2e import SPEC as COLLECTION_SPEC
from tests.test_training_e2e import TRAIN_RESULT, TRAINING

pytestmark = pytest.mark.e2e


def names(items: list[Any]) -> list[str]:
    return sorted(i.metadata.name if hasattr(i, "metadata") else i["metadata"]["name"] for i in items)


def test_operator_restart_mid_pipeline_converges_without_duplicates(
        kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kube.require_emulated()  # runs its own operators
    from kopf.testing import KopfRunner

    monkeypatch.setenv("DPO_PROBE_URL_TEMPLATE", "http://127.0.0.1:{port}")
    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    with FakeNemo() as nemo, FakeNim(models=["meta/llama-3.2-1b-instruct", "local"]) as nim:
        remote_spec = {
            "backend": "customizer", "dataset": {"collectionRef": {"name": "pairs"}},
            "model": {"name": "meta/llama-3.2-1b-instruct@v1.0.0+A100"},
            "customizer": {"entityStoreUrl": nemo.url, "datastoreUrl": nemo.url, "namespace": "team-a",
                           "pollIntervalSeconds": 1},
        }
        local_spec = {**TRAINING, "deployOnCompletion": {"replicas": 1, "port": nim.port}}

        # operator 1: starts the pipeline, then stops while the collection runs
        with KopfRunner(args, timeout=60):
            kube.create("DPOCollection", namespace, "pairs", COLLECTION_SPEC)
            kube.create("DPOTrainingJob", namespace, "local", local_spec)
            kube.create("DPOTrainingJob", namespace, "remote", remote_spec)
            wait_for(lambda: kube.job(namespace, "pairs-collect"), what="collection job")
            kube.wait_phase("DPOTrainingJob", namespace, "remote", "Pending")

        # while no operator runs: the collection finishes, and (as if operator 1 had died right after creating it,
        # before recording it) the remote job already exists
        kube.finish_job(namespace, "pairs-collect", succeeded=True, message=json.dumps(COLLECTION_RESULT))
        remote = kube.get("DPOTrainingJob", namespace, "remote")
        nemo.repos[f"team-a/{namespace}-remote"] = {"training/training_file.jsonl": b'{"prompt": "p"}\n'}
        nemo.entity_namespaces.add("team-a")
        nemo.datasets[f"team-a/{namespace}-remote"] = {"files_url": f"hf://datasets/team-a/{namespace}-remote"}
        with NemoApi(nemo.url) as api:
            orphan = nemo_api.create_job(api, nemo_api.job_body(
                remote_spec["model"]["name"], "team-a", f"{namespace}-remote", {"finetuning_type": "lora"},
                "team-a/remote", remote["metadata"]["uid"], "x"))

        # operator 2: picks everything up
        with KopfRunner(args, timeout=60):
            wait_for(lambda: kube.job(namespace, "local-train"), what="training job")
            upload = wait_for(lambda: kube.job(namespace, "remote-upload"), what="upload job")
            assert upload is not None
            kube.finish_job(namespace, "remote-upload", succeeded=True,
                            message=json.dumps({"filesUrl": f"hf://datasets/team-a/{namespace}-remote"}))
            kube.finish_job(namespace, "local-train", succeeded=True, message=json.dumps(TRAIN_RESULT))
            wait_for(lambda: kube.deployment(namespace, "local"), what="NIM Deployment")
            kube.roll_out(namespace, "local")
            kube.wait_phase("DPOCollection", namespace, "pairs", "Succeeded")
            kube.wait_phase("DPOTrainingJob", namespace, "local", "Succeeded")
            done = kube.wait_phase("DPOTrainingJob", namespace, "remote", "Succeeded", timeout=30)
            kube.wait_phase("ModelDeployment", namespace, "local", "Ready", timeout=30)

    assert done["status"]["remoteJobId"] == orphan["id"]  # adopted, not created again
    assert list(nemo.jobs) == [orphan["id"]]
    assert names(kube.jobs(namespace)) == ["local-train", "pairs-collect", "remote-upload"]
    assert names(kube.apps.list_namespaced_deployment(namespace).items) == ["local"]
    assert names(kube.custom.list_namespaced_custom_object("dpo.ai", "v1alpha1", namespace, "modeldeployments")["items"]) == ["local"]
