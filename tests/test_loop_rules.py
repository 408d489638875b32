"""A DPOLoop's pure rules: the stop rule over finished rounds, which policy a round starts from and against which
reference, and the specs refused before anything runs (each naming its field)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dpo_operator.api.common import PvcLocation
from dpo_operator.api.evaluation import DifferenceSummary
from dpo_operator.api.loop import DPOLoopSpec, RoundStatus
from dpo_operator.handlers.loop_rules import current_policy, record_training, stop_reason
from dpo_operator.render import loop as render
from dpo_operator.runtime.errors import InvalidSpec

BASE = {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}}
SPEC: dict[str, Any] = {
    "serving": {"name": "serving", "template": {"port": 8000}},
    "collection": {"workflow": {"name": "tictactoe"}, "output": {"claimName": "dpo-data", "path": "/loop"}},
    "training": {"model": BASE, "hyperparameters": {"finetuningType": "lora"},
                 "local": {"output": {"claimName": "dpo-data", "path": "/models"}}},
    "evaluation": {"workflow": {"name": "tictactoe"}, "gate": {}},
}
LOOP = {"metadata": {"name": "lp", "namespace": "ns", "uid": "u1"}}


def spec(**changes: Any) -> DPOLoopSpec:
    data = copy.deepcopy(SPEC)
    for key, value in changes.items():
        data[key] = value
    return DPOLoopSpec.model_validate(data)


def done(number: int, promoted: bool, mean: float | None = None, failure: str | None = None) -> RoundStatus:
    return RoundStatus(round=number, phase="Done", promoted=promoted, failure_reason=failure,
                       verdict="Passed" if promoted else "Failed", training_job=f"lp-r{number}-train",
                       trained_model=f"pvc://dpo-data/models/lp-r{number}-train/final",
                       difference=DifferenceSummary(mean=mean) if mean is not None else None)


def test_no_stop_before_a_round_finishes_or_while_rounds_are_left() -> None:
    assert stop_reason(spec(), []) is None
    assert stop_reason(spec(), [RoundStatus(round=1, phase="Training")]) is None
    assert stop_reason(spec(maxRounds=3), [done(1, True, 0.2), done(2, True, 0.1)]) is None


def test_max_rounds_stops_and_a_raised_max_goes_on() -> None:
    rounds = [done(1, True, 0.2), done(2, True, 0.1)]
    reason, message = stop_reason(spec(maxRounds=2), rounds) or ("", "")
    assert reason == "MaxRounds" and "raise spec.maxRounds" in message
    assert stop_reason(spec(maxRounds=3), rounds) is None


def test_a_refused_round_stops_unless_when_not_promoted_is_off() -> None:
    rounds = [done(1, True, 0.2), done(2, False, -0.1)]
    reason, message = stop_reason(spec(maxRounds=5), rounds) or ("", "")
    assert reason == "NotPromoted" and "round 2" in message and "verdict Failed" in message
    assert stop_reason(spec(maxRounds=5, stop={"whenNotPromoted": False}), rounds) is None


def test_min_improvement_sums_the_promoted_rounds_of_the_last_k() -> None:
    rule = {"whenNotPromoted": False, "minImprovement": 0.1, "lastRounds": 2}
    # 0.08 + (refused: counts 0) = 0.08 < 0.1
    reason, message = stop_reason(spec(maxRounds=9, stop=rule), [done(1, True, 0.3), done(2, True, 0.08),
                                                                 done(3, False, 0.5)]) or ("", "")
    assert reason == "BelowMinImprovement" and "+0.0800" in message and "minImprovement 0.1" in message
    assert stop_reason(spec(maxRounds=9, stop=rule), [done(1, True, 0.3), done(2, True, 0.08),
                                                      done(3, True, 0.05)]) is None  # 0.13 over the last 2
    assert stop_reason(spec(maxRounds=9, stop=rule), [done(1, True, 0.01)]) is None  # fewer than k rounds yet


def test_a_failed_round_stops_with_its_reason() -> None:
    failed = done(1, False, failure="TrainingFailed")
    failed.message = "DPOTrainingJob lp-r1-train ended Failed"
    reason, message = stop_reason(spec(stop={"whenNotPromoted": False}), [failed]) or ("", "")
    assert reason == "TrainingFailed" and "ended Failed" in message


def test_the_current_policy_is_the_newest_promoted_round() -> None:
    assert current_policy([]) == render.Policy()
    policy = current_policy([done(1, True), done(2, False), done(3, True), done(4, False)])
    assert policy.promoted_job == "lp-r3-train"
    assert policy.trained == PvcLocation(claim_name="dpo-data", path="/models/lp-r3-train/final")


@pytest.mark.parametrize(("changes", "model", "reference"), [
    ({}, {**BASE, "adapter": {"claimName": "dpo-data", "path": "/models/lp-r1-train/final"}}, None),
    ({"reference": "base"}, {**BASE, "adapter": {"claimName": "dpo-data", "path": "/models/lp-r1-train/final"}}, BASE),
    ({"adapterInit": "base", "reference": "base"}, BASE, BASE),
    ({"training": {**SPEC["training"], "hyperparameters": {"finetuningType": "all_weights"}}},
     {"name": "tiny", "pvc": {"claimName": "dpo-data", "path": "/models/lp-r1-train/final"}}, None),
    ({"training": {**SPEC["training"], "hyperparameters": {"finetuningType": "all_weights"}}, "reference": "base"},
     {"name": "tiny", "pvc": {"claimName": "dpo-data", "path": "/models/lp-r1-train/final"}}, BASE),
])
def test_a_round_after_a_promotion_starts_from_it_as_adapter_init_and_reference_say(
        changes: dict[str, Any], model: dict[str, Any], reference: dict[str, Any] | None) -> None:
    loop = spec(**changes)
    policy = current_policy([done(1, True)])
    job = render.training_job(LOOP, loop, 2, policy, {"port": 8001})["spec"]
    assert job["model"] == model and job.get("referenceModel") == reference
    first = render.training_job(LOOP, loop, 1, current_policy([]), {"port": 8001})["spec"]
    assert first["model"] == BASE and "referenceModel" not in first  # round 1: the base model is both


@pytest.mark.parametrize(("changes", "field"), [
    ({"adapterInit": "base"}, "spec.reference"),  # LoRA: base + previous adapter cannot be the reference
    ({"adapterInit": "base", "training": {**SPEC["training"], "hyperparameters": {"finetuningType": "all_weights"}},
      "reference": "base"}, "spec.adapterInit"),
    ({"training": {**SPEC["training"], "local": {}}}, "spec.training.local.output"),
    ({"training": {**SPEC["training"], "model": {"name": "org/tiny"}}}, "spec.serving.template"),
])
def test_specs_no_round_could_run_are_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec, match=field.replace(".", r"\.")):
        render.check(spec(**changes))


def test_the_gate_is_required() -> None:
    data = copy.deepcopy(SPEC)
    data["evaluation"].pop("gate")
    with pytest.raises(ValueError, match="gate is required"):
        DPOLoopSpec.model_validate(data)


def test_the_lineage_takes_the_gates_figures_and_the_data_checks_digest() -> None:
    current = RoundStatus(round=1)
    record_training(current, {"outputModel": "pvc://dpo-data/models/lp-r1-train/final",
                              "progress": {"smoothedTrainLoss": 0.41, "trainLoss": 0.5},
                              "dataCheck": {"trainingFileSha256": "cd" * 32},
                              "promotion": {"evaluation": "lp-r1-train-gate", "verdict": "Passed", "candidateMean": 0.6,
                                            "baselineMean": 0.4, "difference": {"mean": 0.2, "lower": 0.05}}})
    assert (current.trained_model, current.final_loss, current.dataset_digest) == (
        "pvc://dpo-data/models/lp-r1-train/final", 0.41, "cd" * 32)
    assert (current.evaluation, current.verdict, current.candidate_mean, current.baseline_mean) == (
        "lp-r1-train-gate", "Passed", 0.6, 0.4)
    assert current.difference is not None and current.difference.lower == 0.05


def test_the_example_loop_is_runnable() -> None:
    """manifests/examples/loop.yaml (admitted by the CRD in tests/test_install.py) passes the operator's own checks."""
    from pathlib import Path

    import yaml

    example = yaml.safe_load((Path(__file__).parent.parent / "manifests/examples/loop.yaml").read_text())
    loop = DPOLoopSpec.model_validate(example["spec"])
    render.check(loop)
    render.check_children({"metadata": {**example["metadata"], "namespace": "team-a", "uid": "u1"}}, loop)


