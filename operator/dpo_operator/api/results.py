"""What a workload pod reports to the operator, through its termination message: one model per workload, written
by the pod (``dpo-operator collect|train|upload-dataset --result-file``) and read by the operator.

Reading is tolerant of fields it does not know (a newer workload image may add some) and strict about the ones it
needs: a result that does not validate counts as no result (``ResultUnavailable``), never as zeros.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

ResultT = TypeVar("ResultT", bound="PodResult")
TERMINATION_MESSAGE_LIMIT = 4000  # /dev/termination-log holds at most 4096 bytes
# bounds on what a pod may report (a result outside them is refused, never shown): counts a run could produce,
# texts and lists a termination message could hold
MAX_COUNT = 100_000_000
MAX_TEXT = 2048
MAX_ITEMS = 1000


class PodResult(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True, mode="json"), sort_keys=True)


class PodError(PodResult):
    """A workload that failed: what it reports instead of a result."""

    error: str


class CollectionResult(PodResult):
    """The operator needs ``pairs``; the rest it records when reported."""

    pairs: dict[str, int]
    candidates: int | None = Field(None, ge=0, le=MAX_COUNT)
    runs_completed: int | None = Field(None, ge=0, le=MAX_COUNT)
    runs_failed: int | None = Field(None, ge=0, le=MAX_COUNT)
    mean_score_diff: float | None = None
    dataset_location: str | None = Field(None, max_length=MAX_TEXT)
    pairs_per_run: list[int] = Field([], max_length=MAX_ITEMS)
    errors: list[str] = Field([], max_length=MAX_ITEMS)
    invalid_candidates: int = Field(0, ge=0, le=MAX_COUNT)
    candidates_per_second: float | None = Field(None, ge=0)
    data_check: "DataCheckResult | None" = None

    @model_validator(mode="after")
    def _consistent(self) -> CollectionResult:
        """Pair counts are bounded, add up, and cannot exceed what the candidates allow."""
        pairs = {k: self.pairs.get(k, 0) for k in ("total", "training", "validation")}
        if any(not 0 <= v <= MAX_COUNT for v in pairs.values()):
            raise ValueError(f"pair counts must be between 0 and {MAX_COUNT}: {pairs}")
        if pairs["training"] + pairs["validation"] != pairs["total"]:
            raise ValueError(f"pairs.total ({pairs['total']}) is not pairs.training + pairs.validation "
                             f"({pairs['training']} + {pairs['validation']})")
        if self.candidates is not None and pairs["total"] > self.candidates * max(0, self.candidates - 1) // 2:
            raise ValueError(f"pairs.total ({pairs['total']}) is more than {self.candidates} candidates can make")
        return self


class ValidationResult(PodResult):
    """The validation split scored at the end of training (:mod:`dpo_operator.train.offline` says what each means)."""

    pairs: int = Field(ge=0, le=MAX_COUNT)
    loss: float | None = None
    reward_accuracy: float | None = Field(None, ge=0, le=1)
    reward_margin: float | None = None
    logps_accuracy: float | None = Field(None, ge=0, le=1)
    logps_per_token_accuracy: float | None = Field(None, ge=0, le=1)
    reference_logps_accuracy: float | None = Field(None, ge=0, le=1)
    reference_logps_per_token_accuracy: float | None = Field(None, ge=0, le=1)

    @classmethod
    def from_metrics(cls, metrics: dict[str, float]) -> "ValidationResult":
        """From the trainer's ``val/...`` record."""
        def value(key: str) -> float | None:
            found = metrics.get(f"val/{key}")
            return None if found is None else round(float(found), 6)

        return cls(pairs=int(metrics["val/pairs"]), loss=value("loss"), reward_accuracy=value("rewards/accuracies"),
                   reward_margin=value("rewards/margins"), logps_accuracy=value("logps_accuracy"),
                   logps_per_token_accuracy=value("logps_per_token_accuracy"),
                   reference_logps_accuracy=value("reference/logps_accuracy"),
                   reference_logps_per_token_accuracy=value("reference/logps_per_token_accuracy"))


class TrainingResult(PodResult):
    """The operator needs ``outputModel`` (present, even if null); the rest it records when reported."""

    output_model: str | None = Field(max_length=MAX_TEXT)
    steps: int | None = Field(None, ge=0, le=MAX_COUNT)
    train_loss: float | None = None
    smoothed_train_loss: float | None = None
    validation: ValidationResult | None = None
    reward_accuracy: float | None = Field(None, ge=0, le=1)
    val_loss: float | None = None
    tokens_per_second: float | None = Field(None, ge=0)
    resumed_from_step: int | None = Field(None, ge=0, le=MAX_COUNT)


class DataCheckResult(PodResult):
    """The data check's verdict and short figures (the whole card is a file next to the data)."""

    passed: bool
    pairs: dict[str, int]
    format: str | None = Field(None, max_length=MAX_TEXT)
    rows_rejected: int = Field(0, ge=0, le=MAX_COUNT)
    ties_dropped: int = Field(0, ge=0, le=MAX_COUNT)
    failures: list[str] = Field([], max_length=MAX_ITEMS)
    warnings: list[str] = Field([], max_length=MAX_ITEMS)
    data_card: str | None = Field(None, max_length=MAX_TEXT)
    training_sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$")


class UploadResult(PodResult):
    """The operator needs ``filesUrl`` (what it registers in the Entity Store), absent only when the data check run
    before the upload failed (``dataCheck``: then nothing was uploaded)."""

    files_url: str | None = Field(max_length=MAX_TEXT)
    data_check: DataCheckResult | None = None
    repo_id: str | None = Field(None, max_length=MAX_TEXT)
    pairs: dict[str, int] | None = None


class SideResult(PodResult):
    """One side of an evaluation: its scores, and why examples have none."""

    endpoint: str | None = None
    model: str | None = None
    mean: float | None = None
    count: int = 0
    failures: int = 0
    failures_by_reason: dict[str, int] = {}
    invalid_answers: int = 0
    first_error: str | None = None


class EvaluationResult(PodResult):
    """The operator needs ``examples``, both sides and ``verdict``; the per-example scores stay in the result file."""

    examples: int
    candidate: SideResult
    baseline: SideResult
    verdict: Literal["Passed", "Failed", "NoGate", "Inconclusive"]  # another value: no result, never a pass
    verdict_message: str = ""
    pool: int | None = None
    excluded: int | None = None
    held_out: str | None = None
    pairs: int = 0
    mean_difference: float | None = None
    lower: float | None = None
    upper: float | None = None
    confidence: float | None = None
    method: str | None = None
    resamples: int | None = None
    seed: int | None = None
    wins: int = 0
    ties: int = 0
    losses: int = 0
    result_path: str | None = None


def first_valid(model: type[ResultT], reported: list[dict[str, Any]]) -> ResultT | None:
    """The newest reported result that is a valid ``model`` (errors and partial results are skipped)."""
    return read_result(model, reported)[0]


def read_result(model: type[ResultT], reported: list[dict[str, Any]]) -> tuple[ResultT | None, str]:
    """The newest valid result, else None and why none counts (for the resource's message)."""
    why = "no pod of it left a readable result (termination message)"
    for candidate in reported:
        if "error" in candidate:
            continue
        try:
            return model.model_validate(candidate), ""
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "result"
            why = f"its pod's result was refused ({where}: {first['msg'].removeprefix('Value error, ')})"
    return None, why


CollectionResult.model_rebuild()
