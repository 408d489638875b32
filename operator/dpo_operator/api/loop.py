"""DPOLoop: iterative (on-policy) DPO — collect from the served policy, train, evaluate, promote; round after round.

Each round is ordinary resources the loop owns and names by round: a DPOCollection sampling from the serving
ModelDeployment, a DPOTrainingJob on that collection whose gated promotion (``deployOnCompletion.promotion``)
evaluates the trained policy against the served one and, on Passed, switches the serving ModelDeployment to it.
"""

from __future__ import annotations

import copy
from enum import StrEnum
from typing import Any

from pydantic import Field, create_model, model_validator
from pydantic.fields import FieldInfo

from dpo_operator.api.collection import DPOCollectionSpec, LLMEndpointSpec
from dpo_operator.api.common import ApiModel, CommonStatus, PvcLocation
from dpo_operator.api.deployment import DeploymentTemplate
from dpo_operator.api.evaluation import DifferenceSummary
from dpo_operator.api.kinds import KindInfo, PrinterColumn, status_columns
from dpo_operator.api.promotion import EvaluationTemplate
from dpo_operator.api.schema_hints import nested
from dpo_operator.api.training import DataCheckSettings, DPOTrainingJobSpec

# fields of a round's children the loop sets itself
COLLECTION_FILLED_IN = ("llm", "output", "suspend")
TRAINING_FILLED_IN = ("dataset", "deploy_on_completion", "suspend", "reference_model")
SAMPLING_FILLED_IN = ("base_url",)


def _mutable(info: FieldInfo) -> FieldInfo:
    """A copy of a child's field without its immutability rule (a template may be edited; it applies to the
    children of later rounds)."""
    info = copy.copy(info)
    if isinstance(info.json_schema_extra, dict):
        info.json_schema_extra = {k: v for k, v in info.json_schema_extra.items() if k != "x-kubernetes-validations"}
    return info


def _fields(model: type[ApiModel], leave_out: tuple[str, ...]) -> dict[str, Any]:
    return {name: (info.annotation, _mutable(info)) for name, info in model.model_fields.items()
            if name not in leave_out}


def _sampling_fields() -> dict[str, Any]:
    fields = _fields(LLMEndpointSpec, SAMPLING_FILLED_IN + ("model",))
    fields["model"] = (str | None, Field(default=None, min_length=1, description=(
        "Model name to request; unset: the serving ModelDeployment's status.servedModelName (the current policy).")))
    return fields


LoopSampling: type[ApiModel] = create_model(
    "LoopSampling", __base__=ApiModel, __doc__="How the round's collection asks the serving deployment (the current "
    "policy) for candidates: an llm block without baseUrl, which the loop fills in.", **_sampling_fields())


def _collection_fields() -> dict[str, Any]:
    fields = _fields(DPOCollectionSpec, COLLECTION_FILLED_IN)
    fields["llm"] = (LoopSampling, nested(LoopSampling))
    fields["output"] = (PvcLocation, Field(description=(
        "Directory on a PVC under which each round's dataset goes: <path>/<collection name> (e.g. "
        "<path>/<loop>-r1-collect).")))
    return fields


CollectionTemplate: type[ApiModel] = create_model(
    "CollectionTemplate", __base__=ApiModel, __doc__="A DPOCollection spec whose llm points at the serving "
    "deployment and whose output is per round (the loop fills both in).", **_collection_fields())


class LoopDataset(ApiModel):
    """How a round's training reads its collection's dataset."""

    check: DataCheckSettings = nested(DataCheckSettings)


def _training_fields() -> dict[str, Any]:
    fields = _fields(DPOTrainingJobSpec, TRAINING_FILLED_IN)
    fields["dataset"] = (LoopDataset, nested(LoopDataset))
    return fields


TrainingTemplate: type[ApiModel] = create_model(
    "TrainingTemplate", __base__=ApiModel, __doc__="A DPOTrainingJob spec without its dataset (the round's "
    "collection) and deployOnCompletion (the gated promotion into the serving deployment); model is the base model "
    "round 1 starts from.", **_training_fields())


