"""Remote work is never left running (issue 21, item 5): whatever a DPOTrainingJob may have created in NeMo
Customizer is found again by its tag and cancelled when the resource fails and when it is deleted, with the
credentials captured at submission when the user's Secret is gone; no NaN or infinity reaches status. The real
operator on the emulated cluster, against the NeMo API emulator."""

from __future__ import annotations

import base64
import json
import math

import pytest

from dpo_operator.api.collection import KIND as COLLECTION
from dpo_operator.api.collection import DPOCollectionStatus
from dpo_operator.embedded.executor import LocalExecutor
from dpo_operator.kube.status import Outcome, write_status
from tests.fakes.nemo import FakeNemo
from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import RESULT, SPEC
from tests.test_customizer_e2e import API_KEY, executor, nemo, spec_for  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e


def test_a_create_answered_with_html_fails_and_cancels_the_job_it_made(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor) -> None:
    nemo.script = [{"status": "running"}]
    nemo.garbled.add("create-job")  # the job is created, the answer is a proxy's HTML page
    kube.create("DPOTrainingJob", namespace, "garbled", spec_for(nemo))
    failed = kube.wait_phase("DPOTrainingJob", namespace, "garbled", "Failed", timeout=40)
    assert failed["status"]["reason"] == "RemoteApiError"
    [job] = nemo.jobs.values()
    assert job["status"] == "cancelled"
    assert f"cancelled Customizer job {job['id']}" in failed["status"]["message"]


@pytest.mark.parametrize("change", ["deleted", "refused"])
def test_a_secret_deleted_or_refused_mid_run_still_cancels_on_delete(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor, change: str) -> None:
    nemo.script = [{"status": "running"}]
    kube.create("DPOTrainingJob", namespace, "keyless", spec_for(nemo))
    running = kube.wait_phase("DPOTrainingJob", namespace, "keyless", "Running", timeout=40)
    captured = kube.to_dict(kube.core.read_namespaced_secret("keyless-remote-credentials", namespace))
    assert captured["metadata"]["ownerReferences"][0]["uid"] == running["metadata"]["uid"]
    assert "dpo.ai/usable" not in (captured["metadata"].get("labels") or {})  # no resource or pod may use it
    assert base64.b64decode(captured["data"]["api-key"]).decode() == API_KEY
    assert API_KEY not in json.dumps(running["status"])
    if change == "deleted":  # the user's Secret goes first
        kube.core.delete_namespaced_secret("nemo", namespace)
    else:  # or now holds a key the Customizer refuses (401)
        kube.core.patch_namespaced_secret("nemo", namespace, {"data": {"api-key": base64.b64encode(b"revoked").decode()}})
    kube.delete("DPOTrainingJob", namespace, "keyless")
    wait_for(lambda: not kube.exists("DPOTrainingJob", namespace, "keyless"), timeout=30, what="deletion")
    assert nemo.jobs[running["status"]["remoteJobId"]]["status"] == "cancelled"


def test_a_failure_after_submission_cancels_the_remote_job(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor) -> None:
    nemo.script = [{"status": "running"}]
    kube.create("DPOTrainingJob", namespace, "refused", spec_for(nemo, maxConsecutivePollFailures=2))
    running = kube.wait_phase("DPOTrainingJob", namespace, "refused", "Running", timeout=40)
    nemo.fail["job-status"] = [400] * 3  # the Customizer refuses the polls
    failed = kube.wait_phase("DPOTrainingJob", namespace, "refused", "Failed", timeout=40)
    assert failed["status"]["reason"] == "PollFailed"
    assert nemo.jobs[running["status"]["remoteJobId"]]["status"] == "cancelled"
    assert "cancelled Customizer job" in failed["status"]["message"]


def test_nan_and_infinity_never_reach_status(kube: Kube, namespace: str, operator: None) -> None:
    kube.require_emulated()  # finishes a Job
    kube.create("DPOCollection", namespace, "nan", SPEC)
    wait_for(lambda: kube.job(namespace, "nan-collect"), what="collection job")
    result = json.dumps({**RESULT, "meanScoreDiff": math.nan, "candidatesPerSecond": math.inf})
    assert "NaN" in result and "Infinity" in result
    kube.finish_job(namespace, "nan-collect", succeeded=True, message=result)
    done = kube.wait_phase("DPOCollection", namespace, "nan", "Succeeded")
    assert "meanScoreDiff" not in done["status"] and "candidatesPerSecond" not in done["status"]
    assert done["status"]["pairs"] == RESULT["pairs"]


def test_the_status_writer_drops_non_finite_numbers(kube: Kube, namespace: str) -> None:
    body = kube.create("DPOCollection", namespace, "direct", SPEC)
    fields = DPOCollectionStatus(mean_score_diff=-math.inf, candidates_per_second=math.nan, candidates=4)
    write_status(COLLECTION, body, Outcome("Running", "PodsRunning", "running", fields))
    status = kube.get("DPOCollection", namespace, "direct")["status"]
    assert status["candidates"] == 4 and "meanScoreDiff" not in status and "candidatesPerSecond" not in status


def test_a_nemo_deployment_status_does_not_name_is_found_by_its_tag_and_deleted(
        kube: Kube, namespace: str, operator: None) -> None:
    """A model deployment created just before its status write failed (so status never named it)."""
    with FakeNemo() as keyless:  # Deployment Management without an API key, as in the deployment tests
        spec = {"backend": "nemo", "model": {"trainingJobRef": {"name": "not-yet"}}, "nemo": {"url": keyless.url}}
        kube.create("ModelDeployment", namespace, "lost", spec)
        kube.wait_status("ModelDeployment", namespace, "lost", lambda s: s.get("reason") == "WaitingForModel")
        for name, owner in (("lost-0123abcd", "lost"), ("lost-2", "lost-2")):
            keyless.add_deployment("dpo", name, "team-a/m@v1", description=f"dpo-operator ModelDeployment {namespace}/{owner}")
        kube.delete("ModelDeployment", namespace, "lost")
        wait_for(lambda: not kube.exists("ModelDeployment", namespace, "lost"), what="deletion")
        assert list(keyless.deployments) == ["dpo/lost-2"]  # ours went; another resource's (a longer name) stayed
