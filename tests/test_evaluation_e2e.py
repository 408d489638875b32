"""DPOEvaluation on the emulated cluster with the real operator: the evaluation pod runs through the local executor
against policy stand-ins, a better and a worse endpoint give the expected verdicts, and bad input ends in a clear
condition."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kubehelpers import Kube

pytestmark = pytest.mark.e2e

COLLECTION = {"workflow": {"name": "tictactoe", "numExamples": 40}, "seed": 42, "suspend": True,
              "llm": {"baseUrl": "http://nim.example:8000/v1", "model": "m"},
              "output": {"pvc": {"claimName": "dpo-data", "path": "/datasets/ttt"}}}


def evaluation(candidate: Any, baseline: Any, /, **overrides: Any) -> dict[str, Any]:
    spec = {"workflow": {"name": "tictactoe", "numExamples": 60}, "seed": 5,
            "candidate": {"baseUrl": candidate.url, "model": candidate.model},
            "baseline": {"baseUrl": baseline.url, "model": baseline.model},
            "heldOut": {"collectionRef": {"name": "pairs"}}, "maxExamples": 30,
            "gate": {"minImprovement": 0.05, "confidence": 0.9}, "bootstrapResamples": 1000,
            "sampling": {"startupTimeoutSeconds": 10}, "output": {"claimName": "dpo-data", "path": "/evals"}}
    spec.update(overrides)
    return {key: value for key, value in spec.items() if value is not None}


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


def test_a_better_endpoint_passes_the_gate_and_a_worse_one_does_not(kube: Kube, namespace: str, operator: None,
                                                                    tmp_path: Path) -> None:
    kube.require_emulated()  # runs a kubelet stand-in
    from dpo_operator.collect import tictactoe as ttt
    from dpo_operator.embedded.executor import LocalExecutor
    from dpo_operator.embedded.policy_server import PolicyServer

    kube.claims(namespace, "dpo-data")
    kube.create("DPOCollection", namespace, "pairs", COLLECTION)  # suspended: only its examples matter here
    with PolicyServer(model="toy/trained", skill=1.0, noise=0.0, seed=1) as good, \
            PolicyServer(model="toy/base", skill=0.1, noise=0.3, seed=2) as bad, \
            LocalExecutor(kube.api, tmp_path, namespace) as executor:
        kube.create("DPOEvaluation", namespace, "better", evaluation(good, bad))
        kube.create("DPOEvaluation", namespace, "worse", evaluation(bad, good, output={"claimName": "dpo-data",
                                                                                      "path": "/evals/worse"}))
        passed = kube.wait_phase("DPOEvaluation", namespace, "better", "Succeeded", timeout=90)
        refused = kube.wait_phase("DPOEvaluation", namespace, "worse", "Succeeded", timeout=90)
    status = passed["status"]
    assert status["verdict"] == "Passed", status
    assert status["reason"] == "Evaluated" and "verdict Passed" in status["message"]
    assert conditions(passed)["GatePassed"]["status"] == "True"
    assert conditions(passed)["GatePassed"]["reason"] == "GatePassed"
    assert status["candidate"]["model"] == "toy/trained" and status["candidate"]["count"] == 30
    assert status["baseline"]["invalidAnswers"] > 0 and status["candidate"]["failures"] == 0
    difference = status["difference"]
    assert difference["method"] == "pairedBootstrap" and difference["resamples"] == 1000 and difference["seed"] == 5
    assert difference["lower"] > 0.05 and difference["pairs"] == 30 and difference["confidence"] == 0.9
    assert difference["mean"] == pytest.approx(status["candidate"]["mean"] - status["baseline"]["mean"], abs=1e-5)
    outcomes = status["outcomes"]
    assert outcomes["wins"] + outcomes["ties"] + outcomes["losses"] == 30 and outcomes["wins"] > outcomes["losses"]
    # held out: the positions the collection played (40, seed 42) are not among the 30 evaluated
    held = status["heldOut"]
    assert held["pool"] == 60 and held["evaluated"] == 30 and held["excluded"] > 0
    assert "DPOCollection pairs played (tictactoe, 40 examples, seed 42)" in held["description"]
    assert status["resultPath"] == "pvc://dpo-data/evals/evaluation.json"
    document = json.loads((executor.pvc_dir("dpo-data") / "evals" / "evaluation.json").read_text())
    training = {e.payload for e in ttt.TicTacToeWorkflow({}).examples(40, 42)}
    pool = {e.example_id: e.payload for e in ttt.TicTacToeWorkflow({}).examples(60, 5)}
    assert len(document["examples"]) == 30
    assert not any(pool[row["id"]] in training for row in document["examples"])
    assert sum(r["candidate"] for r in document["examples"]) / 30 == pytest.approx(status["candidate"]["mean"], abs=1e-5)

    other = refused["status"]
    assert other["verdict"] == "Failed" and conditions(refused)["GatePassed"]["status"] == "False"
    assert conditions(refused)["GatePassed"]["reason"] == "GateFailed"
    assert other["difference"]["mean"] == pytest.approx(-difference["mean"], abs=1e-5)
    assert (other["outcomes"]["wins"], other["outcomes"]["losses"]) == (outcomes["losses"], outcomes["wins"])

    kube.require_emulated()  # server-side printing of the CRD's columns, as kube-apiserver does it
    response = httpx.get(f"{kube.api.configuration.host}/apis/dpo.ai/v1alpha1/namespaces/{namespace}/dpoevaluations",
                         headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    table = response.raise_for_status().json()
    columns = [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0]
    assert columns == ["Name", "Phase", "Candidate", "Baseline", "Diff", "Verdict", "Age"]
    rows = {row["cells"][0]: dict(zip(columns, row["cells"], strict=False)) for row in table["rows"]}
    assert rows["better"]["Verdict"] == "Passed" and rows["worse"]["Verdict"] == "Failed"
    assert rows["better"]["Diff"] == pytest.approx(difference["mean"])


def test_bad_input_ends_in_clear_conditions(kube: Kube, namespace: str, operator: None, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal sides, an endpoint that is down, a scorer returning NaN, no examples left after exclusion: each a
    condition, no crash."""
    kube.require_emulated()
    root = str(Path(__file__).resolve().parent.parent)  # the pod imports the NaN-scoring test workflow plugin
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    from dpo_operator.embedded.executor import LocalExecutor
    from dpo_operator.embedded.policy_server import PolicyServer

    kube.claims(namespace, "dpo-data")
    kube.create("DPOCollection", namespace, "pairs", {**COLLECTION, "workflow": {"name": "tictactoe",
                                                                                 "numExamples": 60}, "seed": 5})
    with PolicyServer(model="toy/trained", seed=1) as good, \
            LocalExecutor(kube.api, tmp_path, namespace):
        same = evaluation(good, good, heldOut=None)
        kube.create("DPOEvaluation", namespace, "same", same)
        down = evaluation(good, good, heldOut=None, baseline={"baseUrl": "http://127.0.0.1:9/v1", "model": "gone"},
                          sampling={"startupTimeoutSeconds": 0, "maxRetries": 0})
        kube.create("DPOEvaluation", namespace, "down", down)
        kube.create("DPOEvaluation", namespace, "none-left", evaluation(good, good, baseline={
            "baseUrl": good.url, "model": "toy/other"}))
        kube.create("DPOEvaluation", namespace, "nan", evaluation(good, good, heldOut=None, baseline={
            "baseUrl": good.url, "model": "toy/other"}, workflow={
            "name": "tests.test_evaluation_runner:nan_workflow", "numExamples": 30},
            sampling={"startupTimeoutSeconds": 0}))  # the stand-in lists one model; it answers for any
        invalid = kube.wait_phase("DPOEvaluation", namespace, "same", "Failed")
        nan = kube.wait_phase("DPOEvaluation", namespace, "nan", "Failed", timeout=90)
        failed = kube.wait_phase("DPOEvaluation", namespace, "down", "Failed", timeout=90)
        empty = kube.wait_phase("DPOEvaluation", namespace, "none-left", "Failed", timeout=90)
    assert invalid["status"]["reason"] == "InvalidSpec"
    assert "spec.baseline equals spec.candidate" in invalid["status"]["message"]
    assert kube.job(namespace, "same-eval") is None

    status = failed["status"]
    assert status["reason"] == "EndpointFailed" and status["verdict"] == "Inconclusive"
    assert status["baseline"]["failures"] == 30 and status["baseline"]["failuresByReason"] == {"endpointError": 30}
    assert "baseline: 30 of 30 examples have no score" in status["message"]
    assert status["candidate"]["count"] == 30  # the side that answered is still reported
    assert conditions(failed)["GatePassed"]["status"] == "False"
    assert conditions(failed)["GatePassed"]["reason"] == "Inconclusive"

    status = nan["status"]
    assert status["reason"] == "ScoreNotFinite" and status["verdict"] == "Inconclusive"
    assert status["candidate"]["failuresByReason"]["nonFiniteScore"] == status["candidate"]["failures"] > 0
    assert "the workflow scored an answer" in status["message"]

    assert empty["status"]["reason"] == "NoHeldOutExamples"
    assert "excluded 60 that DPOCollection pairs played" in empty["status"]["message"]
    assert empty["status"]["verdict"] == "Inconclusive"


