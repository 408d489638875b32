"""Gated promotion (deployOnCompletion.promotion) against the emulated API server with the real operator: the test
plays the kubelet and the Deployment controller (training and evaluation Jobs finish with the results their pods
would report; NIM Deployments roll out behind a fake NIM). The whole path with real pods (trainer, NIM stand-in,
evaluation) runs in tests/test_demo.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.nemo import FakeNemo
from tests.fakes.nim import FakeNim
from tests.kubehelpers import Kube, conditions_of, wait_for
from tests.test_deployment_e2e import customizer_training
from tests.test_training_e2e import NO_CHECK, TRAIN_RESULT, TRAINING

pytestmark = pytest.mark.e2e

BASELINE_URL = "http://nim.example:8000/v1"
GATE = {"minImprovement": 0.0, "confidence": 0.95}


@pytest.fixture(autouse=True)
def probe_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator runs outside the cluster here: it reaches a Service's port on localhost (the fake NIM)."""
    monkeypatch.setenv("DPO_PROBE_URL_TEMPLATE", "http://127.0.0.1:{port}")


@pytest.fixture()
def nim() -> Iterator[FakeNim]:
    with FakeNim(models=["dpo", "meta/llama-3.2-1b-instruct"]) as server:
        yield server


def gated(port: int, **promotion: Any) -> dict[str, Any]:
    """A training job whose deployOnCompletion is gated by an evaluation on the tic-tac-toe workflow."""
    evaluation = {"workflow": {"name": "tictactoe", "numExamples": 40}, "maxExamples": 30, "gate": GATE,
                  **promotion.pop("evaluation", {"baseline": {"baseUrl": BASELINE_URL, "model": "base"}})}
    return {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}, **NO_CHECK},
            "deployOnCompletion": {"port": port, "readinessTimeoutSeconds": 60,
                                   "promotion": {"evaluation": evaluation, **promotion}}}


def evaluation_result(verdict: str, difference: float, lower: float, upper: float) -> str:
    """What the evaluation pod reports (api.results.EvaluationResult)."""
    side = {"count": 30, "failures": 0, "invalidAnswers": 0}
    return json.dumps({
        "examples": 30, "pairs": 30, "verdict": verdict, "verdictMessage": f"lower bound {lower} vs gate 0.0",
        "candidate": {**side, "mean": 0.2 + difference}, "baseline": {**side, "mean": 0.2},
        "meanDifference": difference, "lower": lower, "upper": upper, "confidence": 0.95,
        "method": "pairedBootstrap", "resamples": 1000, "seed": 7, "wins": 12, "ties": 10, "losses": 8})


def train(kube: Kube, namespace: str, spec: dict[str, Any]) -> None:
    kube.create("DPOTrainingJob", namespace, "dpo", spec)
    wait_for(lambda: kube.job(namespace, "dpo-train"), what="training job")
    kube.finish_job(namespace, "dpo-train", succeeded=True, message=json.dumps(TRAIN_RESULT))


def serve(kube: Kube, namespace: str, name: str) -> None:
    """Play the Deployment controller for the NIM of ModelDeployment ``name`` until it is Ready."""
    wait_for(lambda: kube.deployment(namespace, name), what=f"NIM Deployment {name}")
    kube.roll_out(namespace, name)
    kube.wait_phase("ModelDeployment", namespace, name, "Ready", timeout=30)


def evaluation_job(kube: Kube, namespace: str, evaluation: str) -> str:
    """The Job of the DPOEvaluation (found by its owner label)."""
    jobs = wait_for(lambda: kube.jobs(namespace, f"dpo.ai/dpoevaluation={evaluation}") or None,
                    what=f"the Job of DPOEvaluation {evaluation}")
    return jobs[0]["metadata"]["name"]


def events_for(kube: Kube, namespace: str, name: str) -> list[tuple[str, str]]:
    items = kube.core.list_namespaced_event(namespace).items
    return [(e.type, e.reason) for e in items if e.involved_object.name == name and e.involved_object.kind == "DPOTrainingJob"]


