"""DPOLoop against the emulated API server with the real operator: the test plays the kubelet and the Deployment
controller (collection, data-check, training and evaluation Jobs finish with the results their pods would report;
NIM Deployments roll out behind a fake NIM), so every round's children are the real kinds' handlers at work.
tests/test_loop_demo.py runs a loop with real pods (collector, trainer, NIM stand-in, evaluation)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.nim import FakeNim
from tests.kubehelpers import Kube, conditions_of, wait_for
from tests.test_collection_e2e import RESULT as COLLECT_RESULT
from tests.test_promotion_e2e import GATE, evaluation_job, evaluation_result, serve
from tests.test_training_e2e import NO_CHECK, TRAIN_RESULT

pytestmark = pytest.mark.e2e

LOOP = "lp"
BASE = {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}}
DIGEST = "ab" * 32


@pytest.fixture(autouse=True)
def probe_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator runs outside the cluster here: it reaches a Service's port on localhost (the fake NIM)."""
    monkeypatch.setenv("DPO_PROBE_URL_TEMPLATE", "http://127.0.0.1:{port}")


@pytest.fixture()
def nim() -> Iterator[FakeNim]:
    with FakeNim(models=["tiny", *(f"{LOOP}-r{n}-train" for n in range(1, 5))]) as server:
        yield server


def loop_spec(port: int, max_rounds: int = 2, check: bool = False, **extra: Any) -> dict[str, Any]:
    """A loop on the tic-tac-toe workflow: all-weights rounds from the tiny base model, served by a NIM the loop
    creates (candidates on the same fake NIM)."""
    serving = {"port": port, "readinessTimeoutSeconds": 60}
    return {
        "maxRounds": max_rounds,
        "serving": {"name": "serving", "template": serving},
        "collection": {"workflow": {"name": "tictactoe", "numExamples": 8}, "llm": {"temperature": 1.0},
                       "output": {"claimName": "dpo-data", "path": "/loop"}},
        "training": {"model": BASE, "dataset": {} if check else NO_CHECK,
                     "hyperparameters": {"epochs": 1, "batchSize": 4, "learningRate": 0.001,
                                         "finetuningType": "all_weights"},
                     "local": {"gpusPerNode": 1, "output": {"claimName": "dpo-data", "path": "/models"}}},
        "evaluation": {"workflow": {"name": "tictactoe", "numExamples": 40}, "maxExamples": 30, "gate": GATE},
        **extra}


def loop_status(kube: Kube, namespace: str) -> dict[str, Any]:
    return kube.get("DPOLoop", namespace, LOOP).get("status") or {}


def wait_round_phase(kube: Kube, namespace: str, number: int, phase: str) -> dict[str, Any]:
    return kube.wait_status("DPOLoop", namespace, LOOP, lambda s: s.get("currentRound") == number
                            and s.get("roundPhase") == phase, what=f"round {number} {phase}", timeout=30)


def collect(kube: Kube, namespace: str, number: int) -> None:
    """Play the round's collection pod: it wrote 10 pairs."""
    job = f"{LOOP}-r{number}-collect-collect"
    wait_for(lambda: kube.job(namespace, job), what=f"collection job of round {number}", timeout=30)
    kube.finish_job(namespace, job, succeeded=True, message=json.dumps(
        {**COLLECT_RESULT, "datasetLocation": f"pvc://dpo-data/loop/{LOOP}-r{number}-collect"}))


def train(kube: Kube, namespace: str, number: int, check: bool = False) -> None:
    """Play the round's data check (when on) and trainer pods."""
    name = f"{LOOP}-r{number}-train"
    if check:
        wait_for(lambda: kube.job(namespace, f"{name}-datacheck"), what="data check job", timeout=30)
        kube.finish_job(namespace, f"{name}-datacheck", succeeded=True, message=json.dumps(
            {"passed": True, "pairs": {"training": 8, "validation": 2}, "format": "nemo", "trainingSha256": DIGEST}))
    wait_for(lambda: kube.job(namespace, f"{name}-train"), what=f"training job of round {number}", timeout=30)
    kube.finish_job(namespace, f"{name}-train", succeeded=True, message=json.dumps(TRAIN_RESULT))


