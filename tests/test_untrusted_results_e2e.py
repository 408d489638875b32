"""Results are read only from the pods our Job created (its owner reference *and* its template's containers),
validated against the shared result models and bounded; anything else is refused with a clear reason (issue 21,
item 9). On the emulated cluster with the real operator."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import RESULT, SPEC

pytestmark = pytest.mark.e2e
FORGED = {**RESULT, "pairs": {"total": 999_999, "training": 999_998, "validation": 1}, "candidates": 2_000_000}


def _forge(kube: Kube, namespace: str, job: dict[str, Any]) -> None:
    """A pod carrying the Job's labels and controller owner reference, but not its template's containers."""
    name = job["metadata"]["name"]
    kube.core.create_namespaced_pod(namespace, {"metadata": {
        "name": "forged", "labels": {"batch.kubernetes.io/job-name": name},
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job["metadata"]["uid"],
                             "controller": True}]},
        "spec": {"containers": [{"name": "collector", "image": "evil/forger:1"}], "restartPolicy": "Never"}})
    kube.core.patch_namespaced_pod_status("forged", namespace, {"status": {"phase": "Succeeded", "containerStatuses": [
        {"name": "collector", "image": "x", "imageID": "", "ready": False, "restartCount": 0,
         "state": {"terminated": {"exitCode": 0, "message": json.dumps(FORGED), "finishedAt": "2099-01-01T00:00:00Z"}}}]}})


def test_a_forged_pod_with_the_jobs_owner_reference_is_not_read(kube: Kube, namespace: str, operator: None) -> None:
    kube.require_emulated()  # finishes a Job
    kube.create("DPOCollection", namespace, "forged", SPEC)
    job = wait_for(lambda: kube.job(namespace, "forged-collect"), what="collection job")
    _forge(kube, namespace, job)  # newest, so it would be read first
    kube.finish_job(namespace, "forged-collect", succeeded=True, message=json.dumps(RESULT))
    done = kube.wait_phase("DPOCollection", namespace, "forged", "Succeeded")
    assert done["status"]["pairs"] == RESULT["pairs"]


@pytest.mark.parametrize(("result", "why"), [
    ({**RESULT, "pairs": {"total": 999_999, "training": 8, "validation": 2}},
     "pairs.total (999999) is not pairs.training + pairs.validation"),
    ({**RESULT, "pairs": {"total": 999_999, "training": 999_997, "validation": 2}},
     "pairs.total (999999) is more than 32 candidates can make"),
    ({**RESULT, "candidates": -1}, "candidates: Input should be greater than or equal to 0"),
    ({**RESULT, "errors": ["e"] * 1001}, "errors: List should have at most 1000 items"),
])
def test_a_result_out_of_bounds_is_refused_with_the_reason(kube: Kube, namespace: str, operator: None,
                                                           result: dict[str, Any], why: str) -> None:
    kube.require_emulated()
    kube.create("DPOCollection", namespace, "bounded", SPEC)
    wait_for(lambda: kube.job(namespace, "bounded-collect"), what="collection job")
    kube.finish_job(namespace, "bounded-collect", succeeded=True, message=json.dumps(result))
    failed = kube.wait_phase("DPOCollection", namespace, "bounded", "Failed")
    assert failed["status"]["reason"] == "ResultUnavailable"
    assert why in failed["status"]["message"], failed["status"]["message"]
    assert "its pod's result was refused" in failed["status"]["message"]
    assert "pairs" not in failed["status"]
