"""Live progress a workload pod reports while it runs: one line in its log, read by the operator.

Workload pods get no Kubernetes API rights. Instead the pod prints, at a bounded rate and at every phase change, a
line ``dpo-progress {json}`` on stdout; the operator reads the newest one from the pod's log
(``pods/log``, the last lines only) when it reconciles a running resource, at most every
``progressIntervalSeconds``. The termination-message result (:mod:`dpo_operator.api.results`) stays the final word.
Reading is tolerant like the result's: unknown fields are ignored and a line that does not validate is skipped.
"""

from __future__ import annotations

import json
import time
from typing import TypeVar

from pydantic import Field, ValidationError

from dpo_operator.api.results import PodResult

MARKER = "dpo-progress "
ReportT = TypeVar("ReportT", bound="ProgressReport")


class ProgressReport(PodResult):
    phase: str
    time: float = Field(default_factory=time.time)  # when the pod wrote it (Unix seconds)
    eta_seconds: float | None = None

    def line(self) -> str:
        return MARKER + self.model_dump_json(by_alias=True, exclude_none=True)


class TrainingReport(ProgressReport):
    """Phases: loading model, reference pass, training, validating, saving, done."""

    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    train_loss: float | None = None
    smoothed_train_loss: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    tokens_per_second: float | None = None


class CollectionReport(ProgressReport):
    """Phases: waiting for the endpoint, collecting, writing dataset."""

    examples_done: int = 0
    examples_total: int | None = None
    runs_completed: int = 0
    runs_total: int | None = None
    candidates: int = 0
    pairs: int = 0
    average_reward: float | None = None


def newest(model: type[ReportT], text: str) -> ReportT | None:
    """The last valid ``model`` line in a stretch of log (lines from other writers are skipped)."""
    for line in reversed(text.splitlines()):
        at = line.find(MARKER)
        if at < 0:
            continue
        try:
            return model.model_validate(json.loads(line[at + len(MARKER):]))
        except (ValueError, ValidationError):
            continue
    return None


def eta_text(seconds: float | None) -> str | None:
    """``1h02m``, ``4m05s``, ``12s``: what the ETA printer column shows."""
    if seconds is None:
        return None
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