def test_a_passing_evaluation_promotes_the_candidate(kube: Kube, namespace: str, operator: None, nim: FakeNim) -> None:
    train(kube, namespace, gated(nim.port))
    gating = kube.wait_status("DPOTrainingJob", namespace, "dpo",
                              lambda s: (s.get("promotion") or {}).get("candidateDeployment"), what="candidate named")
    assert gating["status"]["phase"] == "Running"  # never Succeeded before the gate decides
    assert conditions_of(gating)["Promoted"]["status"] == "False"
    assert not kube.exists("ModelDeployment", namespace, "dpo")  # nothing is served as the deployment yet

    candidate = wait_for(lambda: kube.exists("ModelDeployment", namespace, "dpo-candidate")
                         and kube.get("ModelDeployment", namespace, "dpo-candidate"), what="candidate")
    assert candidate["spec"]["model"] == {"trainingJobRef": {"name": "dpo"}} and candidate["spec"]["port"] == nim.port
    assert "promotion" not in candidate["spec"]
    assert candidate["metadata"]["ownerReferences"][0]["uid"] == gating["metadata"]["uid"]
    assert not kube.exists("DPOEvaluation", namespace, "dpo-gate")  # only once the candidate serves
    serve(kube, namespace, "dpo-candidate")

    evaluation = wait_for(lambda: kube.exists("DPOEvaluation", namespace, "dpo-gate")
                          and kube.get("DPOEvaluation", namespace, "dpo-gate"), what="evaluation")
    assert evaluation["spec"]["candidate"] == {"modelDeploymentRef": {"name": "dpo-candidate"}}
    assert evaluation["spec"]["baseline"] == {"baseUrl": BASELINE_URL, "model": "base"}
    assert evaluation["spec"]["gate"] == GATE and evaluation["spec"]["maxExamples"] == 30
    assert evaluation["metadata"]["ownerReferences"][0]["uid"] == gating["metadata"]["uid"]
    kube.wait_status("DPOTrainingJob", namespace, "dpo", lambda s: s["promotion"]["step"] == "Evaluating",
                     what="evaluating")

    kube.finish_job(namespace, evaluation_job(kube, namespace, "dpo-gate"), succeeded=True,
                    message=evaluation_result("Passed", 0.25, 0.1, 0.4))
    done = kube.wait_phase("DPOTrainingJob", namespace, "dpo", "Succeeded", timeout=30)
    promotion = done["status"]["promotion"]
    assert promotion["step"] == "Promoted" and promotion["verdict"] == "Passed"
    assert promotion["difference"]["lower"] == 0.1 and promotion["difference"]["upper"] == 0.4
    assert promotion["candidateMean"] == pytest.approx(0.45) and promotion["baselineMean"] == 0.2
    promoted = conditions_of(done)["Promoted"]
    assert promoted["status"] == "True" and promoted["reason"] == "Promoted"
    assert "+0.2500" in promoted["message"] and "95% interval +0.1000 to +0.4000" in promoted["message"]
    assert done["status"]["deploymentName"] == "dpo"
    assert kube.get("ModelDeployment", namespace, "dpo")["spec"]["model"] == {"trainingJobRef": {"name": "dpo"}}
    wait_for(lambda: not kube.exists("ModelDeployment", namespace, "dpo-candidate"), what="candidate removed")
    assert kube.exists("DPOEvaluation", namespace, "dpo-gate")  # the record stays with the job
    serve(kube, namespace, "dpo")  # the promoted model is served
    assert ("Normal", "Promoted") in wait_for(lambda: events_for(kube, namespace, "dpo") or None, what="events")