def gate(kube: Kube, namespace: str, number: int, verdict: str, difference: float) -> None:
    """Serve the round's candidate and play its evaluation pod."""
    name = f"{LOOP}-r{number}-train"
    serve(kube, namespace, f"{name}-candidate")
    wait_for(lambda: kube.exists("DPOEvaluation", namespace, f"{name}-gate"), what="gate evaluation", timeout=30)
    lower = difference - 0.1 if verdict == "Passed" else difference - 0.3
    kube.finish_job(namespace, evaluation_job(kube, namespace, f"{name}-gate"), succeeded=True,
                    message=evaluation_result(verdict, difference, lower, difference + 0.1))


def play_round(kube: Kube, namespace: str, number: int, verdict: str = "Passed", difference: float = 0.2,
               check: bool = False) -> None:
    serve(kube, namespace, "serving")  # the current policy serves (again, after a promotion)
    collect(kube, namespace, number)
    train(kube, namespace, number, check)
    gate(kube, namespace, number, verdict, difference)


def names(kube: Kube, namespace: str, plural: str) -> list[str]:
    items = kube.custom.list_namespaced_custom_object("dpo.ai", "v1alpha1", namespace, plural)["items"]
    return sorted(i["metadata"]["name"] for i in items if not i["metadata"].get("deletionTimestamp"))


def test_two_rounds_promote_record_their_lineage_and_a_raised_max_continues(
        kube: Kube, namespace: str, operator: None, nim: FakeNim) -> None:
    kube.create("DPOLoop", namespace, LOOP, loop_spec(nim.port, check=True))
    serving = wait_for(lambda: kube.exists("ModelDeployment", namespace, "serving")
                       and kube.get("ModelDeployment", namespace, "serving"), what="serving deployment")
    assert serving["spec"]["model"] == {"explicit": BASE}  # round 0 serves the base model
    assert not serving["metadata"].get("ownerReferences")  # never owned by the loop: it outlives it
    assert serving["metadata"]["labels"]["dpo.ai/loop"] == LOOP
    wait_round_phase(kube, namespace, 1, "Serving")
    assert not kube.exists("DPOCollection", namespace, f"{LOOP}-r1-collect")  # sampling waits for the policy

    play_round(kube, namespace, 1, check=True)
    collection = kube.get("DPOCollection", namespace, f"{LOOP}-r1-collect")
    assert collection["spec"]["llm"]["baseUrl"].endswith(f":{nim.port}/v1")  # sampled from the serving NIM
    assert collection["spec"]["llm"]["model"] == "tiny"
    assert collection["spec"]["output"] == {"pvc": {"claimName": "dpo-data", "path": f"/loop/{LOOP}-r1-collect"}}
    assert collection["metadata"]["labels"]["dpo.ai/round"] == "1"
    job = kube.get("DPOTrainingJob", namespace, f"{LOOP}-r1-train")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "DPOLoop"
    assert job["spec"]["dataset"]["collectionRef"] == {"name": f"{LOOP}-r1-collect"}
    assert job["spec"]["deployOnCompletion"]["promotion"]["replaces"] == {"name": "serving"}
    assert job["spec"]["model"] == BASE and "referenceModel" not in job["spec"]
    wait_round_phase(kube, namespace, 2, "Serving")
    promoted = kube.get("ModelDeployment", namespace, "serving")
    assert promoted["spec"]["model"] == {"trainingJobRef": {"name": f"{LOOP}-r1-train"}}

    play_round(kube, namespace, 2, difference=0.1, check=True)
    round2 = kube.get("DPOTrainingJob", namespace, f"{LOOP}-r2-train")
    assert round2["spec"]["model"] == {"name": "tiny", "pvc": {"claimName": "dpo-data",
                                                               "path": f"/models/{LOOP}-r1-train/final"}}
    collection2 = kube.get("DPOCollection", namespace, f"{LOOP}-r2-collect")
    assert collection2["spec"]["llm"]["model"] == f"{LOOP}-r1-train"  # round 2 samples from round 1's policy
    assert collection2["spec"]["seed"] == collection["spec"]["seed"] + 1
    done = kube.wait_phase("DPOLoop", namespace, LOOP, "Succeeded", timeout=30)
    status = done["status"]
    assert status["stopReason"] == "MaxRounds" and status["lastVerdict"] == "Passed"
    assert status["servingModel"] == f"DPOTrainingJob {LOOP}-r2-train"
    first, second = status["rounds"]
    assert first["round"] == 1 and first["phase"] == "Done" and first["promoted"] is True
    assert first["collection"] == f"{LOOP}-r1-collect" and first["trainingJob"] == f"{LOOP}-r1-train"
    assert first["evaluation"] == f"{LOOP}-r1-train-gate" and first["sampledFrom"] == "tiny"
    assert first["datasetLocation"] == f"pvc://dpo-data/loop/{LOOP}-r1-collect" and first["pairs"] == 10
    assert first["datasetDigest"] == DIGEST
    assert first["startingModel"] == "base model tiny" and first["referenceModel"] == "base model tiny"
    assert first["trainedModel"] == f"pvc://dpo-data/models/{LOOP}-r1-train/final"
    assert first["finalLoss"] == pytest.approx(0.42)
    assert first["verdict"] == "Passed" and first["candidateMean"] == pytest.approx(0.4)
    assert first["baselineMean"] == pytest.approx(0.2)
    assert first["difference"]["mean"] == pytest.approx(0.2) and first["difference"]["lower"] == pytest.approx(0.1)
    assert first["startedAt"] <= first["finishedAt"] <= second["startedAt"]
    assert second["sampledFrom"] == f"DPOTrainingJob {LOOP}-r1-train"
    assert second["startingModel"] == f"pvc://dpo-data/models/{LOOP}-r1-train/final"
    assert second["referenceModel"] == f"DPOTrainingJob {LOOP}-r1-train"  # reference: previousRound
    assert second["difference"]["mean"] == pytest.approx(0.1) and second["promoted"] is True

    kube.patch_spec("DPOLoop", namespace, LOOP, {"maxRounds": 3})  # raised on a finished loop: it goes on
    wait_round_phase(kube, namespace, 3, "Serving")
    serve(kube, namespace, "serving")
    wait_round_phase(kube, namespace, 3, "Collecting")
    assert kube.get("DPOLoop", namespace, LOOP)["status"]["phase"] == "Running"
    assert names(kube, namespace, "dpocollections") == [f"{LOOP}-r{n}-collect" for n in (1, 2, 3)]

    kube.delete("DPOLoop", namespace, LOOP)  # the rounds go with it, the promoted policy stays served
    wait_for(lambda: not names(kube, namespace, "dpocollections") and not names(kube, namespace, "dpotrainingjobs"),
             what="the loop's children garbage-collected", timeout=30)
    assert kube.get("ModelDeployment", namespace, "serving")["spec"]["model"] == {
        "trainingJobRef": {"name": f"{LOOP}-r2-train"}}