def test_an_evaluation_waits_for_its_model_deployment(kube: Kube, namespace: str, operator: None) -> None:
    """A candidate served by a ModelDeployment that is not Ready yet: Pending, no Job, until it is."""
    kube.create("DPOEvaluation", namespace, "waiting", {
        "candidate": {"modelDeploymentRef": {"name": "trained"}},
        "baseline": {"baseUrl": "http://nim.example:8000/v1", "model": "base"}})
    pending = kube.wait_status("DPOEvaluation", namespace, "waiting",
                               lambda s: s.get("reason") == "WaitingForEndpoint")
    assert pending["status"]["phase"] == "Pending"
    assert "candidate: ModelDeployment trained does not exist (yet)" in pending["status"]["message"]
    assert kube.job(namespace, "waiting-eval") is None


def test_a_nat_workflow_is_evaluated_in_a_local_pod_through_its_evaluator(
        kube: Kube, namespace: str, operator: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The NAT test workflow (found through its entry point, as an installed package would be) runs unchanged in the
    evaluation pod against each side; the config's reward evaluator scores every item."""
    kube.require_emulated()  # runs a kubelet stand-in
    pytest.importorskip("nat.plugins.eval.runtime.evaluate", reason="needs the [nat] extra")
    from dpo_operator.embedded.executor import LocalExecutor
    from dpo_operator.embedded.policy_server import PolicyServer
    from tests.test_evaluation_nat import BOARDS, PLUGIN

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN), os.environ.get("PYTHONPATH")])))
    with PolicyServer(model="toy/trained", skill=1.0, noise=0.0, seed=1) as good, \
            PolicyServer(model="toy/base", skill=0.0, noise=0.6, seed=2) as bad, \
            LocalExecutor(kube.api, tmp_path, namespace):
        spec = {"workflow": {"nat": {"configFile": str(PLUGIN / "ask_config.yml")}},
                "candidate": {"baseUrl": good.url, "model": good.model},
                "baseline": {"baseUrl": bad.url, "model": bad.model},
                "gate": {"minImprovement": 0.0}, "bootstrapResamples": 500}
        kube.create("DPOEvaluation", namespace, "nat", spec)
        done = kube.wait_phase("DPOEvaluation", namespace, "nat", "Succeeded", timeout=120)
        assert good.requests == bad.requests == len(BOARDS)
    status = done["status"]
    assert status["verdict"] == "Passed", status
    assert status["candidate"]["count"] == status["baseline"]["count"] == len(BOARDS)
    assert status["candidate"]["mean"] > status["baseline"]["mean"]
    assert status["heldOut"]["description"].endswith("nothing excluded (no spec.heldOut); evaluated 16")
    assert "resultPath" not in status  # no spec.output: the figures are in status only