def test_a_worse_model_is_refused_and_serving_is_untouched(kube: Kube, namespace: str, operator: None,
                                                            nim: FakeNim) -> None:
    kube.create("ModelDeployment", namespace, "serving", {
        "model": {"explicit": {"name": "meta/llama-3.2-1b-instruct", "pvc": {"claimName": "models", "path": "/llama"}}},
        "port": nim.port, "readinessTimeoutSeconds": 60})
    serve(kube, namespace, "serving")
    before = kube.get("ModelDeployment", namespace, "serving")
    train(kube, namespace, gated(nim.port, replaces={"name": "serving"}, evaluation={}))
    serve(kube, namespace, "dpo-candidate")
    evaluation = wait_for(lambda: kube.exists("DPOEvaluation", namespace, "dpo-gate")
                          and kube.get("DPOEvaluation", namespace, "dpo-gate"), what="evaluation")
    assert evaluation["spec"]["baseline"] == {"modelDeploymentRef": {"name": "serving"}}  # what it would replace

    kube.finish_job(namespace, evaluation_job(kube, namespace, "dpo-gate"), succeeded=True,
                    message=evaluation_result("Failed", -0.15, -0.3, -0.02))
    done = kube.wait_status("DPOTrainingJob", namespace, "dpo",
                            lambda s: (s.get("promotion") or {}).get("step") == "NotPromoted", timeout=30,
                            what="not promoted")
    status = done["status"]
    assert status["phase"] == "Succeeded" and status["reason"] == "NotPromoted"  # training itself succeeded
    condition = conditions_of(done)["Promoted"]
    assert condition["status"] == "False" and condition["reason"] == "NotPromoted"
    assert "verdict Failed" in condition["message"] and "mean difference -0.1500" in condition["message"]
    assert "95% interval -0.3000 to -0.0200" in condition["message"]
    assert status["promotion"]["difference"]["mean"] == -0.15 and "deploymentName" not in status
    wait_for(lambda: not kube.exists("ModelDeployment", namespace, "dpo-candidate"), what="candidate removed")
    after = kube.get("ModelDeployment", namespace, "serving")
    assert after["spec"] == before["spec"] and after["metadata"]["generation"] == before["metadata"]["generation"]
    assert not kube.exists("ModelDeployment", namespace, "dpo")
    assert ("Warning", "NotPromoted") in wait_for(lambda: events_for(kube, namespace, "dpo") or None, what="events")

    # a refused model is served by nobody: a ModelDeployment that names the job fails with the reason
    kube.create("ModelDeployment", namespace, "sneaky", {"model": {"trainingJobRef": {"name": "dpo"}}, "port": nim.port})
    refused = kube.wait_phase("ModelDeployment", namespace, "sneaky", "Failed")
    assert conditions_of(refused)["Failed"]["reason"] == "ModelUnavailable"
    assert "was not promoted" in refused["status"]["message"]


def test_a_passing_verdict_switches_the_replaced_deployment(kube: Kube, namespace: str, operator: None,
                                                            nim: FakeNim) -> None:
    kube.create("ModelDeployment", namespace, "serving", {
        "model": {"explicit": {"name": "meta/llama-3.2-1b-instruct", "pvc": {"claimName": "models", "path": "/llama"}}},
        "servedModelName": "dpo", "port": nim.port, "readinessTimeoutSeconds": 60})
    serve(kube, namespace, "serving")
    train(kube, namespace, gated(nim.port, replaces={"name": "serving"}, evaluation={}))
    serve(kube, namespace, "dpo-candidate")
    kube.finish_job(namespace, evaluation_job(kube, namespace, "dpo-gate"), succeeded=True,
                    message=evaluation_result("Passed", 0.3, 0.05, 0.5))
    done = kube.wait_phase("DPOTrainingJob", namespace, "dpo", "Succeeded", timeout=30)
    assert done["status"]["deploymentName"] == "serving" and done["status"]["promotion"]["target"] == "serving"
    switched = kube.get("ModelDeployment", namespace, "serving")
    assert switched["spec"]["model"] == {"trainingJobRef": {"name": "dpo"}}
    assert switched["spec"]["servedModelName"] == "dpo"  # clients keep their model name
    assert not kube.exists("ModelDeployment", namespace, "dpo")


