"""Kueue: the operator labels its Jobs for a LocalQueue, never un-suspends a Job Kueue holds, tells Queued (with
Kueue's reason), Admitted, Preempted and the user's Suspended apart, and a training run preempted by a higher
priority one resumes from its SIGTERM checkpoint and ends with the weights of an uninterrupted run. Kueue is played
by tests/kueue_standin.py on Kueue's real CRDs (v0.19.2), so every Workload is validated by Kueue's schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.kubehelpers import Kube, conditions_of, wait_for
from tests.kueue_standin import KueueStandIn
from tests.test_training_e2e import TRAIN_RESULT

pytestmark = pytest.mark.e2e

TRAINING = {
    "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}, "check": {"enabled": False}},
    "model": {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}},
    "hyperparameters": {"epochs": 1, "batchSize": 4, "learningRate": 0.001, "finetuningType": "all_weights"},
    "local": {"gpusPerNode": 0, "precision": "fp32", "output": {"claimName": "dpo-data", "path": "/models"}},
}


@pytest.fixture
def fast_queue_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator (started after this) looks at Jobs Kueue holds every second (Workloads are read, not watched)."""
    monkeypatch.setenv("DPO_QUEUE_CHECK_SECONDS", "1")


def queued(**extra: Any) -> dict[str, Any]:
    return {**TRAINING, "queueName": "team", **extra}


def status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return kube.get("DPOTrainingJob", namespace, name).get("status") or {}


def test_queued_jobs_wait_for_admission_and_a_suspend_deactivates_the_workload(
        kube: Kube, namespace: str, fast_queue_checks: None, operator: None) -> None:
    kube.require_emulated()  # plays Kueue
    with KueueStandIn(kube.api, namespace, pods=1) as kueue:
        kube.create("DPOTrainingJob", namespace, "first", queued())
        first = kube.wait_status("DPOTrainingJob", namespace, "first", lambda s: s.get("reason") == "Admitted")
        assert first["status"]["phase"] == "Pending" and f"ClusterQueue cq-{namespace}" in first["status"]["message"]
        assert first["status"]["queue"]["admitted"] and first["status"]["queue"]["name"] == "team"
        job = kube.job(namespace, "first-train")
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team" and not job["spec"]["suspend"]

        kube.create("DPOTrainingJob", namespace, "second", queued())  # the quota (one pod) is taken
        second = kube.wait_phase("DPOTrainingJob", namespace, "second", "Queued")
        second = kube.wait_status("DPOTrainingJob", namespace, "second",
                                  lambda s: "insufficient unused quota" in (s.get("message") or ""))
        assert second["status"]["reason"] == "WaitingForAdmission"
        assert second["status"]["queue"]["workload"] == kueue.workload_of("second-train")["metadata"]["name"]
        assert conditions_of(second)["Queued"]["status"] == "True"
        assert kube.job(namespace, "second-train")["spec"]["suspend"]  # Kueue's, left alone

        kube.patch_spec("DPOTrainingJob", namespace, "second", {"suspend": True})  # the user's suspend
        suspended = kube.wait_phase("DPOTrainingJob", namespace, "second", "Suspended")
        assert "is deactivated" in suspended["status"]["message"]
        assert kueue.workload_of("second-train")["spec"]["active"] is False
        assert kube.job(namespace, "second-train")["metadata"]["annotations"]["dpo.ai/suspended-by"] == "dpo-operator"

        kube.patch_spec("DPOTrainingJob", namespace, "second", {"suspend": False})
        kube.wait_phase("DPOTrainingJob", namespace, "second", "Queued")
        assert kueue.workload_of("second-train")["spec"]["active"] is True

        with pytest.raises(ApiException, match="queueName is immutable"):
            kube.patch_spec("DPOTrainingJob", namespace, "second", {"queueName": "other"})

        # created suspended: no Job yet (Kueue would admit a Job created suspended), then queued when resumed
        kube.create("DPOTrainingJob", namespace, "later", queued(suspend=True))
        later = kube.wait_phase("DPOTrainingJob", namespace, "later", "Suspended")
        assert "submitted to LocalQueue team when spec.suspend is false" in later["status"]["message"]
        assert kube.job(namespace, "later-train") is None
        kube.patch_spec("DPOTrainingJob", namespace, "later", {"suspend": False})
        kube.wait_phase("DPOTrainingJob", namespace, "later", "Queued")
        assert kube.job(namespace, "later-train")["spec"]["suspend"]

        kube.finish_job(namespace, "first-train", succeeded=True, message=json.dumps(TRAIN_RESULT))
        kube.wait_phase("DPOTrainingJob", namespace, "first", "Succeeded")
        admitted = kube.wait_status("DPOTrainingJob", namespace, "second", lambda s: s.get("reason") == "Admitted")
        assert conditions_of(admitted)["Queued"]["status"] == "False"
        assert not kube.job(namespace, "second-train")["spec"]["suspend"]  # Kueue un-suspended it