def test_a_round_the_gate_refuses_stops_the_loop_and_serving_is_unchanged(
        kube: Kube, namespace: str, operator: None, nim: FakeNim) -> None:
    kube.create("DPOLoop", namespace, LOOP, loop_spec(nim.port, max_rounds=3))
    play_round(kube, namespace, 1, verdict="Failed", difference=-0.15)
    done = kube.wait_phase("DPOLoop", namespace, LOOP, "Succeeded", timeout=30)
    status = done["status"]
    assert status["stopReason"] == "NotPromoted" and status["lastVerdict"] == "Failed"
    assert status["servingModel"] == "tiny" and len(status["rounds"]) == 1
    refused = status["rounds"][0]
    assert refused["promoted"] is False and refused["verdict"] == "Failed"
    assert refused["difference"]["mean"] == pytest.approx(-0.15)
    assert "the gate refused" in conditions_of(done)["Succeeded"]["message"]
    assert kube.get("ModelDeployment", namespace, "serving")["spec"]["model"] == {"explicit": BASE}
    assert not kube.exists("DPOCollection", namespace, f"{LOOP}-r2-collect")
    wait_for(lambda: not kube.exists("ModelDeployment", namespace, f"{LOOP}-r1-train-candidate"),
             what="candidate removed")


def test_a_failed_collection_fails_the_loop_and_serving_is_untouched(kube: Kube, namespace: str, operator: None,
                                                                   nim: FakeNim) -> None:
    kube.create("DPOLoop", namespace, LOOP, loop_spec(nim.port))
    serve(kube, namespace, "serving")
    job = f"{LOOP}-r1-collect-collect"
    wait_for(lambda: kube.job(namespace, job), what="collection job", timeout=30)
    kube.finish_job(namespace, job, succeeded=False, message="")
    failed = kube.wait_phase("DPOLoop", namespace, LOOP, "Failed", timeout=30)
    assert failed["status"]["stopReason"] == "CollectionFailed"
    round1 = failed["status"]["rounds"][0]
    assert round1["failureReason"] == "CollectionFailed" and round1["promoted"] is False and round1["finishedAt"]
    assert f"DPOCollection {LOOP}-r1-collect ended Failed" in conditions_of(failed)["Failed"]["message"]
    assert not kube.exists("DPOTrainingJob", namespace, f"{LOOP}-r1-train")
    assert kube.get("ModelDeployment", namespace, "serving")["spec"]["model"] == {"explicit": BASE}


