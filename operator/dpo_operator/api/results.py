"""What a workload pod reports to the operator, through its termination message: one model per workload, written
by the pod (``dpo-operator collect|train|upload-dataset --result-file``) and read by the operator.

Reading is tolerant of fields it does not know (a newer workload image may add some) and strict about the ones it
needs: a result that does not validate counts as no result (``ResultUnavailable``), never as zeros.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

ResultT = TypeVar("ResultT", bound="PodResult")
TERMINATION_MESSAGE_LIMIT = 4000  # /dev/termination-log holds at most 4096 bytes


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
    candidates: int | None = None
    runs_completed: int | None = None
    runs_failed: int | None = None
    mean_score_diff: float | None = None
    dataset_location: str | None = None
    pairs_per_run: list[int] = []
    errors: list[str] = []
    invalid_candidates: int = 0
    candidates_per_second: float | None = None
    data_check: "DataCheckResult | None" = None


class TrainingResult(PodResult):
    """The operator needs ``outputModel`` (present, even if null); the rest it records when reported."""

    output_model: str | None
    steps: int | None = None
    train_loss: float | None = None
    reward_accuracy: float | None = None
    val_loss: float | None = None
    tokens_per_second: float | None = None
    resumed_from_step: int | None = None


class DataCheckResult(PodResult):
    """The data check's verdict and short figures (the whole card is a file next to the data)."""

    passed: bool
    pairs: dict[str, int]
    format: str | None = None
    rows_rejected: int = 0
    ties_dropped: int = 0
    failures: list[str] = []
    warnings: list[str] = []
    data_card: str | None = None


class UploadResult(PodResult):
    """The operator needs ``filesUrl`` (what it registers in the Entity Store), absent only when the data check run
    before the upload failed (``dataCheck``: then nothing was uploaded)."""

    files_url: str | None
    data_check: DataCheckResult | None = None
    repo_id: str | None = None
    pairs: dict[str, int] | None = None


def first_valid(model: type[ResultT], reported: list[dict[str, Any]]) -> ResultT | None:
    """The newest reported result that is a valid ``model`` (errors and partial results are skipped)."""
    for candidate in reported:
        if "error" in candidate:
            continue
        try:
            return model.model_validate(candidate)
        except ValidationError:
            continue
    return None


CollectionResult.model_rebuild()
