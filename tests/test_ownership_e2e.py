"""Children are used only when this resource controls them (same uid), and a Job that completed without a readable
result is a failure: on the emulated cluster with the real operator."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import RESULT, SPEC

pytestmark = pytest.mark.e2e


def reason(obj: dict[str, Any], condition: str) -> str:
    return {c["type"]: c for c in obj["status"]["conditions"]}[condition]["reason"]


def test_a_strangers_job_is_not_adopted(kube: Kube, namespace: str, operator: None) -> None:
    kube.require_emulated()  # finishes a Job
    # another team's finished Job, with a pod result, under the name our Job would get
    kube.batch.create_namespaced_job(namespace, {"metadata": {"name": "pairs-collect", "labels": {"team": "b"}}, "spec": {
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
    kube.finish_job(namespace, "pairs-collect", succeeded=True, message=json.dumps(RESULT))
    before = kube.job(namespace, "pairs-collect")

    created = kube.create("DPOCollection", namespace, "pairs", SPEC)
    # issue 21 item 6: not Failed for good, but waiting for the stranger to leave
    waiting = kube.wait_status("DPOCollection", namespace, "pairs", lambda s: s.get("reason") == "NameConflict")
    assert waiting["status"]["phase"] == "Pending"
    assert f"Job {namespace}/pairs-collect already exists and is not controlled by DPOCollection pairs" in \
        waiting["status"]["message"]
    after = kube.job(namespace, "pairs-collect")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]  # untouched
    assert "pairs" not in waiting["status"] or waiting["status"].get("pairs") is None
    kube.batch.delete_namespaced_job("pairs-collect", namespace)  # the stranger leaves: ours is created
    ours = wait_for(lambda: (job := kube.job(namespace, "pairs-collect")) and
                    job["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"] and job, what="our Job")
    assert ours["metadata"]["labels"].get("team") != "b"
    kube.wait_status("DPOCollection", namespace, "pairs", lambda s: s.get("reason") == "JobCreated")


def test_a_strangers_deployment_and_service_are_not_overwritten(kube: Kube, namespace: str, operator: None) -> None:
    labels = {"app": "theirs"}
    kube.apps.create_namespaced_deployment(namespace, {"metadata": {"name": "web"}, "spec": {
        "replicas": 3, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}}})
    kube.core.create_namespaced_service(namespace, {"metadata": {"name": "web"}, "spec": {
        "selector": labels, "ports": [{"port": 80}]}})
    before = (kube.deployment(namespace, "web"), kube.to_dict(kube.core.read_namespaced_service("web", namespace)))

    kube.create("ModelDeployment", namespace, "web", {"model": {"explicit": {"name": "meta/llama-3.1-8b-instruct"}}})
    waiting = kube.wait_status("ModelDeployment", namespace, "web", lambda s: s.get("reason") == "NameConflict")
    assert waiting["status"]["phase"] == "Pending"  # waits for the stranger to leave (issue 21 item 6)
    assert "is not controlled by ModelDeployment web" in waiting["status"]["message"]
    after = (kube.deployment(namespace, "web"), kube.to_dict(kube.core.read_namespaced_service("web", namespace)))
    assert [o["metadata"]["resourceVersion"] for o in after] == [o["metadata"]["resourceVersion"] for o in before]
    assert after[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"


def test_a_job_without_a_readable_result_fails_and_forged_pods_do_not_count(
        kube: Kube, namespace: str, operator: None) -> None:
    kube.require_emulated()  # finishes a Job
    kube.create("DPOCollection", namespace, "blank", SPEC)
    wait_for(lambda: kube.job(namespace, "blank-collect"), what="collection job")
    # a pod anyone could create, carrying the job-name label and a forged result, but not controlled by the Job
    kube.core.create_namespaced_pod(namespace, {"metadata": {"name": "forged", "labels": {
        "batch.kubernetes.io/job-name": "blank-collect"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
    kube.core.patch_namespaced_pod_status("forged", namespace, {"status": {"phase": "Succeeded", "containerStatuses": [
        {"name": "c", "image": "x", "imageID": "", "ready": False, "restartCount": 0,
         "state": {"terminated": {"exitCode": 0, "message": json.dumps(RESULT), "finishedAt": "2026-01-01T00:00:00Z"}}}]}})
    kube.finish_job(namespace, "blank-collect", succeeded=True, message="")  # the Job's own pod left nothing
    failed = kube.wait_phase("DPOCollection", namespace, "blank", "Failed")
    assert reason(failed, "Failed") == "ResultUnavailable" and failed["status"]["failureReason"] == "ResultUnavailable"
    assert "pairs" not in failed["status"]