def test_an_endpoint_with_a_reference_and_a_url_is_refused_at_admission(kube: Kube, namespace: str) -> None:
    from kubernetes.client.exceptions import ApiException

    both = {"candidate": {"modelDeploymentRef": {"name": "trained"}, "baseUrl": "http://a/v1", "model": "m"},
            "baseline": {"baseUrl": "http://b/v1"}}
    with pytest.raises(ApiException) as refused:
        kube.create("DPOEvaluation", namespace, "both", both)
    assert refused.value.status == 422
    assert "spec.candidate: Invalid value" in refused.value.body
    assert "set exactly one of 'modelDeploymentRef' or 'baseUrl'" in refused.value.body
    assert "'model' is required with 'baseUrl'" in refused.value.body


@pytest.fixture()
def pods_reach_services_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator and the local executor's pods run on this machine: both reach a NIM Service on localhost."""
    monkeypatch.setenv("DPO_PROBE_URL_TEMPLATE", "http://127.0.0.1:{port}")
    monkeypatch.setenv("DPO_WORKLOAD_ENDPOINT_URL_TEMPLATE", "http://127.0.0.1:{port}")


@pytest.mark.workload
def test_a_model_deployment_is_evaluated_once_ready(pods_reach_services_locally: None, kube: Kube, namespace: str,
                                                    operator: None, tmp_path: Path) -> None:
    """The candidate is a ModelDeployment served by the NIM stand-in (an untrained tiny model): the evaluation waits
    for it to be Ready, calls it where its Service is, and a good baseline beats it."""
    kube.require_emulated()  # runs a kubelet stand-in
    pytest.importorskip("transformers")
    import socket

    from dpo_operator.embedded.executor import LocalExecutor
    from dpo_operator.embedded.policy_server import PolicyServer
    from dpo_operator.embedded.tiny_model import CHAT_TEMPLATE, build_tiny_model

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kube.claims(namespace, "models")
    with PolicyServer(model="toy/expert", skill=1.0, noise=0.0, seed=1) as expert, \
            LocalExecutor(kube.api, tmp_path, namespace, serve_deployments=True) as executor:
        build_tiny_model(executor.pvc_dir("models") / "tiny", chat_template=CHAT_TEMPLATE)
        kube.create("DPOEvaluation", namespace, "served", {
            "workflow": {"name": "tictactoe", "numExamples": 12},
            "candidate": {"modelDeploymentRef": {"name": "tiny"}},
            "baseline": {"baseUrl": expert.url, "model": expert.model},
            "gate": {"minImprovement": 0.0}, "bootstrapResamples": 300, "sampling": {"maxTokens": 4}})
        kube.wait_status("DPOEvaluation", namespace, "served", lambda s: s.get("reason") == "WaitingForEndpoint")
        kube.create("ModelDeployment", namespace, "tiny", {
            "model": {"explicit": {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}}},
            "port": port, "readinessTimeoutSeconds": 120})
        done = kube.wait_phase("DPOEvaluation", namespace, "served", "Succeeded", timeout=180)
    status = done["status"]
    assert status["candidate"]["endpoint"] == f"http://127.0.0.1:{port}/v1"
    assert status["candidate"]["model"] == "tiny" and status["candidate"]["count"] == 12
    env = {e["name"]: e.get("value") for e in
           kube.job(namespace, "served-eval")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["DPO_EVALUATION_ENDPOINTS"])["candidate"] == {"baseUrl": f"http://127.0.0.1:{port}/v1",
                                                                         "model": "tiny"}
    assert status["verdict"] == "Failed" and status["difference"]["mean"] < 0  # an untrained model loses
