"""Failures a person can diagnose from the resource's status: OOM kills and exit codes, pods that cannot start
(missing Secret, image pull errors, unschedulable), deterministic workload failures that do not burn retries, and
a remote service that keeps refusing to create the job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dpo_operator import cli
from dpo_operator.kube.jobs import DETERMINISTIC_EXIT_CODE
from tests.fakes.nemo import FakeNemo
from tests.kubehelpers import Kube, conditions_of, wait_for
from tests.test_collection_e2e import SPEC

pytestmark = pytest.mark.e2e


def reason(obj: dict[str, Any]) -> str | None:
    """The reason of the condition that holds (None before the operator's first status write)."""
    return next((c["reason"] for c in conditions_of(obj).values() if c["status"] == "True"), None)


def stuck_pod(kube: Kube, namespace: str, job_name: str, status: dict[str, Any]) -> None:
    """Play the kubelet/scheduler: a pod of the Job in the given state."""
    job = kube.job(namespace, job_name)
    assert job is not None
    name = f"{job_name}-stuck"
    kube.core.create_namespaced_pod(namespace, {"metadata": {
        "name": name, "labels": {**job["spec"]["template"]["metadata"]["labels"], "batch.kubernetes.io/job-name": job_name},
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job["metadata"]["uid"],
                             "controller": True}]},
        "spec": {"containers": [{"name": "collector", "image": "x"}], "restartPolicy": "Never"}})
    kube.core.patch_namespaced_pod_status(name, namespace, {"status": status})


def test_oom_kill_is_named_with_the_exit_code(kube: Kube, namespace: str, operator: None) -> None:
    kube.require_emulated()
    kube.create("DPOCollection", namespace, "oom", SPEC)
    job = wait_for(lambda: kube.job(namespace, "oom-collect"), what="collection job")
    policy = job["spec"]["podFailurePolicy"]["rules"]
    assert policy[0] == {"action": "FailJob", "onExitCodes": {"containerName": "collector", "operator": "In",
                                                              "values": [3, 4, 5]}}  # api/exits.py UNRECOVERABLE
    kube.finish_job(namespace, "oom-collect", succeeded=False, exit_code=137, termination_reason="OOMKilled")
    failed = kube.wait_phase("DPOCollection", namespace, "oom", "Failed")
    assert reason(failed) == "OOMKilled" and failed["status"]["failureReason"] == "OOMKilled"
    assert "OOMKilled, exit code 137" in failed["status"]["message"]
    assert "BackoffLimitExceeded" in failed["status"]["message"]


def test_a_deterministic_failure_is_a_config_error(kube: Kube, namespace: str, operator: None,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kube.require_emulated()
    # the workload's own exit code for an invalid spec is the one the podFailurePolicy fails the Job on
    monkeypatch.setenv("BAD_SPEC", json.dumps({"workflow": {"name": "tictactoe"}}))
    result = tmp_path / "result"
    assert cli.main(["collect", "--spec-env", "BAD_SPEC", "--result-file", str(result)]) == DETERMINISTIC_EXIT_CODE
    kube.create("DPOCollection", namespace, "bad", SPEC)
    wait_for(lambda: kube.job(namespace, "bad-collect"), what="collection job")
    kube.finish_job(namespace, "bad-collect", succeeded=False, reason="PodFailurePolicy",
                    exit_code=DETERMINISTIC_EXIT_CODE, message=result.read_text())
    failed = kube.wait_phase("DPOCollection", namespace, "bad", "Failed")
    assert reason(failed) == "WorkloadConfigError"
    assert f"exited with code {DETERMINISTIC_EXIT_CODE}" in failed["status"]["message"]
    assert "ValidationError" in failed["status"]["message"]


@pytest.mark.parametrize("status, expected, text", [
    ({"phase": "Pending", "containerStatuses": [{"name": "collector", "image": "x", "imageID": "", "ready": False,
                                                 "restartCount": 0, "state": {"waiting": {
                                                     "reason": "CreateContainerConfigError",
                                                     "message": 'secret "nim-key" not found'}}}]},
     "CreateContainerConfigError", 'secret "nim-key" not found'),
    ({"phase": "Pending", "containerStatuses": [{"name": "collector", "image": "x", "imageID": "", "ready": False,
                                                 "restartCount": 0, "state": {"waiting": {
                                                     "reason": "ImagePullBackOff",
                                                     "message": 'Back-off pulling image "registry.example/nope"'}}}]},
     "ImagePullBackOff", "registry.example/nope"),
    ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                          "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]},
     "Unschedulable", "Insufficient nvidia.com/gpu"),
], ids=["missing-secret", "image-pull", "unschedulable"])
def test_a_pod_that_cannot_start_is_surfaced(kube: Kube, namespace: str, operator: None, status: dict[str, Any],
                                            expected: str, text: str) -> None:
    kube.require_emulated()
    kube.create("DPOCollection", namespace, "stuck", SPEC)
    wait_for(lambda: kube.job(namespace, "stuck-collect"), what="collection job")
    kube.start_job(namespace, "stuck-collect")
    kube.wait_phase("DPOCollection", namespace, "stuck", "Running")
    stuck_pod(kube, namespace, "stuck-collect", status)
    pending = wait_for(lambda: (o := kube.get("DPOCollection", namespace, "stuck")).get("status", {}).get("phase")
                       == "Pending" and reason(o) == expected and o, what=f"Pending/{expected}")
    assert text in pending["status"]["message"] and "stuck-collect-stuck" in pending["status"]["message"]


def test_customizer_refusing_job_creation_shows_pending_with_error_and_attempts(
        kube: Kube, namespace: str, operator: None) -> None:
    with FakeNemo() as nemo:
        nemo.repos["team-a/collected"] = {"training/training_file.jsonl": b'{"prompt": "p"}\n'}
        nemo.fail["create-job"] = [500] * 1000
        spec = {"backend": "customizer", "model": {"name": "meta/llama-3.2-1b-instruct@v1.0.0+A100"},
                "dataset": {"location": {"hub": {"endpoint": f"{nemo.url}/v1/hf", "repoId": "team-a/collected"}}},
                "customizer": {"entityStoreUrl": nemo.url, "datastoreUrl": nemo.url, "namespace": "team-a",
                               "pollIntervalSeconds": 1}}
        kube.create("DPOTrainingJob", namespace, "refused", spec)
        pending = kube.wait_status("DPOTrainingJob", namespace, "refused", lambda s: s.get("phase") == "Pending"
                                   and "attempt 2 failed" in s.get("message", ""), timeout=30,
                                   what="a Pending status counting the attempts")
    assert reason(pending) == "Retrying" and "500" in pending["status"]["message"]
    assert nemo.jobs == {}
