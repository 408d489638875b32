"""Identity across re-creation and children a person deletes (issue 21, items 6 and 7): status is derived only
from children this uid controls, a name held by an earlier incarnation's child is waited out, and a deleted child
Job is noticed at once. The real operator on the emulated cluster."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import SPEC
from tests.test_training_e2e import TRAINING

pytestmark = pytest.mark.e2e
RESYNC = 120.0  # the collection's periodic resync: what a missed event would wait for


def _controller(obj: dict[str, Any] | None) -> str | None:
    refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
    return next((r["uid"] for r in refs if r.get("controller")), None)


def test_the_survivor_of_quick_recreations_runs_its_own_job(kube: Kube, namespace: str, operator: None) -> None:
    for _ in range(3):
        kube.create("DPOCollection", namespace, "flip", SPEC)
        kube.delete("DPOCollection", namespace, "flip")
    survivor = kube.create("DPOCollection", namespace, "flip", SPEC)
    uid = survivor["metadata"]["uid"]
    job = wait_for(lambda: (j := kube.job(namespace, "flip-collect")) and _controller(j) == uid and j,
                   what="the survivor's own Job")
    status = kube.wait_status("DPOCollection", namespace, "flip", lambda s: s.get("reason") == "JobCreated")["status"]
    assert status["phase"] == "Pending" and status["jobName"] == job["metadata"]["name"]


def test_an_earlier_incarnations_job_is_waited_out_not_adopted(kube: Kube, namespace: str, operator: None) -> None:
    kube.require_emulated()  # plays the garbage collector's lag
    ghost = str(uuid.uuid4())  # the uid of a deleted incarnation whose Job the garbage collector has not removed yet
    kube.batch.create_namespaced_job(namespace, {"metadata": {
        "name": "again-collect", "labels": {"dpo.ai/dpocollection": "again"},
        "ownerReferences": [{"apiVersion": "dpo.ai/v1alpha1", "kind": "DPOCollection", "name": "again", "uid": ghost,
                             "controller": True}]}, "spec": {
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
    kube.start_job(namespace, "again-collect")
    created = kube.create("DPOCollection", namespace, "again", SPEC)
    waiting = kube.wait_status("DPOCollection", namespace, "again", lambda s: s.get("reason") == "NameConflict")
    assert waiting["status"]["phase"] == "Pending" and "jobName" not in waiting["status"]  # not the ghost's
    kube.batch.delete_namespaced_job("again-collect", namespace)  # the garbage collector catches up
    wait_for(lambda: _controller(kube.job(namespace, "again-collect")) == created["metadata"]["uid"], what="our Job")
    ready = kube.wait_status("DPOCollection", namespace, "again", lambda s: s.get("reason") == "JobCreated")
    assert ready["status"]["phase"] == "Pending"


def test_a_collection_job_deleted_by_a_person_is_noticed_at_once(kube: Kube, namespace: str, operator: None) -> None:
    kube.create("DPOCollection", namespace, "gone", SPEC)
    kube.wait_status("DPOCollection", namespace, "gone", lambda s: s.get("jobName"))
    kube.batch.delete_namespaced_job("gone-collect", namespace, propagation_policy="Background")
    failed = kube.wait_phase("DPOCollection", namespace, "gone", "Failed", timeout=RESYNC / 6)
    assert failed["status"]["reason"] == "JobMissing"
    assert "delete and re-create the DPOCollection" in failed["status"]["message"]
    assert kube.job(namespace, "gone-collect") is None  # not re-created behind the person's back


def test_a_training_job_deleted_by_a_person_fails_it_and_is_not_recreated(
        kube: Kube, namespace: str, operator: None) -> None:
    spec = {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}},
                                    "check": {"enabled": False}}}  # the training Job at once, no data check first
    kube.create("DPOTrainingJob", namespace, "stopped", spec)
    kube.wait_status("DPOTrainingJob", namespace, "stopped", lambda s: s.get("jobName"))
    kube.batch.delete_namespaced_job("stopped-train", namespace, propagation_policy="Background")
    failed = kube.wait_phase("DPOTrainingJob", namespace, "stopped", "Failed")
    assert failed["status"]["reason"] == "JobMissing" and failed["status"]["failureReason"] == "JobMissing"
    assert "delete and re-create the DPOTrainingJob" in failed["status"]["message"]
    assert kube.job(namespace, "stopped-train") is None


def test_a_job_recorded_in_status_is_never_created_again(kube: Kube, namespace: str) -> None:
    """One read decides: a Job the status names that is not there raises JobGone and nothing is created."""
    from dpo_operator.kube.jobs import JobGone, ensure_job

    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once", "namespace": namespace},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "c", "image": "busybox"}]}}}}
    with pytest.raises(JobGone):
        ensure_job(namespace, manifest, recorded=True)
    assert kube.job(namespace, "once") is None
    assert ensure_job(namespace, manifest)["metadata"]["name"] == "once"
    assert kube.job(namespace, "once") is not None


def test_a_training_job_deleted_between_two_reads_of_one_reconcile_is_not_recreated(
        kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race a loaded machine showed: the reconcile saw the trainer Job, a person deleted it, and the same
    reconcile then created it again. Now the Job is created only while the status does not name it yet."""
    from dpo_operator.api.training import DPOTrainingJobSpec
    from dpo_operator.handlers import training_local

    spec = {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}},
                                    "check": {"enabled": False}}}
    body = kube.create("DPOTrainingJob", namespace, "raced", spec)
    body["status"] = {"jobName": "raced-train"}  # an earlier reconcile created it
    seen = {"metadata": {"name": "raced-train", "namespace": namespace}}  # what the first read of this one saw
    monkeypatch.setattr(training_local, "get_job", lambda ns, name: seen)
    outcome = training_local.decide(body, DPOTrainingJobSpec.model_validate(body["spec"]))
    assert getattr(outcome, "reason", None) == "JobMissing", outcome
    assert kube.job(namespace, "raced-train") is None
