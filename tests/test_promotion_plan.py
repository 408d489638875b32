"""The promotion gate's pure parts: who the baseline is, the DPOEvaluation made from the template, and which
ModelDeployment may serve a gated job's model at each step."""

from __future__ import annotations

from typing import Any

import pytest

from dpo_operator.api.training import DPOTrainingJobSpec
from dpo_operator.render import promotion as render
from dpo_operator.runtime.errors import InvalidSpec
from dpo_operator.serving.model import ModelNotReady, ModelUnavailable, from_training_job

BODY = {"metadata": {"name": "dpo", "namespace": "ns", "uid": "u-1"}}
TEMPLATE = {"workflow": {"name": "tictactoe"}, "gate": {"minImprovement": 0.0}}


def spec_with(promotion: dict[str, Any], **overrides: Any) -> DPOTrainingJobSpec:
    return DPOTrainingJobSpec.model_validate({
        "dataset": {"collectionRef": {"name": "pairs"}},
        "model": {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}},
        "local": {"output": {"claimName": "data", "path": "/models"}},
        "deployOnCompletion": {"port": 8001, "servedModelName": "tuned", "promotion": promotion}, **overrides})


def test_the_base_model_is_served_as_baseline_when_nothing_else_is_named() -> None:
    spec = spec_with({"evaluation": TEMPLATE})
    plan = render.plan(BODY, spec)
    assert (plan.candidate, plan.evaluation, plan.target) == ("dpo-candidate", "dpo-gate", "dpo")
    assert plan.baseline == {"modelDeploymentRef": {"name": "dpo-baseline"}}
    baseline = render.baseline_deployment(BODY, spec, plan)
    assert baseline is not None and baseline["spec"]["model"] == {
        "explicit": {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}}}
    assert "servedModelName" not in baseline["spec"] and baseline["spec"]["port"] == 8001
    candidate = render.candidate_deployment(BODY, spec, plan)
    assert candidate["spec"]["model"] == {"trainingJobRef": {"name": "dpo"}}
    assert candidate["spec"]["servedModelName"] == "tuned" and "promotion" not in candidate["spec"]
    assert candidate["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_a_job_that_continued_an_adapter_is_compared_with_the_policy_it_started_from() -> None:
    adapter = {"claimName": "models", "path": "/round-0/final"}
    spec = spec_with({"evaluation": TEMPLATE},
                     model={"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}, "adapter": adapter})
    baseline = render.baseline_deployment(BODY, spec, render.plan(BODY, spec))
    assert baseline is not None and baseline["spec"]["model"] == {"explicit": {
        "name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}, "loraAdapter": adapter}}


def test_the_replaced_deployment_is_the_baseline_and_the_target() -> None:
    plan = render.plan(BODY, spec_with({"evaluation": TEMPLATE, "replaces": {"name": "serving"}}))
    assert plan.baseline == {"modelDeploymentRef": {"name": "serving"}} and plan.baseline_deployment is None
    assert plan.target == "serving"
    given = {"baseUrl": "http://old:8000/v1", "model": "old"}
    plan = render.plan(BODY, spec_with({"evaluation": {**TEMPLATE, "baseline": given}, "replaces": {"name": "serving"}}))
    assert plan.baseline == given and plan.target == "serving"


def test_the_evaluation_holds_out_the_training_collection_unless_told_otherwise() -> None:
    spec = spec_with({"evaluation": {**TEMPLATE, "maxExamples": 50}})
    made = render.evaluation(BODY, spec, render.plan(BODY, spec))
    assert made["kind"] == "DPOEvaluation" and made["metadata"]["name"] == "dpo-gate"
    assert made["spec"]["heldOut"] == {"collectionRef": {"name": "pairs"}}
    assert made["spec"]["candidate"] == {"modelDeploymentRef": {"name": "dpo-candidate"}}
    assert made["spec"]["maxExamples"] == 50 and made["spec"]["gate"]["minImprovement"] == 0.0
    explicit = {"excludeIndices": [{"start": 0, "end": 10}]}
    spec = spec_with({"evaluation": {**TEMPLATE, "heldOut": explicit}})
    assert render.evaluation(BODY, spec, render.plan(BODY, spec))["spec"]["heldOut"] == explicit


def test_an_evaluation_the_kind_would_refuse_is_an_invalid_spec_naming_the_field() -> None:
    spec = spec_with({"evaluation": {**TEMPLATE, "baseline": {"modelDeploymentRef": {"name": "dpo-candidate"}}}})
    with pytest.raises(InvalidSpec, match=r"spec\.deployOnCompletion\.promotion\.evaluation.*baseline equals .*candidate"):
        render.evaluation_spec(spec, render.plan(BODY, spec))


def test_a_hub_base_model_needs_a_named_baseline() -> None:
    spec = spec_with({"evaluation": TEMPLATE}, model={"name": "tiny", "hub": {"endpoint": "http://hub:3000",
                                                                               "repoId": "ns/tiny"}})
    with pytest.raises(InvalidSpec, match="promotion.replaces"):
        render.plan(BODY, spec)


def test_a_template_without_a_gate_is_refused() -> None:
    with pytest.raises(ValueError, match="promotion.evaluation.gate is required"):
        spec_with({"evaluation": {"workflow": {"name": "tictactoe"}}})


def job(step: str | None, phase: str = "Running") -> dict[str, Any]:
    promotion = {"step": step, "candidateDeployment": "dpo-candidate", "target": "dpo", "message": "verdict Failed"}
    return {"spec": {"dataset": {"location": {"pvc": {"claimName": "d"}}}, "model": {"name": "tiny"},
                     "local": {"output": {"claimName": "data"}}},
            "status": {"phase": phase, "outputModel": "pvc://data/models/dpo/final",
                       **({"promotion": promotion} if step else {})}}


@pytest.mark.parametrize(("step", "phase", "deployment", "served"), [
    ("ServingCandidate", "Running", "dpo-candidate", True),
    ("ServingCandidate", "Running", "dpo", False),
    ("Evaluating", "Running", "dpo-candidate", True),
    ("Evaluating", "Running", "other", False),
    ("Promoting", "Running", "dpo", True),
    ("Promoting", "Running", "dpo-candidate", False),
    ("Promoted", "Succeeded", "other", True),
    (None, "Succeeded", "other", True),
    (None, "Running", "other", False),
])
def test_a_gated_model_is_served_only_by_the_candidate_or_the_target(step: str | None, phase: str, deployment: str,
                                                                     served: bool) -> None:
    if served:
        assert from_training_job(job(step, phase), "dpo", None, deployment).adapter is not None  # LoRA by default
    else:
        with pytest.raises(ModelNotReady):
            from_training_job(job(step, phase), "dpo", None, deployment)


def test_a_refused_model_is_unavailable_to_every_deployment() -> None:
    with pytest.raises(ModelUnavailable, match="was not promoted: verdict Failed"):
        from_training_job(job("NotPromoted", "Succeeded"), "dpo", None, "dpo")
