"""Gated promotion of a DPOTrainingJob's model (``deployOnCompletion.promotion``): the API models.

The trained model is served as a candidate, compared with what it would replace by a DPOEvaluation made from
``evaluation`` (a DPOEvaluation spec without the candidate, which the operator fills in), and promoted only on a
``Passed`` verdict.
"""

from __future__ import annotations

import copy
from enum import StrEnum
from typing import Any

from pydantic import Field, create_model, model_validator
from pydantic.fields import FieldInfo

from dpo_operator.api.common import ApiModel, LocalObjectReference
from dpo_operator.api.evaluation import DPOEvaluationSpec, DifferenceSummary, EndpointSpec

# fields of the DPOEvaluation the operator sets itself
FILLED_IN = ("candidate", "baseline")


def _mutable(info: FieldInfo) -> FieldInfo:
    """A copy of a DPOEvaluation field without its immutability rule: a template may be edited (it applies to
    the DPOEvaluation created from it, and that one is immutable)."""
    info = copy.copy(info)
    if isinstance(info.json_schema_extra, dict):
        info.json_schema_extra = {k: v for k, v in info.json_schema_extra.items() if k != "x-kubernetes-validations"}
    return info


def _template_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {name: (info.annotation, _mutable(info))
                              for name, info in DPOEvaluationSpec.model_fields.items() if name not in FILLED_IN}
    fields["baseline"] = (EndpointSpec | None, Field(default=None, description=(
        "What the candidate is compared with; unset: the ModelDeployment of promotion.replaces, else the base "
        "model served for the comparison.")))
    return fields


_EvaluationTemplateBase: type[ApiModel] = create_model(
    "_EvaluationTemplateBase", __base__=ApiModel, **_template_fields())


class EvaluationTemplate(_EvaluationTemplateBase):  # type: ignore[valid-type,misc]
    """A DPOEvaluation spec without the candidate (the operator serves the trained model and fills it in)."""

    @model_validator(mode="after")
    def _gated(self) -> "EvaluationTemplate":
        if getattr(self, "gate", None) is None:
            raise ValueError("promotion.evaluation.gate is required: without a gate no verdict can be Passed, so "
                             "nothing would ever be promoted (e.g. gate: {minImprovement: 0, confidence: 0.95})")
        return self


class Promotion(ApiModel):
    """Serve the trained model only if an evaluation against what it replaces passes its gate."""

    evaluation: EvaluationTemplate = Field(description=(
        "The DPOEvaluation to run (its spec without candidate; gate required). heldOut defaults to the training "
        "dataset's DPOCollection."))
    replaces: LocalObjectReference | None = Field(default=None, description=(
        "The ModelDeployment serving today that the trained model replaces: the evaluation's baseline (unless "
        "evaluation.baseline is set) and, on Passed, switched to the trained model (its spec.model). Unset: the "
        "deployOnCompletion ModelDeployment is created on Passed."))


class PromotionStep(StrEnum):
    SERVING_CANDIDATE = "ServingCandidate"
    EVALUATING = "Evaluating"
    PROMOTING = "Promoting"
    PROMOTED = "Promoted"
    NOT_PROMOTED = "NotPromoted"


class PromotionStatus(ApiModel):
    """Where the gate stands, and the figures it decided on."""

    step: PromotionStep | None = Field(default=None, description=(
        "ServingCandidate, Evaluating, Promoting, then Promoted or NotPromoted."))
    candidate_deployment: str | None = Field(default=None, description="The ModelDeployment serving the candidate.")
    baseline_deployment: str | None = Field(default=None, description=(
        "The ModelDeployment serving the base model for the comparison, when the operator created one."))
    baseline: str | None = Field(default=None, description="What the candidate was compared with.")
    evaluation: str | None = Field(default=None, description="The DPOEvaluation that decides.")
    target: str | None = Field(default=None, description="The ModelDeployment that serves the model once promoted.")
    verdict: str | None = Field(default=None, description="The evaluation's verdict.")
    candidate_mean: float | None = Field(default=None, description="The candidate's mean score.")
    baseline_mean: float | None = Field(default=None, description="The baseline's mean score.")
    difference: DifferenceSummary | None = Field(default=None, description=(
        "Mean paired difference (candidate minus baseline) and its confidence interval."))
    message: str | None = Field(default=None, description="Why the model was or was not promoted.")