def test_a_failed_evaluation_promotes_nothing(kube: Kube, namespace: str, operator: None, nim: FakeNim) -> None:
    train(kube, namespace, gated(nim.port))
    serve(kube, namespace, "dpo-candidate")
    kube.finish_job(namespace, evaluation_job(kube, namespace, "dpo-gate"), succeeded=False,
                    message=json.dumps({"error": "the candidate endpoint failed mid-run"}))
    done = kube.wait_status("DPOTrainingJob", namespace, "dpo",
                            lambda s: (s.get("promotion") or {}).get("step") == "NotPromoted", timeout=60,
                            what="not promoted")
    assert "DPOEvaluation dpo-gate ended Failed" in done["status"]["message"]
    assert not kube.exists("ModelDeployment", namespace, "dpo")


def test_a_gate_without_a_gate_is_an_invalid_spec(kube: Kube, namespace: str, operator: None) -> None:
    spec = gated(8000)
    spec["deployOnCompletion"]["promotion"]["evaluation"].pop("gate")
    kube.create("DPOTrainingJob", namespace, "dpo", spec)
    failed = kube.wait_phase("DPOTrainingJob", namespace, "dpo", "Failed")
    condition = conditions_of(failed)["Failed"]
    assert condition["reason"] == "InvalidSpec" and "promotion.evaluation.gate is required" in condition["message"]
    assert kube.job(namespace, "dpo-train") is None  # refused before anything ran


def test_a_restart_during_the_gate_creates_no_second_candidate_or_evaluation(kube: Kube, namespace: str,
                                                                             nim: FakeNim) -> None:
    kube.require_emulated()  # runs its own operator
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    with KopfRunner(args, timeout=60):  # down once the candidate is named, before it serves
        train(kube, namespace, gated(nim.port))
        kube.wait_status("DPOTrainingJob", namespace, "dpo",
                         lambda s: (s.get("promotion") or {}).get("step") == "ServingCandidate", what="candidate named")
    with KopfRunner(args, timeout=60):  # back: the same candidate serves; down again while it is evaluated
        serve(kube, namespace, "dpo-candidate")
        wait_for(lambda: kube.exists("DPOEvaluation", namespace, "dpo-gate"), what="evaluation")
        kube.wait_status("DPOTrainingJob", namespace, "dpo", lambda s: s["promotion"]["step"] == "Evaluating",
                         what="evaluating")
        job = evaluation_job(kube, namespace, "dpo-gate")
        serving = kube.custom.list_namespaced_custom_object("dpo.ai", "v1alpha1", namespace, "modeldeployments")
        assert [d["metadata"]["name"] for d in serving["items"]] == ["dpo-candidate"]
    with KopfRunner(args, timeout=60):  # the operator comes back in the middle of the gate
        kube.finish_job(namespace, job, succeeded=True, message=evaluation_result("Passed", 0.2, 0.01, 0.4))
        done = kube.wait_phase("DPOTrainingJob", namespace, "dpo", "Succeeded", timeout=30)
    assert done["status"]["promotion"]["step"] == "Promoted"
    evaluations = kube.custom.list_namespaced_custom_object("dpo.ai", "v1alpha1", namespace, "dpoevaluations")["items"]
    assert [e["metadata"]["name"] for e in evaluations] == ["dpo-gate"]
    assert len(kube.jobs(namespace, "dpo.ai/dpoevaluation=dpo-gate")) == 1
    deployments = kube.custom.list_namespaced_custom_object("dpo.ai", "v1alpha1", namespace, "modeldeployments")["items"]
    assert sorted(d["metadata"]["name"] for d in deployments if not d["metadata"].get("deletionTimestamp")) == ["dpo"]


