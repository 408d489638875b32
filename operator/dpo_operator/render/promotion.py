"""The objects a DPOTrainingJob's promotion gate creates (pure builders): the candidate ModelDeployment, the
base-model ModelDeployment when nothing else is the baseline (with model.adapter: the base model and that starting
adapter, the policy training started from), and the DPOEvaluation that decides.

Names are derived from the job's name, so a restarted operator finds what it created instead of creating more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from dpo_operator.api import API_VERSION
from dpo_operator.api import deployment as deployment_api
from dpo_operator.api import evaluation as evaluation_api
from dpo_operator.api.promotion import Promotion
from dpo_operator.api.training import KIND, Backend, DPOTrainingJobSpec
from dpo_operator.kube.naming import child_name, labels_for, owner_reference
from dpo_operator.runtime.errors import InvalidSpec, describe_validation_error
from dpo_operator.serving.model import customizer_base_model

EVALUATION_FIELD = "spec.deployOnCompletion.promotion.evaluation"


@dataclass(frozen=True)
class GatePlan:
    """Who is who in one job's gate."""

    candidate: str                 # the ModelDeployment serving the trained model under test
    evaluation: str                # the DPOEvaluation
    target: str                    # the ModelDeployment that serves the model once promoted
    baseline: dict[str, Any]       # the evaluation's baseline endpoint (API form)
    baseline_deployment: str | None  # a ModelDeployment of the base model we serve for the comparison, if any

    def describe_baseline(self) -> str:
        ref = self.baseline.get("modelDeploymentRef")
        if ref is not None:
            return f"ModelDeployment {ref['name']}"
        return f"{self.baseline.get('baseUrl')} (model {self.baseline.get('model')})"


def promotion_of(spec: DPOTrainingJobSpec) -> Promotion | None:
    return spec.deploy_on_completion.promotion if spec.deploy_on_completion is not None else None


def plan(body: Any, spec: DPOTrainingJobSpec) -> GatePlan:
    """Names and baseline of the gate: the template's baseline, else the deployment it replaces, else the base
    model served by a ModelDeployment of our own."""
    promotion = promotion_of(spec)
    assert promotion is not None
    name = body["metadata"]["name"]
    target = promotion.replaces.name if promotion.replaces is not None else name
    common = dict(candidate=child_name(name, "candidate"), evaluation=child_name(name, "gate"), target=target)
    if promotion.evaluation.baseline is not None:
        return GatePlan(baseline=promotion.evaluation.baseline.to_api(), baseline_deployment=None, **common)
    if promotion.replaces is not None:
        return GatePlan(baseline={"modelDeploymentRef": {"name": promotion.replaces.name}}, baseline_deployment=None,
                        **common)
    if spec.backend == Backend.LOCAL.value and spec.model.pvc is None:
        raise InvalidSpec("spec.deployOnCompletion.promotion needs a baseline: the base model comes from a hub "
                          "repository, which a ModelDeployment cannot serve; set promotion.replaces (the "
                          "ModelDeployment serving today) or promotion.evaluation.baseline")
    baseline = child_name(name, "baseline")
    return GatePlan(baseline={"modelDeploymentRef": {"name": baseline}}, baseline_deployment=baseline, **common)


def _metadata(body: Any, name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": body["metadata"]["namespace"],
            "labels": labels_for(KIND.kind, body["metadata"]["name"], component),
            "ownerReferences": [owner_reference(KIND.kind, body)]}


def candidate_deployment(body: Any, spec: DPOTrainingJobSpec, gate: GatePlan) -> dict[str, Any]:
    """The trained model served as deployOnCompletion says, under the candidate's name."""
    assert spec.deploy_on_completion is not None
    return {"apiVersion": API_VERSION, "kind": deployment_api.KIND.kind,
            "metadata": _metadata(body, gate.candidate, "candidate"),
            "spec": {**spec.deploy_on_completion.deployment_spec(),
                     "model": {"trainingJobRef": {"name": body["metadata"]["name"]}}}}


def baseline_deployment(body: Any, spec: DPOTrainingJobSpec, gate: GatePlan) -> dict[str, Any] | None:
    """The base model served as deployOnCompletion says (the comparison's baseline), when we serve it."""
    if gate.baseline_deployment is None:
        return None
    assert spec.deploy_on_completion is not None
    if spec.backend == Backend.CUSTOMIZER.value:
        model: dict[str, Any] = {"name": customizer_base_model(spec.model.name)}
    else:  # the policy training started from: the base model, and its starting adapter when it had one
        assert spec.model.pvc is not None
        model = {"name": spec.model.name, "pvc": spec.model.pvc.to_api()}
        if spec.model.adapter is not None:
            model["loraAdapter"] = spec.model.adapter.to_api()
    deploy = {k: v for k, v in spec.deploy_on_completion.deployment_spec().items() if k != "servedModelName"}
    return {"apiVersion": API_VERSION, "kind": deployment_api.KIND.kind,
            "metadata": _metadata(body, gate.baseline_deployment, "baseline"),
            "spec": {**deploy, "model": {"explicit": model}}}


def sides(gate: GatePlan) -> dict[str, dict[str, Any]]:
    """Both sides of the comparison as the plan names them (API form)."""
    return {"candidate": {"modelDeploymentRef": {"name": gate.candidate}}, "baseline": gate.baseline}


def evaluation_spec(spec: DPOTrainingJobSpec, gate: GatePlan) -> dict[str, Any]:
    """The DPOEvaluation's spec: the template, both sides, and (unless the template says) the training dataset's
    collection held out. Checked against the DPOEvaluation model: InvalidSpec naming the field."""
    promotion = promotion_of(spec)
    assert promotion is not None
    template = {k: v for k, v in promotion.evaluation.to_api().items() if k != "baseline"}
    if "heldOut" not in template and spec.dataset.collection_ref is not None:
        template["heldOut"] = {"collectionRef": {"name": spec.dataset.collection_ref.name}}
    result = {**template, **sides(gate)}
    try:
        return evaluation_api.DPOEvaluationSpec.model_validate(result).to_api()
    except ValidationError as exc:
        raise InvalidSpec(describe_validation_error(exc, EVALUATION_FIELD)) from None


def evaluation(body: Any, spec: DPOTrainingJobSpec, gate: GatePlan) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": evaluation_api.KIND.kind,
            "metadata": _metadata(body, gate.evaluation, "evaluation"), "spec": evaluation_spec(spec, gate)}
