"""A DPOLoop with real pods: two LoRA rounds on the emulated cluster, the local executor running the collector, the
data check, the trainer and the evaluation as local processes and every ModelDeployment as the NIM stand-in
(``dpo-operator serve``, base model + adapter), on a tiny tic-tac-toe policy built here. Round 2 samples from the
policy round 1 promoted and continues its adapter, against the base model as DPO reference."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.kubehelpers import Kube

pytestmark = [pytest.mark.workload, pytest.mark.e2e, pytest.mark.timeout(600)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def pods_reach_services_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator and the local executor's pods run on this machine: both reach a NIM Service on localhost."""
    monkeypatch.setenv("DPO_PROBE_URL_TEMPLATE", "http://127.0.0.1:{port}")
    monkeypatch.setenv("DPO_WORKLOAD_ENDPOINT_URL_TEMPLATE", "http://127.0.0.1:{port}")


def loop_spec() -> dict[str, Any]:
    stand_in = {"readinessTimeoutSeconds": 180, "template": {"image": "local/dev-stand-in"}}
    return {
        "maxRounds": 2,
        "serving": {"name": "policy", "template": {"port": free_port(), "servedModelName": "policy", **stand_in},
                    "candidate": {"port": free_port(), **stand_in}},
        "collection": {"workflow": {"name": "tictactoe", "numExamples": 16}, "candidatesPerTurn": 4,
                       "llm": {"temperature": 1.0, "maxTokens": 3, "maxConcurrency": 4},
                       "output": {"claimName": "data", "path": "/datasets"}},
        "training": {"model": {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}},
                     "dataset": {"check": {"maxDuplicateShare": 1.0, "maxNearDuplicateShare": 1.0}},
                     "hyperparameters": {"finetuningType": "lora", "lora": {"rank": 4, "alpha": 8}, "epochs": 1,
                                         "batchSize": 8, "learningRate": 1e-3, "maxSeqLength": 256},
                     "local": {"gpusPerNode": 0, "precision": "fp32", "output": {"claimName": "data", "path": "/models"}}},
        # any measured difference passes (scores lie in [-2, 1]): the test is the loop's mechanics, not DPO's gain;
        # missing data (endpoint failures) still never passes
        "evaluation": {"workflow": {"name": "tictactoe", "numExamples": 28}, "maxExamples": 12,
                       "sampling": {"maxTokens": 3, "maxConcurrency": 4}, "bootstrapResamples": 200,
                       "gate": {"minImprovement": -10.0}, "template": {"image": "local/dev-stand-in"}},
        "adapterInit": "previous", "reference": "base",
    }


def test_two_real_lora_rounds_promote_and_chain(pods_reach_services_locally: None, kube: Kube, namespace: str,
                                           operator: None, tmp_path: Path) -> None:
    kube.require_emulated()  # runs a kubelet stand-in
    pytest.importorskip("transformers")
    from dpo_operator.embedded import demo_policy
    from dpo_operator.embedded.executor import LocalExecutor

    kube.claims(namespace, "models", "data")
    with LocalExecutor(kube.api, tmp_path, namespace, serve_deployments=True) as executor:
        demo_policy.build_base_policy(executor.pvc_dir("models") / "tiny", steps=120)
        kube.create("DPOLoop", namespace, "ttt", loop_spec())
        done = kube.wait_phase("DPOLoop", namespace, "ttt", "Succeeded", timeout=540)
        data = executor.pvc_dir("data")
    status = done["status"]
    assert status["stopReason"] == "MaxRounds" and status["servingModel"] == "DPOTrainingJob ttt-r2-train"
    first, second = status["rounds"]
    for number, lineage in ((1, first), (2, second)):
        assert lineage["promoted"] is True and lineage["verdict"] == "Passed", lineage
        assert lineage["pairs"] > 0 and lineage["finalLoss"] is not None
        assert lineage["trainedModel"] == f"pvc://data/models/ttt-r{number}-train/final"
        training_file = data / f"datasets/ttt-r{number}-collect/training/training_file.jsonl"
        assert lineage["datasetDigest"] == hashlib.sha256(training_file.read_bytes()).hexdigest()
        assert lineage["datasetLocation"] == f"pvc://data/datasets/ttt-r{number}-collect"
        assert lineage["candidateMean"] is not None and lineage["difference"]["pairs"] == 12
    assert first["sampledFrom"] == "tiny" and second["sampledFrom"] == "DPOTrainingJob ttt-r1-train"
    assert second["startingAdapter"] == "pvc://data/models/ttt-r1-train/final"
    assert second["referenceModel"] == "base model tiny"
    round2 = kube.get("DPOTrainingJob", namespace, "ttt-r2-train")["spec"]
    assert round2["model"]["adapter"] == {"claimName": "data", "path": "/models/ttt-r1-train/final"}
    assert round2["referenceModel"] == {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}}
    serving = kube.get("ModelDeployment", namespace, "policy")
    assert serving["spec"]["model"] == {"trainingJobRef": {"name": "ttt-r2-train"}}
    assert (data / "models/ttt-r2-train/final/adapter_model.safetensors").exists()