class ServingSpec(ApiModel):
    """The ModelDeployment that serves the current policy: the collections sample from it, the gate compares
    against it, and a promotion switches it to the round's trained model."""

    name: str = Field(min_length=1, max_length=253, description=(
        "Name of the ModelDeployment (same namespace). An existing one is adopted as it is; a missing one is created "
        "from template serving training.model (round 0: the base model). Either way the loop never owns it: "
        "deleting the loop leaves the promoted policy served."))
    template: DeploymentTemplate | None = Field(default=None, description=(
        "How to serve (a ModelDeployment spec without model) when the loop creates the deployment, and how each "
        "round's candidate is served unless candidate says; unset: the deployment must exist."))
    candidate: DeploymentTemplate | None = Field(default=None, description=(
        "How each round's trained policy is served as the gate's candidate (<loop>-r<N>-train-candidate, removed "
        "once the gate decided); unset: as template, else as the serving deployment (its spec without model)."))


class AdapterInit(StrEnum):
    PREVIOUS = "previous"
    BASE = "base"


class ReferencePolicy(StrEnum):
    PREVIOUS_ROUND = "previousRound"
    BASE = "base"


class StopRule(ApiModel):
    """When the loop ends before maxRounds."""

    when_not_promoted: bool = Field(default=True, description=(
        "Stop after a round whose model the gate refused (false: the next round collects from the unchanged "
        "serving policy again, with a new seed)."))
    min_improvement: float | None = Field(default=None, description=(
        "Stop when the summed mean score difference (candidate minus baseline) of the promoted rounds among the "
        "last lastRounds rounds is below this; unset: no such rule."))
    last_rounds: int = Field(default=1, ge=1, le=100, description="The k rounds minImprovement looks back over.")


class DPOLoopSpec(ApiModel):
    """Rounds of collect → train → evaluate → promote."""

    max_rounds: int = Field(default=3, ge=1, le=100, description=(
        "Rounds to run at most (up to 100: status keeps every round's lineage); raising it on a loop that stopped "
        "at maxRounds continues it."))
    serving: ServingSpec = Field(description="The ModelDeployment serving the current policy.")
    collection: CollectionTemplate = Field(description=(  # type: ignore[valid-type]
        "Each round's DPOCollection (<loop>-r<N>-collect): its llm is the serving deployment, its output "
        "<output.path>/<collection name>; the seed is offset by the round number so rounds sample anew."))
    training: TrainingTemplate = Field(description=(  # type: ignore[valid-type]
        "Each round's DPOTrainingJob (<loop>-r<N>-train) on that round's collection; model is the base model."))
    evaluation: EvaluationTemplate = Field(description=(
        "The promotion gate's DPOEvaluation (<loop>-r<N>-train-gate): the trained policy against the serving one; "
        "gate required; heldOut defaults to the round's collection."))
    adapter_init: AdapterInit = Field(default=AdapterInit.PREVIOUS, description=(
        "LoRA: previous starts each round's adapter from the current policy's adapter (model.adapter), base starts "
        "a fresh adapter on the base model every round. all_weights training always continues from the current "
        "policy's weights, so base is refused there (InvalidSpec)."))
    reference: ReferencePolicy = Field(default=ReferencePolicy.PREVIOUS_ROUND, description=(
        "The DPO reference policy of each round: previousRound is the current (served) policy, base the base "
        "model (training.model) every round."))
    stop: StopRule = nested(StopRule)
    suspend: bool = Field(default=False, description=(
        "While true no new phase starts (a running child finishes; nothing new is created); false continues."))

    @model_validator(mode="after")
    def _runnable(self) -> "DPOLoopSpec":
        if getattr(self.evaluation, "gate", None) is None:
            raise ValueError("evaluation.gate is required: without a gate no round can be promoted")
        return self