def test_a_gate_with_no_baseline_to_be_had_is_refused_before_training(kube: Kube, namespace: str,
                                                                      operator: None) -> None:
    spec = gated(8000, evaluation={})  # no baseline named, nothing replaced: the base model would be served...
    spec["model"] = {"name": "tiny", "hub": {"endpoint": "http://hub.example/v1/hf", "repoId": "ns/tiny"}}
    kube.create("DPOTrainingJob", namespace, "dpo", spec)  # ...but a hub model cannot be
    failed = kube.wait_phase("DPOTrainingJob", namespace, "dpo", "Failed")
    condition = conditions_of(failed)["Failed"]
    assert condition["reason"] == "InvalidSpec" and "promotion.replaces" in condition["message"]
    assert kube.job(namespace, "dpo-train") is None


def test_a_customizer_adapter_is_evaluated_in_the_running_base_nim_and_promoted(kube: Kube, namespace: str,
                                                                                operator: None) -> None:
    """The customizer backend: the LoRA adapter candidate is served by the base model's NIM that already runs in
    NeMo (loaded from the Entity Store, nothing new deployed), evaluated against that base model, promoted."""
    with FakeNemo() as nemo:
        nemo.add_deployment("team-a", "llama-base", "meta/llama-3.2-1b-instruct")
        base_url = f"{nemo.url}/nim/team-a/llama-base/v1"
        spec = customizer_training(nemo, "lora")
        spec["deployOnCompletion"]["promotion"] = {"evaluation": {
            "workflow": {"name": "tictactoe"}, "gate": GATE,
            "baseline": {"baseUrl": base_url, "model": "meta/llama-3.2-1b-instruct"}}}
        kube.create("DPOTrainingJob", namespace, "tuned", spec)
        candidate = kube.wait_phase("ModelDeployment", namespace, "tuned-candidate", "Ready", timeout=60)
        assert candidate["status"]["remoteDeployment"] == "llama-base"  # the adapter went into the running NIM
        adapter = kube.get("DPOTrainingJob", namespace, "tuned")["status"]["outputModel"]
        assert candidate["status"]["servedModelName"] == adapter
        evaluation = wait_for(lambda: kube.exists("DPOEvaluation", namespace, "tuned-gate")
                              and kube.get("DPOEvaluation", namespace, "tuned-gate"), what="evaluation")
        assert evaluation["spec"]["candidate"] == {"modelDeploymentRef": {"name": "tuned-candidate"}}
        kube.finish_job(namespace, evaluation_job(kube, namespace, "tuned-gate"), succeeded=True,
                        message=evaluation_result("Passed", 0.2, 0.05, 0.35))
        done = kube.wait_phase("DPOTrainingJob", namespace, "tuned", "Succeeded", timeout=30)
        assert conditions_of(done)["Promoted"]["status"] == "True"
        ready = kube.wait_phase("ModelDeployment", namespace, "tuned", "Ready", timeout=30)
        assert ready["status"]["servedModelName"] == adapter
        assert sorted(nemo.deployments) == ["team-a/llama-base"]  # no NIM was deployed for the gate


def test_a_candidate_that_never_serves_is_not_promoted_and_removed(kube: Kube, namespace: str, operator: None,
                                                                   nim: FakeNim) -> None:
    spec = gated(nim.port)
    spec["deployOnCompletion"]["readinessTimeoutSeconds"] = 10
    train(kube, namespace, spec)
    wait_for(lambda: kube.deployment(namespace, "dpo-candidate"), what="candidate NIM")
    kube.roll_out(namespace, "dpo-candidate", available=False)  # e.g. no GPU for it: never available
    done = kube.wait_status("DPOTrainingJob", namespace, "dpo",
                            lambda s: (s.get("promotion") or {}).get("step") == "NotPromoted", timeout=60,
                            what="not promoted")
    assert "ModelDeployment dpo-candidate (candidate) cannot serve" in done["status"]["message"]
    assert "ReadinessTimeout" in done["status"]["message"]
    wait_for(lambda: not kube.exists("ModelDeployment", namespace, "dpo-candidate"), what="candidate removed")
    assert not kube.exists("DPOEvaluation", namespace, "dpo-gate")  # nothing to evaluate
    assert not kube.exists("ModelDeployment", namespace, "dpo")