def test_an_operator_restart_in_each_round_phase_continues_without_a_second_child(
        kube: Kube, namespace: str, nim: FakeNim) -> None:
    kube.require_emulated()  # runs its own operator
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    with KopfRunner(args, timeout=60):  # down while the base model is being served
        kube.create("DPOLoop", namespace, LOOP, loop_spec(nim.port, max_rounds=1))
        wait_round_phase(kube, namespace, 1, "Serving")
    with KopfRunner(args, timeout=60):  # down while collecting
        serve(kube, namespace, "serving")
        wait_round_phase(kube, namespace, 1, "Collecting")
    with KopfRunner(args, timeout=60):  # down while training
        collect(kube, namespace, 1)
        wait_round_phase(kube, namespace, 1, "Training")
    with KopfRunner(args, timeout=60):  # down while the gate evaluates
        train(kube, namespace, 1)
        wait_round_phase(kube, namespace, 1, "Evaluating")
    with KopfRunner(args, timeout=60):  # back: the gate decides, the loop ends
        gate(kube, namespace, 1, "Passed", 0.2)
        done = kube.wait_phase("DPOLoop", namespace, LOOP, "Succeeded", timeout=30)
    assert done["status"]["stopReason"] == "MaxRounds" and done["status"]["rounds"][0]["promoted"] is True
    assert names(kube, namespace, "dpocollections") == [f"{LOOP}-r1-collect"]
    assert names(kube, namespace, "dpotrainingjobs") == [f"{LOOP}-r1-train"]
    assert names(kube, namespace, "dpoevaluations") == [f"{LOOP}-r1-train-gate"]
    assert len(kube.jobs(namespace, f"dpo.ai/dpocollection={LOOP}-r1-collect")) == 1
    assert len(kube.jobs(namespace, f"dpo.ai/dpotrainingjob={LOOP}-r1-train")) == 1
    assert names(kube, namespace, "modeldeployments") == ["serving"]


def test_suspend_holds_the_next_phase_and_resuming_goes_on(kube: Kube, namespace: str, operator: None,
                                                          nim: FakeNim) -> None:
    kube.create("DPOLoop", namespace, LOOP, loop_spec(nim.port, max_rounds=1, suspend=True))
    held = kube.wait_phase("DPOLoop", namespace, LOOP, "Suspended")
    assert conditions_of(held)["Suspended"]["status"] == "True"
    assert not kube.exists("ModelDeployment", namespace, "serving")  # nothing starts while suspended
    kube.patch_spec("DPOLoop", namespace, LOOP, {"suspend": False})
    serve(kube, namespace, "serving")
    wait_round_phase(kube, namespace, 1, "Collecting")
    kube.patch_spec("DPOLoop", namespace, LOOP, {"suspend": True})  # the running collection finishes...
    collect(kube, namespace, 1)
    kube.wait_status("DPOLoop", namespace, LOOP, lambda s: s.get("phase") == "Suspended"
                     and "suspended before training" in (s.get("message") or ""), what="held before training")
    assert kube.get("DPOCollection", namespace, f"{LOOP}-r1-collect")["status"]["phase"] == "Succeeded"
    assert not kube.exists("DPOTrainingJob", namespace, f"{LOOP}-r1-train")  # ...and training waits
    kube.patch_spec("DPOLoop", namespace, LOOP, {"suspend": False})
    wait_round_phase(kube, namespace, 1, "Training")
    assert kube.exists("DPOTrainingJob", namespace, f"{LOOP}-r1-train")