def test_a_serving_deployment_recreated_after_a_promotion_serves_the_promoted_policy() -> None:
    """Someone deleted it mid-loop: the loop re-creates it with what it served, never silently the base model."""
    loop = spec()
    assert render.serving_deployment(LOOP, loop, current_policy([]))["spec"]["model"] == {"explicit": BASE}
    promoted = render.serving_deployment(LOOP, loop, current_policy([done(1, True), done(2, False)]))
    assert promoted["spec"]["model"] == {"trainingJobRef": {"name": "lp-r1-train"}}
    assert promoted["spec"]["port"] == 8000 and "ownerReferences" not in promoted["metadata"]


@pytest.mark.parametrize(("changes", "start"), [
    ({}, ("base model tiny", "pvc://dpo-data/models/lp-r1-train/final", "DPOTrainingJob lp-r1-train")),
    ({"reference": "base"}, ("base model tiny", "pvc://dpo-data/models/lp-r1-train/final", "base model tiny")),
    ({"adapterInit": "base", "reference": "base"}, ("base model tiny", None, "base model tiny")),
    ({"training": {**SPEC["training"], "hyperparameters": {"finetuningType": "all_weights"}}},
     ("pvc://dpo-data/models/lp-r1-train/final", None, "DPOTrainingJob lp-r1-train")),
])
def test_the_lineage_names_what_a_round_starts_from(changes: dict[str, Any], start: tuple[Any, ...]) -> None:
    loop, policy = spec(**changes), current_policy([done(1, True)])
    job = render.training_job(LOOP, loop, 2, policy, {})["spec"]
    found = render.start_of(loop, policy, job)
    assert (found.model, found.adapter, found.reference) == start
    first = render.start_of(loop, render.Policy(), render.training_job(LOOP, loop, 1, render.Policy(), {})["spec"])
    assert (first.model, first.adapter, first.reference) == ("base model tiny", None, "base model tiny")


def test_a_serving_deployment_finds_its_loops_through_the_index() -> None:
    from dpo_operator.handlers.loop import loops_by_serving

    body = {"metadata": {"namespace": "ns", "name": "loop", "uid": "u1"}, "spec": {"serving": {"name": "policy"}}}
    assert loops_by_serving(body=body, namespace="ns", name="loop", uid="u1") == {
        ("ns", "policy"): {"metadata": {"namespace": "ns", "name": "loop", "uid": "u1"}}}
    assert loops_by_serving(body={"spec": {}}, namespace="ns", name="loop", uid="u1") == {}
