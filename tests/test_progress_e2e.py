"""Live progress on the emulated cluster with the real operator: a running pod prints progress lines to its log, the
operator reads the newest one through pods/log into status.progress, the phase message and kubectl's PROGRESS and
ETA columns; the pod's result replaces it at the end."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpo_operator.api.progress import CollectionReport, TrainingReport
from dpo_operator.kube.progress import Throttle
from tests.kubehelpers import Kube, wait_for
from tests.kubectl_versions import installed_kubectls
from tests.test_collection_e2e import RESULT as COLLECTION_RESULT
from tests.test_collection_e2e import SPEC as COLLECTION_SPEC
from tests.test_training_e2e import TRAINING

pytestmark = pytest.mark.e2e
SPEC = {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}, "check": {"enabled": False}}}
SPEC.pop("deployOnCompletion")


@pytest.fixture()
def fast_progress(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Progress read every 0.5 s (the operator reads its configuration when it starts: request this first)."""
    monkeypatch.setenv("DPO_PROGRESS_INTERVAL_SECONDS", "0.5")
    yield


def kubectl_get(kubeconfig: Path, *args: str) -> list[list[str]]:
    binary = installed_kubectls()[-1]
    done = subprocess.run([binary, "get", *args], capture_output=True, text=True, timeout=60, check=True,
                          env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    return [line.split() for line in done.stdout.strip().splitlines()]


def test_training_progress_flows_from_the_pod_log_into_status(fast_progress: None, kube: Kube, namespace: str,
                                                              operator: None, kubeconfig: Path) -> None:
    kube.create("DPOTrainingJob", namespace, "live", SPEC)
    wait_for(lambda: kube.job(namespace, "live-train"), what="training job")
    at_120 = TrainingReport(phase="training", step=120, total_steps=391, epoch=0.92, train_loss=0.31,
                            smoothed_train_loss=0.5213, val_loss=0.48, val_accuracy=0.75, tokens_per_second=5321.0,
                            eta_seconds=130.0)
    kube.run_pod(namespace, "live-train", "phase training: started\n" + at_120.line() + "\nstep 120/391 ...\n")
    kube.start_job(namespace, "live-train")
    running = kube.wait_status("DPOTrainingJob", namespace, "live",
                               lambda s: (s.get("progress") or {}).get("stepsCompleted") == 120)["status"]
    progress = running["progress"]
    assert progress["phase"] == "training" and progress["totalSteps"] == 391 and progress["percentageDone"] == 30.7
    assert (progress["eta"], progress["etaSeconds"]) == ("2m10s", 130.0) and progress["epochsCompleted"] == 0
    assert progress["smoothedTrainLoss"] == 0.5213 and progress["trainLoss"] == 0.31 and progress["valAccuracy"] == 0.75
    assert progress["reportedAt"].endswith("Z")
    assert running["phase"] == "Running" and running["message"] == (
        "1 pod(s) running; training step 120/391 (30.7%), loss 0.5213 (smoothed), val loss 0.4800, ETA 2m10s")
    if installed_kubectls() and not kube.real_cluster:
        table = kubectl_get(kubeconfig, "dpotj", "live", "-n", namespace)
        assert table[0][:5] == ["NAME", "BACKEND", "PHASE", "PROGRESS", "ETA"]
        assert table[1][:5] == ["live", "local", "Running", "30.7", "2m10s"]

    # the pod goes on: the newest line wins
    later = at_120.model_copy(update={"step": 391, "phase": "saving", "eta_seconds": 0.0})
    kube.run_pod(namespace, "live-train", "validation at step 391: ...\n" + later.line() + "\n")
    saving = kube.wait_status("DPOTrainingJob", namespace, "live",
                              lambda s: (s.get("progress") or {}).get("phase") == "saving")["status"]
    assert saving["progress"]["percentageDone"] == 100.0 and saving["message"] == "1 pod(s) running; saving"

    result = {"outputModel": "/mnt/pvc/dpo-data/models/live/final", "steps": 391, "trainLoss": 0.2,
              "smoothedTrainLoss": 0.25, "valLoss": 0.41, "tokensPerSecond": 5000.0,
              "validation": {"pairs": 40, "loss": 0.41, "rewardAccuracy": 0.8, "rewardMargin": 1.2,
                             "logpsAccuracy": 0.7, "logpsPerTokenAccuracy": 0.75, "referenceLogpsAccuracy": 0.45,
                             "referenceLogpsPerTokenAccuracy": 0.5}}
    kube.finish_job(namespace, "live-train", succeeded=True, message=json.dumps(result))
    done = kube.wait_phase("DPOTrainingJob", namespace, "live", "Succeeded")["status"]
    assert done["progress"].pop("reportedAt") >= progress["reportedAt"]  # when the result was read
    assert done["progress"] == {"phase": "done", "percentageDone": 100.0, "stepsCompleted": 391, "totalSteps": 391,
                                "epochsCompleted": 1, "epoch": 1.0, "trainLoss": 0.2, "smoothedTrainLoss": 0.25,
                                "valLoss": 0.41, "valAccuracy": 0.8, "tokensPerSecond": 5000.0, "eta": "0s",
                                "etaSeconds": 0.0}
    assert done["validation"] == {"pairs": 40, "loss": 0.41, "rewardAccuracy": 0.8, "rewardMargin": 1.2,
                                  "logpsAccuracy": 0.7, "logpsPerTokenAccuracy": 0.75,
                                  "reference": {"logpsAccuracy": 0.45, "logpsPerTokenAccuracy": 0.5}}


def test_collection_progress_flows_from_the_pod_log_into_status(fast_progress: None, kube: Kube, namespace: str,
                                                                operator: None) -> None:
    kube.create("DPOCollection", namespace, "live", COLLECTION_SPEC)
    wait_for(lambda: kube.job(namespace, "live-collect"), what="collection job")
    report = CollectionReport(phase="collecting", examples_done=12, examples_total=16, runs_completed=1, runs_total=2,
                              candidates=48, pairs=20, average_reward=0.4523, eta_seconds=7.0)
    kube.run_pod(namespace, "live-collect", "Run 1: Collected 20 trajectories, 20 DPO pairs, avg reward: 0.4523\n"
                 + report.line() + "\n")
    kube.start_job(namespace, "live-collect")
    running = kube.wait_status("DPOCollection", namespace, "live",
                               lambda s: (s.get("progress") or {}).get("examplesDone") == 12)["status"]
    assert running["progress"]["percentageDone"] == 75.0 and running["progress"]["eta"] == "7s"
    assert running["message"] == ("1 pod(s) running; collecting: 12/16 examples (75.0%), 1/2 runs done, "
                                  "20 pairs so far, avg reward 0.4523, ETA 7s")
    kube.finish_job(namespace, "live-collect", succeeded=True, message=json.dumps(COLLECTION_RESULT))
    done = kube.wait_phase("DPOCollection", namespace, "live", "Succeeded")["status"]
    assert done["progress"]["phase"] == "done" and done["progress"]["percentageDone"] == 100.0
    assert done["progress"]["pairs"] == 10 and done["progress"]["examplesDone"] == 16  # the result's figures


def test_a_pod_log_is_read_at_most_once_per_interval() -> None:
    throttle = Throttle()
    assert throttle.due("uid-1", 10.0, clock=100.0)
    assert not throttle.due("uid-1", 10.0, clock=105.0) and throttle.due("uid-2", 10.0, clock=105.0)
    assert throttle.due("uid-1", 10.0, clock=110.0)
