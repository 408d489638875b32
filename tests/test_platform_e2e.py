"""DPOTrainingJob with backend customizer on the NeMo platform (v2): the real operator, the emulated cluster, a local
upload pod and the strict platform fake (every request and answer checked against NVIDIA's definitions)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from dpo_operator.embedded.executor import LocalExecutor
from dpo_operator.nemo.platform.customization import job_name
from tests.datasets import toy_dataset
from tests.fakes.platform_training import TrainingPlatform, progress
from tests.kubehelpers import Kube, conditions_of, wait_for

pytestmark = pytest.mark.e2e
API_KEY = "platform-key-789"
BASE = "default/llama-3.2-1b-instruct"


@pytest.fixture()
def platform() -> Iterator[TrainingPlatform]:
    with TrainingPlatform(api_key=API_KEY, workspaces=("default", "team-a")) as fake:
        fake.add_model(BASE)
        yield fake


@pytest.fixture()
def executor(kube: Kube, namespace: str, tmp_path: Path, platform: TrainingPlatform) -> Iterator[LocalExecutor]:
    kube.require_emulated()  # the upload pod runs on the local kubelet stand-in
    kube.claims(namespace, "dpo-data")
    local = LocalExecutor(kube.api, tmp_path, namespace)
    toy_dataset(local.pvc_dir("dpo-data") / "ds")
    kube.usable_secret(namespace, "platform", {"api-key": API_KEY}, allowed_urls=platform.url)
    with local:
        yield local


def spec_for(platform: TrainingPlatform, **customizer: Any) -> dict[str, Any]:
    return {
        "backend": "customizer",
        "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}},
        "model": {"name": BASE},
        "hyperparameters": {"finetuningType": "all_weights", "epochs": 2, "batchSize": 16, "learningRate": 0.0001,
                            "dpo": {"refPolicyKlPenalty": 0.05, "sftLossWeight": 0.1}},
        "customizer": {"apiVersion": "v2", "platformUrl": platform.url, "workspace": "team-a",
                       "apiKeySecretRef": {"name": "platform", "key": "api-key"}, "pollIntervalSeconds": 1,
                       **customizer},
        "job": {"backoffLimit": 0},
    }


def reason(obj: dict[str, Any], condition: str) -> str:
    return conditions_of(obj)[condition]["reason"]


def the_job(platform: TrainingPlatform) -> dict[str, Any]:
    assert len(platform.jobs) == 1
    return next(iter(platform.jobs.values()))


def test_uploads_trains_and_records_the_output_model(kube: Kube, namespace: str, operator: None,
                                                     platform: TrainingPlatform, executor: LocalExecutor) -> None:
    platform.fail["create-job"] = [503]  # a transient failure is retried
    spec = spec_for(platform)
    spec["hyperparameters"].update(seed=3, weightDecay=0.01, warmupSteps=5, maxGradNorm=0.5, lrScheduler="cosine",
                                   maxSeqLength=2048, validateEverySteps=20)
    kube.create("DPOTrainingJob", namespace, "remote", spec)
    running = kube.wait_status("DPOTrainingJob", namespace, "remote", lambda s: s.get("phase") == "Running"
                               and (s.get("progress") or {}).get("trainLoss") is not None, what="Running with progress")
    assert running["status"]["progress"]["trainLoss"] == 0.6 and running["status"]["progress"]["percentageDone"] == 50
    done = kube.wait_phase("DPOTrainingJob", namespace, "remote", "Succeeded", timeout=40)

    fileset = ("team-a", f"{namespace}-remote")
    assert platform.filesets[fileset]["purpose"] == "dataset"
    rows = [json.loads(line) for line in platform.files[fileset]["training.jsonl"].splitlines()]
    assert len(rows) == 24 and rows[0] == {"prompt": "Q0: is 0 fine?", "chosen": "yes, fine", "rejected": "no!"}
    assert len(platform.files[fileset]["validation.jsonl"].splitlines()) == 8
    job = the_job(platform)
    assert job["source"] == "rl" and job["name"] == job_name(namespace, "remote", done["metadata"]["uid"])
    assert job["spec"]["model"] == BASE and job["spec"]["dataset"] == f"team-a/{namespace}-remote"
    assert job["spec"]["training"] == {
        "type": "dpo", "learning_rate": 0.0001, "weight_decay": 0.01, "warmup_steps": 5, "epochs": 2,
        "batch_size": 16, "max_seq_length": 2048, "seed": 3, "max_grad_norm": 0.5,
        "optimizer_type": "adamw_with_cosine_annealing", "min_learning_rate": 0.0, "val_check_interval": 20.0,
        "ref_policy_kl_penalty": 0.05, "preference_loss_weight": 1.0, "preference_average_log_probs": False,
        "sft_loss_weight": 0.1, "sft_average_log_probs": False}
    assert job["custom_fields"] == {"dpo_operator_uid": done["metadata"]["uid"]}
    status = done["status"]
    assert status["customizerApiVersion"] == "v2"
    assert status["remoteJobId"] == f"team-a/{job['name']}" and status["outputModel"] == "team-a/remote"
    model = platform.models[("team-a", "remote")]  # registered by the job, servable on the platform
    assert model["finetuning_type"] == "all_weights" and model["base_model"] == BASE
    assert status["progress"] == {"phase": "completed", "percentageDone": 100, "stepsCompleted": 10, "epoch": 1,
                                  "trainLoss": 0.42, "valLoss": 0.45}
    assert status["datasetLocation"] == f"team-a/{namespace}-remote" and status["jobName"] == "remote-upload"
    assert reason(done, "Succeeded") == "Trained" and conditions_of(done)["DataChecked"]["status"] == "True"
    assert platform.calls_to("create-job") == 2
    assert sorted(platform.files[fileset]) == ["data-check/datacard.json", "data-check/lengths.png", "metrics.json",
                                               "training.jsonl", "validation.jsonl"]
    assert platform.calls_to("upload-file") == 5  # each once


def test_restart_adopts_the_job_instead_of_creating_another(
        kube: Kube, namespace: str, platform: TrainingPlatform, executor: LocalExecutor,
        request: pytest.FixtureRequest) -> None:
    """A job created just before the operator went away (its answer lost) is found by its derived name."""
    platform.script = [{"status": "active", "status_details": progress(3, 0, 30, train=[0.68])}]
    created = kube.create("DPOTrainingJob", namespace, "adopted", spec_for(platform))
    name = job_name(namespace, "adopted", created["metadata"]["uid"])
    platform.add_model("team-a/existing-output")
    platform.jobs[("team-a", name)] = {
        "id": "job-earlier", "attempt_id": "1", "name": name, "workspace": "team-a", "source": "rl",
        "description": "created before the restart", "status": "active", "status_details": {},
        "error_details": {}, "custom_fields": {"dpo_operator_uid": created["metadata"]["uid"]},
        "spec": {"model": BASE, "dataset": f"team-a/{namespace}-adopted",
                 "output": {"name": "adopted", "type": "model", "fileset": "adopted"}},
        "platform_spec": {"steps": [{"name": "training", "executor": {"provider": "gpu",
                                                                      "container": {"image": "x"}}}]},
        "fileset": f"team-a/{name}", "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00"}
    platform.scripts[("team-a", name)] = list(platform.script)
    request.getfixturevalue("operator")
    running = kube.wait_status("DPOTrainingJob", namespace, "adopted", lambda s: s.get("phase") == "Running"
                               and (s.get("progress") or {}).get("trainLoss") is not None, what="Running")
    assert running["status"]["remoteJobId"] == f"team-a/{name}"
    assert platform.calls_to("create-job") == 0 and len(platform.jobs) == 1


def test_a_platform_error_fails_for_good_with_its_message(
        kube: Kube, namespace: str, operator: None, platform: TrainingPlatform, executor: LocalExecutor) -> None:
    spec = spec_for(platform)
    spec["model"] = {"name": "default/not-registered"}
    kube.create("DPOTrainingJob", namespace, "unknown-model", spec)
    failed = kube.wait_phase("DPOTrainingJob", namespace, "unknown-model", "Failed", timeout=40)
    assert reason(failed, "Failed") == "RemoteApiError"
    assert "Model entity 'default/not-registered' not found" in failed["status"]["message"]
    assert platform.jobs == {} and platform.calls_to("create-job") == 1  # a 422 is not retried


def test_a_failed_job_fails_the_resource_with_its_error_and_log(
        kube: Kube, namespace: str, operator: None, platform: TrainingPlatform, executor: LocalExecutor) -> None:
    platform.logs = ["loading model", "torch.OutOfMemoryError: CUDA out of memory"]
    platform.script = [{"status": "active", "status_details": progress(2, 0, 20, train=[0.69])},
                       {"status": "error", "status_details": {"phase": "training"},
                        "error_details": {"message": "training step failed"}}]
    kube.create("DPOTrainingJob", namespace, "oom", spec_for(platform))
    failed = kube.wait_phase("DPOTrainingJob", namespace, "oom", "Failed", timeout=40)
    assert reason(failed, "Failed") == "CustomizerJobFailed"
    message = failed["status"]["message"]
    assert "platform job error: training step failed" in message and "CUDA out of memory" in message
    assert failed["status"]["progress"]["trainLoss"] == 0.69  # kept from the last report that had it


def test_poll_failures_back_off_and_are_bounded(
        kube: Kube, namespace: str, operator: None, platform: TrainingPlatform, executor: LocalExecutor) -> None:
    platform.script = [{"status": "active", "status_details": progress(1, 0, 10)}]
    kube.create("DPOTrainingJob", namespace, "flaky", spec_for(platform, maxConsecutivePollFailures=3))
    kube.wait_phase("DPOTrainingJob", namespace, "flaky", "Running", timeout=40)
    platform.fail["job-status"] = [502]
    kube.wait_status("DPOTrainingJob", namespace, "flaky", lambda s: s.get("consecutivePollFailures") == 1,
                     what="a counted poll failure")
    kube.wait_status("DPOTrainingJob", namespace, "flaky", lambda s: s and "consecutivePollFailures" not in s,
                     what="recovery after a successful poll")
    platform.fail["job-status"] = [503] * 10
    failed = kube.wait_phase("DPOTrainingJob", namespace, "flaky", "Failed", timeout=30)
    assert reason(failed, "Failed") == "PollFailed" and "3 consecutive status polls" in failed["status"]["message"]


def test_delete_cancels_the_platform_job(kube: Kube, namespace: str, operator: None, platform: TrainingPlatform,
                                         executor: LocalExecutor) -> None:
    platform.script = [{"status": "active", "status_details": progress(1, 0, 5)}]
    kube.create("DPOTrainingJob", namespace, "doomed", spec_for(platform))
    running = kube.wait_phase("DPOTrainingJob", namespace, "doomed", "Running", timeout=40)
    assert running["metadata"]["finalizers"] == ["dpo.ai/finalizer"]
    kube.delete("DPOTrainingJob", namespace, "doomed")
    wait_for(lambda: not kube.exists("DPOTrainingJob", namespace, "doomed"), what="deletion")
    assert the_job(platform)["status"] == "cancelled" and platform.calls_to("cancel-job") == 1


def test_lora_is_refused_by_the_operator_when_the_platform_says_it_is_v2(
        kube: Kube, namespace: str, operator: None, platform: TrainingPlatform, executor: LocalExecutor) -> None:
    """auto with both kinds of URL: admission cannot tell, the platform's answer decides, and LoRA is refused."""
    spec = spec_for(platform, apiVersion="auto", entityStoreUrl="http://entity-store.invalid",
                    datastoreUrl="http://datastore.invalid")
    del spec["hyperparameters"]["finetuningType"]  # the default: lora
    kube.create("DPOTrainingJob", namespace, "lora", spec)
    invalid = kube.wait_phase("DPOTrainingJob", namespace, "lora", "Failed", timeout=40)
    assert reason(invalid, "Failed") == "InvalidSpec"
    assert "PEFT is not supported with DPO training on the NeMo platform v2; use finetuningType: all_weights (or " \
           "the v1 API)" in invalid["status"]["message"]
    assert platform.calls_to("customization-health") >= 1 and platform.filesets == {} and platform.jobs == {}
    assert kube.job(namespace, "lora-upload") is None


def test_the_key_never_reaches_status_events_children_or_the_log(kube: Kube, namespace: str,
                                                                 platform: TrainingPlatform,
                                                                 executor: LocalExecutor) -> None:
    from kopf.testing import KopfRunner

    platform.fail["create-job"] = [400] * 20  # refused every time; its answer goes into the message: it must be clean
    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        kube.create("DPOTrainingJob", namespace, "hygiene", spec_for(platform))
        failed = kube.wait_phase("DPOTrainingJob", namespace, "hygiene", "Failed", timeout=40)
    assert reason(failed, "Failed") == "RemoteApiError" and "injected failure 400" in failed["status"]["message"]
    upload = kube.job(namespace, "hygiene-upload")
    events = kubernetes.client.EventsV1Api(kube.api).list_namespaced_event(namespace)
    for text in (json.dumps(failed), json.dumps(upload), json.dumps(kube.to_dict(events)), runner.output):
        assert API_KEY not in text
    env = upload["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "NEMO_API_KEY", "valueFrom": {"secretKeyRef": {"name": "platform", "key": "api-key"}}} in env
    # sent to the platform, on every request
    assert platform.calls
    assert runner.exception is None or isinstance(runner.exception, SystemExit), runner.output
