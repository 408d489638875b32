"""DPOEvaluation: does a candidate model serve an agent workflow better than a baseline?

Both endpoints play the same held-out examples with the same seeds, one response per decision point; each episode
is scored with the workflow's own scorer and the paired differences decide a verdict against an optional gate.
"""

from __future__ import annotations

from enum import Enum

from pydantic import ConfigDict, Field, model_validator

from dpo_operator.api.collection import WorkflowSpec
from dpo_operator.api.common import (
    ApiModel,
    CommonStatus,
    JobControls,
    LocalObjectReference,
    PodOptions,
    PvcLocation,
    SecretKeyRef,
)
from dpo_operator.api.kinds import KindInfo, PrinterColumn, status_columns
from dpo_operator.api.schema_hints import immutable, nested

PAIRED_BOOTSTRAP = "pairedBootstrap"


ONE_ENDPOINT = "set exactly one of 'modelDeploymentRef' or 'baseUrl'"
MODEL_WITH_URL = "'model' is required with 'baseUrl'"


class EndpointSpec(ApiModel):
    """One side of the comparison: a ModelDeployment, or an OpenAI-compatible URL and model."""

    model_config = ConfigDict(**ApiModel.model_config, json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.modelDeploymentRef) != has(self.baseUrl)", "message": ONE_ENDPOINT},
        {"rule": "!has(self.baseUrl) || has(self.model)", "message": MODEL_WITH_URL}]})

    model_deployment_ref: LocalObjectReference | None = Field(default=None, description=(
        "A ModelDeployment in the same namespace: its status.endpoint and status.servedModelName, once Ready."))
    base_url: str | None = Field(default=None, min_length=1, description=(
        "API root of an OpenAI-compatible endpoint, e.g. http://my-nim:8000/v1 (instead of modelDeploymentRef)."))
    model: str | None = Field(default=None, min_length=1, description=(
        "Model name as the endpoint serves it (required with baseUrl; with modelDeploymentRef it replaces the "
        "served model name, e.g. to pick a LoRA adapter the NIM serves)."))
    api_key_secret_ref: SecretKeyRef | None = Field(default=None, description=(
        "API key sent as 'Authorization: Bearer'; unset for endpoints without authentication."))

    @model_validator(mode="after")
    def _one_source(self) -> "EndpointSpec":
        if (self.model_deployment_ref is None) == (self.base_url is None):
            raise ValueError(ONE_ENDPOINT)
        if self.base_url is not None and self.model is None:
            raise ValueError(MODEL_WITH_URL)
        return self


class SamplingSpec(ApiModel):
    """How both sides are asked: one response per decision point, the same settings and seeds for both."""

    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description=(
        "Sampling temperature (0: greedy answers); requests carry seeds derived from spec.seed and the prompt."))
    max_tokens: int = Field(default=64, ge=1, le=65536, description="Most tokens generated per response.")
    timeout_seconds: float = Field(default=60.0, gt=0, description="Timeout of one HTTP request, in seconds.")
    max_concurrency: int = Field(default=8, ge=1, le=1024, description="Most requests in flight to each endpoint.")
    max_retries: int = Field(default=3, ge=0, le=20, description=(
        "Retries of a request after a connection error, timeout or HTTP 408/409/425/429/5xx; a request that still "
        "fails makes its episode a failure (counted, never scored)."))
    startup_timeout_seconds: float = Field(default=600.0, ge=0, le=86400, description=(
        "Before the first request, wait up to this long for each endpoint to list its model; 0: no wait."))


class IndexRange(ApiModel):
    """Example indices start <= i < end of the evaluation's example pool."""

    start: int = Field(ge=0, description="First index excluded.")
    end: int = Field(ge=1, description="First index after the excluded range.")

    @model_validator(mode="after")
    def _ordered(self) -> "IndexRange":
        if self.end <= self.start:
            raise ValueError("end must be greater than start")
        return self


