"""DPOTrainingJob (local backend) against the (emulated) Kubernetes API with the real operator running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import RESULT as COLLECTION_RESULT
from tests.test_collection_e2e import SPEC as COLLECTION_SPEC

pytestmark = pytest.mark.e2e

# these tests play the Job controller by hand for the training Job; the data check runs for real in
# tests/test_datacheck_e2e.py and in the tests that run pods through the local executor
NO_CHECK = {"check": {"enabled": False}}
TRAINING = {
    "dataset": {"collectionRef": {"name": "pairs"}, **NO_CHECK},
    "model": {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}},
    "hyperparameters": {"epochs": 1, "batchSize": 4, "learningRate": 0.001, "finetuningType": "all_weights"},
    "local": {"gpusPerNode": 1, "output": {"claimName": "dpo-data", "path": "/models"}},
    "deployOnCompletion": {"replicas": 1},
}
TRAIN_RESULT = {"outputModel": "/mnt/pvc/dpo-data/models/dpo/final", "steps": 6, "trainLoss": 0.42,
                "rewardAccuracy": 0.9, "valLoss": 0.5, "resumedFromStep": 4}


def test_training_waits_for_its_collection_then_trains_and_deploys(kube: Kube, namespace: str, operator: None) -> None:
    kube.create("DPOCollection", namespace, "pairs", COLLECTION_SPEC)
    kube.create("DPOTrainingJob", namespace, "dpo", TRAINING)
    waiting = kube.wait_phase("DPOTrainingJob", namespace, "dpo", "Pending")
    assert {c["type"]: c for c in waiting["status"]["conditions"]}["Progressing"]["reason"] == "WaitingForDataset"
    assert kube.job(namespace, "dpo-train") is None

    wait_for(lambda: kube.job(namespace, "pairs-collect"), what="collection job")
    kube.finish_job(namespace, "pairs-collect", succeeded=True, message=json.dumps(COLLECTION_RESULT))
    job = wait_for(lambda: kube.job(namespace, "dpo-train"), what="training job")
    pod = job["spec"]["template"]["spec"]
    trainer = pod["containers"][0]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "1"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"dpo-data", "models"}
    command = trainer["command"]
    assert command[:2] == ["dpo-operator", "train"]
    assert "--dataset-dir=/mnt/pvc/dpo-data/datasets/ttt" in command  # one argument each: no shell, no splitting
    assert "--model=/mnt/pvc/models/tiny" in command
    assert "--output-dir=/mnt/pvc/dpo-data/models/dpo" in command

    kube.finish_job(namespace, "dpo-train", succeeded=True, message=json.dumps(TRAIN_RESULT))
    done = kube.wait_phase("DPOTrainingJob", namespace, "dpo", "Succeeded")
    status = done["status"]
    assert status["outputModel"] == "pvc://dpo-data/models/dpo/final"
    assert status["progress"]["percentageDone"] == 100.0 and status["progress"]["trainLoss"] == 0.42
    assert status["progress"]["resumedFromStep"] == 4  # the pod was restarted and resumed from its checkpoint
    assert status["datasetLocation"] == "pvc://dpo-data/datasets/ttt"
    deployment = kube.get("ModelDeployment", namespace, status["deploymentName"])
    assert deployment["spec"]["model"] == {"trainingJobRef": {"name": "dpo"}}
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]


def test_multi_node_uses_an_indexed_job_and_headless_service(kube: Kube, namespace: str, operator: None) -> None:
    spec = {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}, **NO_CHECK},
            "hyperparameters": {**TRAINING["hyperparameters"], "batchSize": 16},
            "local": {**TRAINING["local"], "numNodes": 2, "gpusPerNode": 8,
                      "wandb": {"apiKeySecretRef": {"name": "wandb", "key": "key"}, "project": "dpo"}}}
    kube.usable_secret(namespace, "wandb", {"key": "wandb-test-key"}, allowed_urls="https://api.wandb.ai")
    kube.create("DPOTrainingJob", namespace, "big", spec)
    job = wait_for(lambda: kube.job(namespace, "big-train"), what="training job")
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 2, 2)
    assert job["spec"]["template"]["spec"]["subdomain"] == "big-train"
    service = kube.to_dict(kube.core.read_namespaced_service("big-train", namespace))
    assert service["spec"]["clusterIP"] == "None"
    trainer = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in trainer["env"]}
    # torchrun's c10d rendezvous, hosted by index 0's pod, one id per resource
    assert env["PET_RDZV_ENDPOINT"]["value"] == "big-train-0.big-train:29500"
    assert env["PET_RDZV_ID"]["value"] == job["metadata"]["ownerReferences"][0]["uid"]
    assert env["WANDB_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "wandb", "key": "key"}}  # never the value
    assert env["WANDB_PROJECT"]["value"] == "dpo" and env["WANDB_RUN_ID"]["value"] == job["metadata"]["ownerReferences"][0]["uid"]
    # one dead rank restarts every rank from the newest checkpoint instead of leaving the others in a collective
    assert trainer["command"][:6] == ["torchrun", "--nnodes=2", "--nproc-per-node=8", "--rdzv-backend=c10d",
                                      "--max-restarts=3", "--shutdown-timeout=290"]
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 300  # time to save on SIGTERM
    assert env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"  # what $JOB_COMPLETION_INDEX is made of
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "8"


@pytest.mark.parametrize("spec, reason, text", [
    ({**TRAINING, "local": {"gpusPerNode": 1}}, "InvalidSpec", "local.output is required"),
    ({**TRAINING, "hyperparameters": {"dpo": {"preferenceLossWeight": 0, "sftLossWeight": 0}}},
     "InvalidSpec", "the loss would be identically zero"),
    ({**TRAINING, "local": {**TRAINING["local"], "numNodes": 2, "gpusPerNode": 4}},
     "InvalidSpec", "batchSize (4) is smaller than the number of training processes (8"),
    ({**TRAINING, "local": {**TRAINING["local"], "precision": "fp16", "strategy": "fsdp"}},
     "InvalidSpec", "fp16 is not supported with local.strategy fsdp"),
])
def test_unusable_specs_fail_with_a_reason(kube: Kube, namespace: str, operator: None, spec: dict, reason: str,
                                           text: str) -> None:
    kube.create("DPOTrainingJob", namespace, "bad", {k: v for k, v in spec.items() if v is not None})
    failed = kube.wait_phase("DPOTrainingJob", namespace, "bad", "Failed")
    condition = {c["type"]: c for c in failed["status"]["conditions"]}["Failed"]
    assert condition["reason"] == reason and text in condition["message"]
    assert kube.jobs(namespace) == []


def test_failed_collection_fails_the_training(kube: Kube, namespace: str, operator: None) -> None:
    kube.create("DPOCollection", namespace, "pairs", COLLECTION_SPEC)
    kube.create("DPOTrainingJob", namespace, "dpo", TRAINING)
    wait_for(lambda: kube.job(namespace, "pairs-collect"), what="collection job")
    kube.finish_job(namespace, "pairs-collect", succeeded=False, message=json.dumps({"error": "no pairs"}))
    failed = kube.wait_phase("DPOTrainingJob", namespace, "dpo", "Failed")
    assert failed["status"]["conditions"][[c["type"] for c in failed["status"]["conditions"]].index("Failed")]["reason"] == "DatasetFailed"


@pytest.mark.workload
def test_real_trainer_runs_in_a_local_pod(kube: Kube, namespace: str, operator: None, tmp_path: Path) -> None:
    kube.require_emulated()  # runs its own operator or kubelet stand-in
    pytest.importorskip("transformers")
    from dpo_operator.embedded.executor import LocalExecutor
    from tests.datasets import toy_dataset
    from tests.tinymodel import build_tiny_model

    kube.claims(namespace, "models", "dpo-data")
    executor = LocalExecutor(kube.api, tmp_path, namespace)
    build_tiny_model(executor.pvc_dir("models") / "tiny")
    toy_dataset(executor.pvc_dir("dpo-data") / "ds")
    spec = {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}},
            "local": {"gpusPerNode": 0, "precision": "fp32", "output": {"claimName": "dpo-data", "path": "/models"}}}
    spec.pop("deployOnCompletion")
    with executor:
        kube.create("DPOTrainingJob", namespace, "real", spec)
        done = kube.wait_phase("DPOTrainingJob", namespace, "real", "Succeeded", timeout=120)
    assert done["status"]["progress"]["stepsCompleted"] == 6
    final = executor.pvc_dir("dpo-data") / "models/real/final"
    assert (final / "config.json").exists() and (final / "model.safetensors").exists()
    assert len((executor.pvc_dir("dpo-data") / "models/real/metrics.jsonl").read_text().splitlines()) == 6


@pytest.mark.workload
def test_real_trainer_reads_a_hub_dataset(kube: Kube, namespace: str, operator: None, tmp_path: Path) -> None:
    """A dataset in a Hub-compatible repo (e.g. a collection written to NeMo Datastore): each trainer pod downloads
    it with the token from its Secret; no dataset volume is mounted."""
    kube.require_emulated()  # runs a kubelet stand-in
    pytest.importorskip("transformers")
    from dpo_operator.embedded.executor import LocalExecutor
    from tests.fakes.hub import FakeHub
    from tests.datasets import toy_dataset
    from tests.tinymodel import build_tiny_model

    kube.claims(namespace, "models", "dpo-data")
    executor = LocalExecutor(kube.api, tmp_path, namespace)
    build_tiny_model(executor.pvc_dir("models") / "tiny")
    source = toy_dataset(tmp_path / "source")
    kube.usable_secret(namespace, "hub", {"token": "hf-1"})
    with FakeHub(token="hf-1") as hub:
        kube.allow_urls(namespace, "hub", hub.endpoint)
        hub.repos["dpo/pairs"] = {name: (source / name).read_bytes()
                                  for name in ("training/training_file.jsonl", "validation/validation_file.jsonl")}
        spec = {**TRAINING, "dataset": {"location": {"hub": {"endpoint": hub.endpoint, "repoId": "dpo/pairs",
                                                             "tokenSecretRef": {"name": "hub", "key": "token"}}}},
                "local": {"gpusPerNode": 0, "precision": "fp32", "output": {"claimName": "dpo-data", "path": "/models"}}}
        spec.pop("deployOnCompletion")
        with executor:
            kube.create("DPOTrainingJob", namespace, "fromhub", spec)
            done = kube.wait_phase("DPOTrainingJob", namespace, "fromhub", "Succeeded", timeout=120)
    job = kube.job(namespace, "fromhub-train")
    trainer = job["spec"]["template"]["spec"]["containers"][0]
    assert "--dataset-hub=dpo/pairs" in trainer["command"]
    assert {"name": "DATASET_HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}}} in trainer["env"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in job["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"dpo-data", "models"}
    assert done["status"]["datasetLocation"] == f"{hub.endpoint}/datasets/dpo/pairs@main"
    assert done["status"]["progress"]["stepsCompleted"] == 6