def test_a_job_kueue_holds_without_a_queue_label_is_never_unsuspended(
        kube: Kube, namespace: str, fast_queue_checks: None, operator: None) -> None:
    kube.require_emulated()
    with KueueStandIn(kube.api, namespace, pods=1, manage_all=True) as kueue:  # manageJobsWithoutQueueName
        kueue.admitting.clear()
        kube.create("DPOTrainingJob", namespace, "held", TRAINING)
        held = kube.wait_status("DPOTrainingJob", namespace, "held",
                                lambda s: s.get("phase") == "Queued" and (s.get("queue") or {}).get("workload"))
        assert "Kueue manages every Job" in held["status"]["message"]
        job = kube.job(namespace, "held-train")
        assert job["spec"]["suspend"] and "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
        # the operator reconciled it (status written from the Workload) and left Kueue's suspend as it was
        assert "dpo.ai/suspended-by" not in (job["metadata"].get("annotations") or {})
        kueue.admitting.set()
        kube.wait_status("DPOTrainingJob", namespace, "held", lambda s: s.get("reason") == "Admitted")
        assert not kube.job(namespace, "held-train")["spec"]["suspend"]


@pytest.mark.workload
@pytest.mark.timeout(400)
def test_a_preempted_training_resumes_from_its_sigterm_checkpoint_with_the_uninterrupted_weights(
        kube: Kube, namespace: str, fast_queue_checks: None, operator: None, tmp_path: Path) -> None:
    kube.require_emulated()  # plays Kueue and the kubelet
    pytest.importorskip("transformers")
    from dpo_operator.embedded.executor import LocalExecutor
    from tests.datasets import toy_dataset
    from tests.test_trainer_distributed import assert_same_weights, python, train_cli
    from tests.tinymodel import build_tiny_model

    kube.claims(namespace, "models", "dpo-data")
    marker = tmp_path / "hold"  # the first trainer holds after step 2 until its SIGTERM: preempted mid-run
    harness = [sys.executable, str(Path(__file__).parent / "preempt_harness.py"), "hold", "2", str(marker)]
    executor = LocalExecutor(kube.api, tmp_path, namespace, python_entry=harness)
    build_tiny_model(executor.pvc_dir("models") / "tiny")
    toy_dataset(executor.pvc_dir("dpo-data") / "ds")
    low = queued(workloadPriorityClassName="low", template={"terminationGracePeriodSeconds": 60})
    with executor, KueueStandIn(kube.api, namespace, pods=1, priorities={"low": 10, "high": 1000}):
        kube.create("DPOTrainingJob", namespace, "low", low)
        wait_for(lambda: (tmp_path / "hold.holding").exists(), timeout=120, what="the trainer past step 2")
        running = status(kube, namespace, "low")
        assert running["phase"] == "Running" and running["queue"]["admitted"]
        kube.create("DPOTrainingJob", namespace, "high", queued(workloadPriorityClassName="high"))
        preempted = kube.wait_status("DPOTrainingJob", namespace, "low", lambda s: s.get("reason") == "Preempted",
                                     timeout=60)
        assert preempted["status"]["phase"] == "Queued" and "resumes from its newest checkpoint" in \
            preempted["status"]["message"]
        kube.wait_phase("DPOTrainingJob", namespace, "high", "Succeeded", timeout=120)
        done = kube.wait_phase("DPOTrainingJob", namespace, "low", "Succeeded", timeout=120)
    assert done["status"]["queue"]["preemptions"] == 1
    # SIGTERM came while step 3 ran (the ranks agree one step late): its checkpoint, the only one (no saveEverySteps)
    assert done["status"]["progress"]["resumedFromStep"] == 3 and done["status"]["progress"]["stepsCompleted"] == 6
    models = executor.pvc_dir("dpo-data") / "models"
    whole = train_cli(python(), _workspace(tmp_path, executor), "whole", {**TRAINING, "local": {
        **TRAINING["local"], "output": {"claimName": "x"}}})
    from safetensors.torch import load_file

    assert_same_weights(load_file(str(whole / "final/model.safetensors")),
                        load_file(str(models / "low/final/model.safetensors")), rtol=1e-5, atol=1e-6)


def _workspace(tmp_path: Path, executor: Any) -> Path:
    """The layout train_cli expects (tiny/, data/) over the same model and data set the pods used."""
    (tmp_path / "tiny").symlink_to(executor.pvc_dir("models") / "tiny")
    (tmp_path / "data").symlink_to(executor.pvc_dir("dpo-data") / "ds")
    return tmp_path