class HeldOutSpec(ApiModel):
    """Which examples of the pool are left out because training saw them."""

    collection_ref: LocalObjectReference | None = Field(default=None, description=(
        "A DPOCollection in the same namespace: the examples it played (its workflow, numExamples and seed) are "
        "excluded wherever they occur in the pool (compared by content)."))
    exclude_indices: list[IndexRange] | None = Field(default=None, description=(
        "Index ranges of the pool to exclude (for a NAT workflow: entries of its dataset)."))


class GateSpec(ApiModel):
    """What the candidate must show to pass."""

    min_improvement: float = Field(default=0.0, description=(
        "The lower bound of the confidence interval of the mean paired difference (candidate minus baseline) "
        "must exceed this."))
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="Two-sided confidence level of the interval.")


class NatScoringSpec(ApiModel):
    """How a NAT workflow is pointed at each side and scored."""

    evaluator: str | None = Field(default=None, min_length=1, description=(
        "The NAT evaluator whose per-item score is the episode score (NAT's reward_function); unset: the config's "
        "finetuning reward_function name, else its only evaluator."))
    llm_names: list[str] | None = Field(default=None, description=(
        "Entries of the NAT config's llms section that are pointed at the side's endpoint (base_url, model_name, "
        "api_key); unset: every entry."))


class DPOEvaluationSpec(ApiModel):
    """What to compare (candidate and baseline), on which examples, and the gate."""

    workflow: WorkflowSpec = nested(WorkflowSpec, **immutable("workflow is immutable; create a new DPOEvaluation"))
    candidate: EndpointSpec = Field(description="The model under test (e.g. the DPO-trained one).",
                                    json_schema_extra=immutable("candidate is immutable; create a new DPOEvaluation"))
    baseline: EndpointSpec = Field(description="The model it is compared with (e.g. the one it would replace).",
                                   json_schema_extra=immutable("baseline is immutable; create a new DPOEvaluation"))
    held_out: HeldOutSpec | None = Field(default=None, description=(
        "Examples excluded because training used them; status.heldOut says how many and how."))
    max_examples: int | None = Field(default=None, ge=1, le=1_000_000, description=(
        "Evaluate at most this many examples (the first ones of the pool left after exclusion); the pool is "
        "workflow.numExamples examples drawn with spec.seed (a NAT workflow: its dataset)."))
    seed: int = Field(default=7, ge=0, description=(
        "Seeds the example pool, the per-request sampling seeds (the same for both sides) and the bootstrap."))
    sampling: SamplingSpec = nested(SamplingSpec)
    gate: GateSpec | None = Field(default=None, description=(
        "Passed only when the confidence interval's lower bound exceeds minImprovement; unset: verdict NoGate."))
    bootstrap_resamples: int = Field(default=10000, ge=100, le=1_000_000, description=(
        "Resamples of the paired bootstrap behind the confidence interval."))
    nat: NatScoringSpec = nested(NatScoringSpec)
    output: PvcLocation | None = Field(default=None, description=(
        "Directory for the per-example result file (evaluation.json: every score of both sides, and the summary); "
        "unset: the figures are only in status."),
        json_schema_extra=immutable("output is immutable; create a new DPOEvaluation"))
    template: PodOptions = nested(PodOptions)
    job: JobControls = nested(JobControls)

    @model_validator(mode="after")
    def _runnable(self) -> "DPOEvaluationSpec":
        nat = self.workflow.nat
        if nat is not None and nat.workflow_output is not None:
            raise ValueError("workflow.nat.workflowOutput cannot be evaluated: the evaluation runs the workflow "
                             "against each endpoint (set configFile or configMapRef)")
        if self.candidate.to_api() == self.baseline.to_api():
            raise ValueError("spec.baseline equals spec.candidate: the comparison would measure nothing")
        ranges = (self.held_out.exclude_indices if self.held_out else None) or []
        pool = self.workflow.num_examples
        if nat is None and ranges and all(any(r.start <= i < r.end for r in ranges) for i in range(pool)):
            raise ValueError(f"heldOut.excludeIndices exclude every example of the pool (workflow.numExamples {pool}): "
                             "nothing would be evaluated")
        return self


class Verdict(str, Enum):
    PASSED = "Passed"
    FAILED = "Failed"
    NO_GATE = "NoGate"
    INCONCLUSIVE = "Inconclusive"