@pytest.mark.parametrize(("change", "field", "words"), [
    (lambda s: s.update(adapterInit="base"), "spec.adapterInit", "all_weights"),
    (lambda s: s["evaluation"].pop("gate"), "evaluation.gate", "is required"),
    (lambda s: s["training"]["local"].pop("output"), "spec.training.local.output", "required"),
    (lambda s: s["training"].update(workloadPriorityClassName="high"), "spec.training",
     "workloadPriorityClassName needs queueName"),  # a rule of the DPOTrainingJob kind, checked on the round's job
    (lambda s: s["training"].update(backend="customizer"), "spec.training.backend", "local backend"),
])
def test_bad_input_fails_naming_the_field_before_anything_runs(kube: Kube, namespace: str, operator: None,
                                                               change: Any, field: str, words: str) -> None:
    spec = copy.deepcopy(loop_spec(8000))
    change(spec)
    kube.create("DPOLoop", namespace, LOOP, spec)
    failed = kube.wait_phase("DPOLoop", namespace, LOOP, "Failed")
    condition = conditions_of(failed)["Failed"]
    assert condition["reason"] == "InvalidSpec" and field in condition["message"] and words in condition["message"]
    assert not kube.exists("ModelDeployment", namespace, "serving")


def test_a_missing_serving_deployment_without_a_template_is_awaited(kube: Kube, namespace: str,
                                                                    operator: None, nim: FakeNim) -> None:
    spec = loop_spec(nim.port, max_rounds=1)
    spec["serving"] = {"name": "mine"}
    kube.create("DPOLoop", namespace, LOOP, spec)
    waiting = kube.wait_phase("DPOLoop", namespace, LOOP, "Pending")
    assert conditions_of(waiting)["Progressing"]["reason"] == "WaitingForServing"
    assert "spec.serving.name" in waiting["status"]["message"]
    kube.create("ModelDeployment", namespace, "mine", {"model": {"explicit": BASE}, "port": nim.port,
                                                       "readinessTimeoutSeconds": 60})  # adopted once it exists
    serve(kube, namespace, "mine")
    wait_round_phase(kube, namespace, 1, "Collecting")
    assert not kube.get("ModelDeployment", namespace, "mine")["metadata"].get("ownerReferences")


def test_a_child_created_just_before_a_crash_is_adopted_not_made_twice(kube: Kube, namespace: str,
                                                                       nim: FakeNim) -> None:
    """The worst moment: the round's DPOCollection was created, the status saying so was not written yet."""
    kube.require_emulated()  # runs its own operator
    from kopf.testing import KopfRunner

    from dpo_operator.api.loop import DPOLoopSpec
    from dpo_operator.render import loop as render

    body = kube.create("DPOLoop", namespace, LOOP, loop_spec(nim.port, max_rounds=1))
    kube.custom.patch_namespaced_custom_object_status("dpo.ai", "v1alpha1", namespace, "dpoloops", LOOP, {"status": {
        "phase": "Running", "currentRound": 1, "roundPhase": "Serving", "rounds": [{
            "round": 1, "phase": "Serving", "collection": f"{LOOP}-r1-collect", "trainingJob": f"{LOOP}-r1-train",
            "evaluation": f"{LOOP}-r1-train-gate", "startedAt": "2026-01-01T00:00:00Z"}]}})
    spec = DPOLoopSpec.model_validate(body["spec"])
    made = kube.custom.create_namespaced_custom_object("dpo.ai", "v1alpha1", namespace, "dpocollections", render.collection(
        body, spec, 1, f"http://127.0.0.1:{nim.port}/v1", "tiny"))
    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    with KopfRunner(args, timeout=60):
        serve(kube, namespace, "serving")
        status = wait_round_phase(kube, namespace, 1, "Collecting")["status"]
        assert status["rounds"][0]["sampledFrom"] == "tiny"
        collect(kube, namespace, 1)
        wait_round_phase(kube, namespace, 1, "Training")
    assert names(kube, namespace, "dpocollections") == [f"{LOOP}-r1-collect"]
    assert kube.get("DPOCollection", namespace, f"{LOOP}-r1-collect")["metadata"]["uid"] == made["metadata"]["uid"]
    assert names(kube, namespace, "dpotrainingjobs") == [f"{LOOP}-r1-train"]
