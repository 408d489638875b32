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
from dpo_operator.api.evaluation import DPOEvaluationSpec
from dpo_operator.api.loop import DPOLoopSpec
from dpo_operator.api.training import DPOTrainingJobSpec
from dpo_operator.config import OperatorConfig
from dpo_operator.evaluate.endpoints import Endpoint
from dpo_operator.evaluate.heldout import TrainingExamples
from dpo_operator.render import collection, deployment, evaluation, loop, nemo, nim, nimoperator, training, upload
from dpo_operator.serving.model import ServedModel

LOOP_SPEC = DPOLoopSpec.model_validate({
    "serving": {"name": "serving", "template": {"port": 8000}},
    "collection": {"workflow": {"name": "tictactoe", "numExamples": 8}, "llm": {"temperature": 0.8},
                   "output": {"claimName": "dpo-data", "path": "/loop"}},
    "training": {"model": {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}},
                 "hyperparameters": {"finetuningType": "lora", "learningRate": 0.0001},
                 "local": {"gpusPerNode": 1, "output": {"claimName": "dpo-data", "path": "/models"}}},
    "evaluation": {"workflow": {"name": "tictactoe", "numExamples": 40}, "gate": {"minImprovement": 0.0}},
    "reference": "base"})
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
EVALUATION = {
    "workflow": {"name": "tictactoe", "numExamples": 200},
    "candidate": {"modelDeploymentRef": {"name": "tictactoe-dpo"}},
    "baseline": {"baseUrl": "http://nim.example:8000/v1", "model": "meta/llama-3.2-1b-instruct",
                 "apiKeySecretRef": {"name": "nim-key", "key": "api-key"}},
    "heldOut": {"collectionRef": {"name": "pairs"}},
    "gate": {"minImprovement": 0.05, "confidence": 0.9},
    "output": {"claimName": "dpo-data", "path": "/models/dpo"},
}
NAT_EVALUATION = {
    "workflow": {"nat": {"configMapRef": {"name": "nat-workflow", "key": "config.yml"},
                         "datasetRef": {"name": "nat-workflow", "key": "data.json"}}},
    "candidate": {"baseUrl": "http://candidate:8000/v1", "model": "dpo"},
    "baseline": {"baseUrl": "http://base:8000/v1", "model": "base"},
    "nat": {"evaluator": "exact"},
}
SERVE = {"model": {"trainingJobRef": {"name": "dpo"}}, "replicas": 2, "ngcApiKeySecretRef": {"name": "ngc", "key": "k"}}
SERVED = ServedModel(served_name="tictactoe", base_name="meta/llama", weights=PvcLocation(claim_name="models", path="/base"),
                     adapter=PvcLocation(claim_name="dpo-data", path="/models/dpo/final"))