class SideSummary(ApiModel):
    """One side's scores."""

    endpoint: str | None = Field(default=None, description="API root that was called.")
    model: str | None = Field(default=None, description="Model name that was requested.")
    mean: float | None = Field(default=None, description="Mean episode score over the scored examples.")
    count: int | None = Field(default=None, description="Examples with a score.")
    failures: int | None = Field(default=None, description=(
        "Examples without a score (endpoint errors, non-finite scores, empty answers)."))
    failures_by_reason: dict[str, int] | None = Field(default=None, description="failures by reason.")
    invalid_answers: int | None = Field(default=None, description=(
        "Answers the workflow scored as unparsable or illegal (scored, not failures)."))


class DifferenceSummary(ApiModel):
    """The mean paired difference (candidate minus baseline) and its confidence interval."""

    mean: float | None = Field(default=None, description="Mean of the per-example differences.")
    lower: float | None = Field(default=None, description="Lower bound of the confidence interval.")
    upper: float | None = Field(default=None, description="Upper bound of the confidence interval.")
    confidence: float | None = Field(default=None, description="Two-sided confidence level of the interval.")
    pairs: int | None = Field(default=None, description="Examples scored on both sides.")
    method: str | None = Field(default=None, description=f"How the interval was computed ({PAIRED_BOOTSTRAP}).")
    resamples: int | None = Field(default=None, description="Bootstrap resamples.")
    seed: int | None = Field(default=None, description="Seed of the bootstrap.")


class Outcomes(ApiModel):
    """Per-example comparison counts."""

    wins: int = Field(default=0, description="Examples where the candidate scored higher.")
    ties: int = Field(default=0, description="Examples with equal scores.")
    losses: int = Field(default=0, description="Examples where the baseline scored higher.")


class HeldOutStatus(ApiModel):
    """What was excluded, and how."""

    pool: int | None = Field(default=None, description="Examples in the pool before exclusion.")
    excluded: int | None = Field(default=None, description="Examples excluded as training examples.")
    evaluated: int | None = Field(default=None, description="Examples evaluated.")
    description: str | None = Field(default=None, description="How the excluded examples were identified.")


class DPOEvaluationStatus(CommonStatus):
    """The comparison's figures and verdict."""

    job_name: str | None = Field(default=None, description="The batch/v1 Job running the evaluation.")
    candidate: SideSummary | None = Field(default=None, description="The candidate's scores.")
    baseline: SideSummary | None = Field(default=None, description="The baseline's scores.")
    difference: DifferenceSummary | None = Field(default=None, description="Candidate minus baseline, paired.")
    outcomes: Outcomes | None = Field(default=None, description="Wins, ties and losses of the candidate.")
    verdict: Verdict | None = Field(default=None, description=(
        "Passed / Failed against the gate, NoGate without one, Inconclusive when data is missing (never Passed)."))
    verdict_message: str | None = Field(default=None, description="Why the verdict is what it is.")
    held_out: HeldOutStatus | None = Field(default=None, description="Which examples were held out, and how.")
    result_path: str | None = Field(default=None, description="Where the per-example result file was written.")
    failure_reason: str | None = Field(default=None, description="Why the evaluation failed, when it did.")


KIND = KindInfo(
    kind="DPOEvaluation",
    plural="dpoevaluations",
    singular="dpoevaluation",
    short_names=["dpoeval"],
    spec_model=DPOEvaluationSpec,
    status_model=DPOEvaluationStatus,
    printer_columns=[
        PrinterColumn("Phase", "string", ".status.phase"),
        PrinterColumn("Candidate", "number", ".status.candidate.mean", description="Candidate's mean score"),
        PrinterColumn("Baseline", "number", ".status.baseline.mean", description="Baseline's mean score"),
        PrinterColumn("Diff", "number", ".status.difference.mean", description="Mean paired difference"),
        PrinterColumn("Verdict", "string", ".status.verdict"),
        PrinterColumn("Examples", "integer", ".status.difference.pairs", priority=1),
        *status_columns(),
    ],
)
