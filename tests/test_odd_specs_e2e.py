"""Large and odd specs (issue 21, item 7): a spec larger than kopf's annotation allows, one too large for the
workload's environment, a cross-namespace collection reference, suspend after submission, start times in the
future. The real operator on the emulated cluster."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dpo_operator.embedded.executor import LocalExecutor
from tests.fakes.nemo import FakeNemo
from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import SPEC
from tests.test_customizer_e2e import executor, nemo, spec_for  # noqa: F401  (fixtures)
from tests.test_deployment_e2e import explicit, probe_locally  # noqa: F401  (fixture)
from tests.test_training_e2e import TRAINING

pytestmark = pytest.mark.e2e
DIFFBASE = "dpo.ai/last-handled-configuration"


def _with_model_name(size: int) -> dict[str, Any]:
    return {**SPEC, "llm": {**SPEC["llm"], "model": "m" * size}}


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return {c["type"]: c for c in obj["status"]["conditions"]}[type_]


def _patch_status(kube: Kube, kind_plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    kube.custom.patch_namespaced_custom_object_status("dpo.ai", "v1alpha1", namespace, kind_plural, name,
                                                      {"status": status})


def test_a_300_kib_spec_is_refused_clearly_and_kopf_keeps_only_a_digest(
        kube: Kube, namespace: str, operator: None) -> None:
    kube.create("DPOCollection", namespace, "huge", _with_model_name(300 * 1024))
    failed = kube.wait_phase("DPOCollection", namespace, "huge", "Failed")
    assert failed["status"]["reason"] == "InvalidSpec"
    assert "KiB as JSON" in failed["status"]["message"] and "at most 120 KiB" in failed["status"]["message"]
    assert kube.job(namespace, "huge-collect") is None  # never a process that cannot start
    stored = wait_for(lambda: (kube.get("DPOCollection", namespace, "huge")["metadata"].get("annotations") or {})
                      .get(DIFFBASE), what="kopf's diff base")
    assert len(stored) < 1024 and "sha256" in json.loads(stored)["spec"]


def test_a_100_kib_spec_runs_and_its_changes_are_still_seen(kube: Kube, namespace: str, operator: None) -> None:
    kube.create("DPOCollection", namespace, "big", _with_model_name(100 * 1024))
    job = wait_for(lambda: kube.job(namespace, "big-collect"), what="collection job")
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert len(json.loads(env["DPO_COLLECTION_SPEC"])["llm"]["model"]) == 100 * 1024
    kube.wait_status("DPOCollection", namespace, "big", lambda s: s.get("observedGeneration") == 1)
    kube.patch_spec("DPOCollection", namespace, "big", {"suspend": True})
    changed = kube.wait_status("DPOCollection", namespace, "big", lambda s: s.get("observedGeneration") == 2)
    assert changed["status"]["phase"] == "Suspended" and kube.job(namespace, "big-collect")["spec"]["suspend"] is True


@pytest.mark.parametrize("ref_namespace", ["elsewhere", None])
def test_a_collection_in_another_namespace_is_refused_not_replaced(
        kube: Kube, namespace: str, operator: None, ref_namespace: str | None) -> None:
    kube.create("DPOCollection", namespace, "pairs", SPEC)  # a same-named collection here must not be used
    ref = {"name": "pairs", "namespace": ref_namespace or namespace}
    kube.create("DPOTrainingJob", namespace, "cross", {**TRAINING, "dataset": {"collectionRef": ref}})
    if ref_namespace is None:  # its own namespace, spelled out: fine
        waiting = kube.wait_status("DPOTrainingJob", namespace, "cross", lambda s: s.get("reason") == "WaitingForDataset")
        assert waiting["spec"]["dataset"]["collectionRef"]["namespace"] == namespace  # kept, not pruned
        return
    failed = kube.wait_phase("DPOTrainingJob", namespace, "cross", "Failed")
    assert failed["status"]["reason"] == "InvalidSpec"
    assert "spec.dataset.collectionRef.namespace 'elsewhere'" in failed["status"]["message"]


def test_suspend_after_submission_is_refused_clearly(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor) -> None:
    nemo.script = [{"status": "running", "percentage_done": 5.0}]
    kube.create("DPOTrainingJob", namespace, "paused", spec_for(nemo))
    running = kube.wait_phase("DPOTrainingJob", namespace, "paused", "Running", timeout=40)
    kube.patch_spec("DPOTrainingJob", namespace, "paused", {"suspend": True})
    refused = kube.wait_status("DPOTrainingJob", namespace, "paused", lambda s: s.get("observedGeneration") == 2
                               and any(c.get("reason") == "SuspendNotSupported" for c in s.get("conditions") or []))
    condition = _condition(refused, "SpecApplied")
    assert condition["status"] == "False" and "cannot pause" in condition["message"]
    assert refused["status"]["phase"] == "Running"
    assert nemo.jobs[running["status"]["remoteJobId"]]["status"] == "running"  # neither cancelled nor hidden


def test_a_submit_time_in_the_future_does_not_disable_the_deadline(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor) -> None:
    nemo.script = [{"status": "running", "percentage_done": 1.0}]
    spec = spec_for(nemo)
    spec["job"]["activeDeadlineSeconds"] = 8
    kube.create("DPOTrainingJob", namespace, "future", spec)
    kube.wait_phase("DPOTrainingJob", namespace, "future", "Running", timeout=40)
    _patch_status(kube, "dpotrainingjobs", namespace, "future", {"submitTime": "2099-01-01T00:00:00Z"})
    failed = kube.wait_phase("DPOTrainingJob", namespace, "future", "Failed", timeout=40)
    assert failed["status"]["reason"] == "DeadlineExceeded"
    assert failed["status"]["submitTime"] < "2099"


def test_a_rollout_start_in_the_future_does_not_disable_the_readiness_timeout(
        kube: Kube, namespace: str, operator: None) -> None:
    kube.create("ModelDeployment", namespace, "later", explicit(18002, readinessTimeoutSeconds=10))
    kube.wait_phase("ModelDeployment", namespace, "later", "Progressing")
    _patch_status(kube, "modeldeployments", namespace, "later", {"rolloutStartTime": "2099-01-01T00:00:00Z"})
    failed = kube.wait_phase("ModelDeployment", namespace, "later", "Failed", timeout=40)
    assert _condition(failed, "Failed")["reason"] == "ReadinessTimeout"
    assert failed["status"]["rolloutStartTime"] < "2099"
