"""Golden manifests: every child object the operator creates, built by the pure builders in
``dpo_operator.render`` and compared with tests/golden/<name>.json. Neither the operator nor a cluster is needed.

After an intended change, regenerate and review the diff: ``DPO_REGENERATE_GOLDEN=1 pytest tests/test_render_golden.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.api.common import HubLocation, PvcLocation, StorageLocation
from dpo_operator.api.deployment import ModelDeploymentSpec
from dpo_operator.api.training import DPOTrainingJobSpec
from dpo_operator.config import OperatorConfig
from dpo_operator.render import collection, deployment, nemo, nim, training, upload
from dpo_operator.serving.model import ServedModel

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("DPO_REGENERATE_GOLDEN") == "1"
CONFIG = OperatorConfig()  # the defaults, never the environment
DATASET = StorageLocation(pvc=PvcLocation(claim_name="dpo-data", path="/datasets/ttt"))
HUB = StorageLocation(hub=HubLocation(endpoint="http://datastore/v1/hf", repo_id="dpo/pairs",
                                      token_secret_ref={"name": "hf", "key": "token"}))

COLLECTION = {
    "workflow": {"name": "tictactoe", "numExamples": 8},
    "llm": {"baseUrl": "http://nim.example:8000/v1", "model": "meta/llama-3.2-1b-instruct",
            "apiKeySecretRef": {"name": "nim-key", "key": "api-key"}},
    "output": {"pvc": {"claimName": "dpo-data", "path": "/datasets/ttt"}},
    "template": {"resources": {"limits": {"nvidia.com/gpu": 1}}, "nodeSelector": {"nvidia.com/gpu.present": "true"}},
    "job": {"activeDeadlineSeconds": 3600},
}
TRAINING = {
    "dataset": {"collectionRef": {"name": "pairs"}},
    "model": {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}},
    "hyperparameters": {"epochs": 1, "batchSize": 16, "learningRate": 0.001, "finetuningType": "all_weights"},
    "local": {"gpusPerNode": 1, "output": {"claimName": "dpo-data", "path": "/models"}},
    "deployOnCompletion": {"replicas": 1},
}
MULTI_NODE = {**TRAINING, "local": {"numNodes": 2, "gpusPerNode": 4, "output": {"claimName": "dpo-data", "path": "/m"},
                                    "wandb": {"project": "dpo", "apiKeySecretRef": {"name": "wandb", "key": "key"}}},
              "job": {"backoffLimit": 0, "ttlSecondsAfterFinished": 600}}
CUSTOMIZER = {
    "backend": "customizer",
    "dataset": {"collectionRef": {"name": "pairs"}},
    "model": {"name": "meta/llama-3.2-1b-instruct"},
    "hyperparameters": {"epochs": 1, "batchSize": 16, "learningRate": 0.0001, "finetuningType": "lora"},
    "customizer": {"entityStoreUrl": "http://entity-store", "datastoreUrl": "http://datastore",
                   "namespace": "dpo", "apiKeySecretRef": {"name": "nemo", "key": "key"},
                   "hfTokenSecretRef": {"name": "hf", "key": "token"}},
    "job": {"activeDeadlineSeconds": 7200},
}
SERVE = {"model": {"trainingJobRef": {"name": "dpo"}}, "replicas": 2, "ngcApiKeySecretRef": {"name": "ngc", "key": "k"}}
SERVED = ServedModel(served_name="tictactoe", base_name="meta/llama", weights=PvcLocation(claim_name="models", path="/base"),
                     adapter=PvcLocation(claim_name="dpo-data", path="/models/dpo/final"))


def owner(kind: str, name: str = "ttt") -> dict[str, Any]:
    return {"apiVersion": "dpo.ai/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": "team-a", "uid": "0000-1111", "generation": 1}}


BUILDERS: dict[str, Callable[[], Any]] = {
    "collection-job": lambda: collection.job_manifest(
        owner("DPOCollection"), DPOCollectionSpec.model_validate(COLLECTION), CONFIG),
    "trainer-job": lambda: training.job_manifest(
        owner("DPOTrainingJob", "dpo"), DPOTrainingJobSpec.model_validate(TRAINING), DATASET, CONFIG),
    "trainer-job-multi-node": lambda: training.job_manifest(
        owner("DPOTrainingJob", "dpo"), DPOTrainingJobSpec.model_validate(MULTI_NODE), HUB, CONFIG),
    "data-check-job": lambda: training.check_job_manifest(
        owner("DPOTrainingJob", "dpo"), DPOTrainingJobSpec.model_validate(TRAINING), DATASET, CONFIG),
    "trainer-headless-service": lambda: training.headless_service(owner("DPOTrainingJob", "dpo"), "dpo-train"),
    "upload-job": lambda: upload.upload_manifest(
        owner("DPOTrainingJob", "dpo"), DPOTrainingJobSpec.model_validate(CUSTOMIZER), DATASET, "dpo/pairs", CONFIG),
    "upload-job-from-hub": lambda: upload.upload_manifest(
        owner("DPOTrainingJob", "dpo"), DPOTrainingJobSpec.model_validate(CUSTOMIZER), HUB, "dpo/pairs", CONFIG),
    "deploy-on-completion": lambda: deployment.deployment_for(
        owner("DPOTrainingJob", "dpo"), DPOTrainingJobSpec.model_validate(TRAINING)),
    "nim-deployment": lambda: nim.deployment_manifest(
        owner("ModelDeployment"), ModelDeploymentSpec.model_validate(SERVE), SERVED, CONFIG.nim_image, "rev1"),
    "nim-service": lambda: nim.service_manifest(owner("ModelDeployment"), ModelDeploymentSpec.model_validate(SERVE)),
    "nemo-deployment-config": lambda: nemo.config_body("dpo", "ttt-rev1", "dpo/tictactoe", "nvcr.io/nim/meta/llama",
                                                       "1.8", 1),
    "nemo-model-deployment": lambda: nemo.deployment_body("dpo", "ttt-rev1", "ttt-rev1", "dpo-operator ModelDeployment a/b"),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_output_matches_its_golden_manifest(name: str) -> None:
    built = json.loads(json.dumps(BUILDERS[name](), sort_keys=True))
    path = GOLDEN / f"{name}.json"
    if REGENERATE:
        path.write_text(json.dumps(built, indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"{path} is missing: regenerate with DPO_REGENERATE_GOLDEN=1"
    assert built == json.loads(path.read_text()), f"{name} differs from {path}: review, then regenerate"