class RoundPhase(StrEnum):
    SERVING = "Serving"
    COLLECTING = "Collecting"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    PROMOTING = "Promoting"
    DONE = "Done"


class RoundStatus(ApiModel):
    """One round's lineage: what it sampled from, trained on and produced, and the gate's figures."""

    round: int = Field(description="Round number, from 1.")
    phase: RoundPhase | None = Field(default=None, description="Where the round is.")
    collection: str | None = Field(default=None, description="The round's DPOCollection.")
    training_job: str | None = Field(default=None, description="The round's DPOTrainingJob.")
    evaluation: str | None = Field(default=None, description="The promotion gate's DPOEvaluation.")
    sampled_from: str | None = Field(default=None, description="The model the collection sampled from.")
    dataset_location: str | None = Field(default=None, description="Where the round's dataset is (pvc://...).")
    dataset_digest: str | None = Field(default=None, description=(
        "sha256 of the training file, as the training's data check read it."))
    pairs: int | None = Field(default=None, description="Preference pairs the collection wrote.")
    reference_model: str | None = Field(default=None, description="The DPO reference policy of the round.")
    starting_model: str | None = Field(default=None, description="The model training started from.")
    starting_adapter: str | None = Field(default=None, description=(
        "The LoRA adapter training started from (adapterInit previous), when there was one."))
    trained_model: str | None = Field(default=None, description="The trained model or adapter (pvc://...).")
    final_loss: float | None = Field(default=None, description="Training's final (smoothed) loss.")
    candidate_mean: float | None = Field(default=None, description="The trained policy's mean evaluation score.")
    baseline_mean: float | None = Field(default=None, description="The served policy's mean evaluation score.")
    difference: DifferenceSummary | None = Field(default=None, description=(
        "Mean paired difference (candidate minus baseline) and its confidence interval."))
    verdict: str | None = Field(default=None, description="The gate's verdict.")
    promoted: bool | None = Field(default=None, description="Whether the round's model now serves.")
    failure_reason: str | None = Field(default=None, description=(
        "CollectionFailed or TrainingFailed when a child of the round failed (the loop stopped; serving is "
        "unchanged)."))
    message: str | None = Field(default=None, description="How the round ended, or what it waits for.")
    started_at: str | None = Field(default=None, description="When the round started (RFC 3339).")
    finished_at: str | None = Field(default=None, description="When the round ended (RFC 3339).")


class DPOLoopStatus(CommonStatus):
    """Where the loop is, and every round's lineage."""

    current_round: int | None = Field(default=None, description="The round running, or the last one.")
    round_phase: RoundPhase | None = Field(default=None, description=(
        "Serving, Collecting, Training, Evaluating, Promoting, or Done once the round ended."))
    serving_deployment: str | None = Field(default=None, description="The serving ModelDeployment.")
    serving_model: str | None = Field(default=None, description=(
        "What the serving deployment serves: the base model or the DPOTrainingJob last promoted."))
    last_verdict: str | None = Field(default=None, description="The last finished round's verdict.")
    rounds: list[RoundStatus] | None = Field(default=None, description="Every round's lineage, oldest first.")
    stop_reason: str | None = Field(default=None, description=(
        "Why the loop stopped: MaxRounds, NotPromoted, BelowMinImprovement, CollectionFailed or TrainingFailed."))


KIND = KindInfo(
    kind="DPOLoop",
    plural="dpoloops",
    singular="dpoloop",
    short_names=["dpoloop"],
    spec_model=DPOLoopSpec,
    status_model=DPOLoopStatus,
    printer_columns=[
        PrinterColumn("Round", "integer", ".status.currentRound"),
        PrinterColumn("Phase", "string", ".status.phase"),
        PrinterColumn("Round Phase", "string", ".status.roundPhase"),
        PrinterColumn("Serving", "string", ".status.servingModel"),
        PrinterColumn("Last Verdict", "string", ".status.lastVerdict"),
        PrinterColumn("Stop Reason", "string", ".status.stopReason", priority=1),
        *status_columns(),
    ],
)