NIM_OPERATOR = {**SERVE, "backend": "nimOperator", "ngcApiKeySecretRef": {"name": "ngc", "key": "NGC_API_KEY"},
                "startupTimeoutSeconds": 5400,
                "template": {"imagePullSecrets": [{"name": "ngc-pull"}], "nodeSelector": {"nvidia.com/gpu.present": "true"}},
                "nimOperator": {"autoscaling": {"minReplicas": 1, "maxReplicas": 4, "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                                "averageUtilization": 80}}}]},
                                "peftRefreshIntervalSeconds": 60, "serviceMonitor": True}}
SERVED_SAME_CLAIM = ServedModel(served_name="tictactoe", base_name="meta/llama",
                                weights=PvcLocation(claim_name="dpo-data", path="/base"),
                                adapter=PvcLocation(claim_name="dpo-data", path="/models/dpo/final"))
HUB_MODEL = ServedModel(served_name="meta/llama-3.1-8b-instruct", base_name="meta/llama-3.1-8b-instruct",
                        remote_model="meta/llama-3.1-8b-instruct", nim_builtin=True)
NGC_CACHE = {**SERVE, "backend": "nimOperator", "ngcApiKeySecretRef": {"name": "ngc", "key": "NGC_API_KEY"},
             "nimOperator": {"cache": {"size": "100Gi", "storageClass": "fast", "profiles": ["tensorrt_llm-h100-bf16"]}}}
HF_CACHE = {**SERVE, "backend": "nimOperator", "ngcApiKeySecretRef": None, "nimOperator": {"cache": {
    "source": "huggingFace", "modelPuller": "nvcr.io/nim/nvidia/llm-nim:1.12", "volumeAccessMode": "ReadWriteMany",
    "hfTokenSecretRef": {"name": "hf", "key": "HF_TOKEN"}}}}
HF_MODEL = ServedModel(served_name="Qwen/Qwen2.5-1.5B", base_name="Qwen/Qwen2.5-1.5B", nim_builtin=True)


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
    # Kueue: the queue and priority labels on the one (Indexed) Job, a grace period from the template
    "trainer-job-queued": lambda: training.job_manifest(
        owner("DPOTrainingJob", "dpo"), DPOTrainingJobSpec.model_validate({
            **MULTI_NODE, "queueName": "team-a", "workloadPriorityClassName": "batch-low",
            "template": {"terminationGracePeriodSeconds": 900}}), HUB, CONFIG),
    # created suspended: the Job says the operator suspended it (the only suspension it ever lifts)
    "collection-job-suspended": lambda: collection.job_manifest(
        owner("DPOCollection"), DPOCollectionSpec.model_validate({**COLLECTION, "suspend": True}), CONFIG),
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
        owner("ModelDeployment"), ModelDeploymentSpec.model_validate(SERVE), SERVED, CONFIG, "rev1"),
    "nim-service": lambda: nim.service_manifest(owner("ModelDeployment"), ModelDeploymentSpec.model_validate(SERVE)),
    "nimoperator-nimservice-lora": lambda: nimoperator.nim_service(
        owner("ModelDeployment"), ModelDeploymentSpec.model_validate(NIM_OPERATOR), SERVED_SAME_CLAIM,
        CONFIG.nim_image, "rev1"),
    "nimoperator-nimservice-cached": lambda: nimoperator.nim_service(
        owner("ModelDeployment"), ModelDeploymentSpec.model_validate(NGC_CACHE), HUB_MODEL,
        "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.8.4", "rev1"),
    "nimoperator-nimcache-ngc": lambda: nimoperator.nim_cache(
        owner("ModelDeployment"), ModelDeploymentSpec.model_validate(NGC_CACHE), HUB_MODEL,
        "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.8.4"),
    "nimoperator-nimcache-hf": lambda: nimoperator.nim_cache(
        owner("ModelDeployment"), ModelDeploymentSpec.model_validate(HF_CACHE), HF_MODEL, CONFIG.nim_image),
    "nemo-deployment-config": lambda: nemo.config_body("dpo", "ttt-rev1", "dpo/tictactoe", "nvcr.io/nim/meta/llama",
                                                       "1.8", 1),
    "evaluation-job": lambda: evaluation.job_manifest(
        owner("DPOEvaluation", "gate"), DPOEvaluationSpec.model_validate(EVALUATION), CONFIG,
        Endpoint("http://tictactoe-dpo.team-a.svc:8000/v1", "tictactoe-dpo"),
        Endpoint("http://nim.example:8000/v1", "meta/llama-3.2-1b-instruct"),
        TrainingExamples("pairs", {"name": "tictactoe", "numExamples": 200}, 42)),
    "evaluation-job-nat": lambda: evaluation.job_manifest(
        owner("DPOEvaluation", "nat-gate"), DPOEvaluationSpec.model_validate(NAT_EVALUATION), CONFIG,
        Endpoint("http://candidate:8000/v1", "dpo"), Endpoint("http://base:8000/v1", "base"), None),
    "nemo-model-deployment": lambda: nemo.deployment_body("dpo", "ttt-rev1", "ttt-rev1", "dpo-operator ModelDeployment a/b"),
    "loop-serving-deployment": lambda: loop.serving_deployment(owner("DPOLoop", "lp"), LOOP_SPEC, loop.Policy()),
    "loop-collection": lambda: loop.collection(owner("DPOLoop", "lp"), LOOP_SPEC, 2, "http://serving.team-a.svc:8000/v1",
                                               "lp-r1-train"),
    "loop-training-job-lora": lambda: loop.training_job(
        owner("DPOLoop", "lp"), LOOP_SPEC, 2, loop.Policy("lp-r1-train", PvcLocation(
            claim_name="dpo-data", path="/models/lp-r1-train/final")), {"port": 8001, "replicas": 1}),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_output_matches_its_golden_manifest(name: str) -> None:
    built = json.loads(json.dumps(BUILDERS[name](), sort_keys=True))
    path = GOLDEN / f"{name}.json"
    if REGENERATE:
        path.write_text(json.dumps(built, indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"{path} is missing: regenerate with DPO_REGENERATE_GOLDEN=1"
    assert built == json.loads(path.read_text()), f"{name} differs from {path}: review, then regenerate"
