"""A running workload's progress line turned into its kind's ``status.progress``, and the one-line summary the
phase message carries (``kubectl get -o wide`` MESSAGE, ``kubectl describe``)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from dpo_operator.api.collection import CollectionProgress
from dpo_operator.api.progress import CollectionReport, TrainingReport, eta_text
from dpo_operator.api.results import TrainingResult
from dpo_operator.api.training import ReferenceChecks, TrainingProgress, ValidationChecks
from dpo_operator.kube.conditions import now
from dpo_operator.kube.progress import reported_at

ModelT = TypeVar("ModelT", bound=BaseModel)


def _percent(done: int | None, total: int | None) -> float | None:
    return round(min(100.0, 100.0 * done / total), 1) if done is not None and total else None


def recorded(body: Any, model: type[ModelT]) -> ModelT | None:
    """The progress the status holds now (None when absent or not readable as ``model``)."""
    found = (body.get("status") or {}).get("progress")
    try:
        return model.model_validate(found) if found else None
    except ValidationError:
        return None


def training_progress(report: TrainingReport) -> TrainingProgress:
    return TrainingProgress(
        phase=report.phase, percentage_done=_percent(report.step, report.total_steps), steps_completed=report.step,
        total_steps=report.total_steps, epoch=report.epoch,
        epochs_completed=int(report.epoch) if report.epoch is not None else None, train_loss=report.train_loss,
        smoothed_train_loss=report.smoothed_train_loss, val_loss=report.val_loss, val_accuracy=report.val_accuracy,
        tokens_per_second=report.tokens_per_second, eta=eta_text(report.eta_seconds), eta_seconds=report.eta_seconds,
        reported_at=reported_at(report))


def final_training_progress(result: TrainingResult, epochs: int, last: TrainingProgress | None) -> TrainingProgress:
    """Done: the last live figures (status is merge-patched: a field left out would keep its live value) updated
    with the result's."""
    validation = result.validation
    final = {"phase": "done", "percentage_done": 100.0, "steps_completed": result.steps, "total_steps": result.steps,
             "epochs_completed": epochs, "epoch": float(epochs), "train_loss": result.train_loss,
             "smoothed_train_loss": result.smoothed_train_loss, "val_loss": result.val_loss,
             "val_accuracy": validation.reward_accuracy if validation else None,
             "tokens_per_second": result.tokens_per_second, "eta": "0s", "eta_seconds": 0.0, "reported_at": now(),
             "resumed_from_step": result.resumed_from_step}
    return (last or TrainingProgress()).model_copy(update={k: v for k, v in final.items() if v is not None})


def validation_checks(result: TrainingResult) -> ValidationChecks | None:
    v = result.validation
    if v is None:
        return None
    return ValidationChecks(pairs=v.pairs, loss=v.loss, reward_accuracy=v.reward_accuracy, reward_margin=v.reward_margin,
                            logps_accuracy=v.logps_accuracy, logps_per_token_accuracy=v.logps_per_token_accuracy,
                            reference=ReferenceChecks(logps_accuracy=v.reference_logps_accuracy,
                                                      logps_per_token_accuracy=v.reference_logps_per_token_accuracy))


def training_summary(p: TrainingProgress) -> str:
    """``training step 120/391 (30.7%), loss 0.5213 (smoothed), val loss 0.48, ETA 2m10s``."""
    if p.phase not in ("training", "validating") or p.steps_completed is None:
        return p.phase or "starting"
    parts = [f"{p.phase} step {p.steps_completed}/{p.total_steps} ({p.percentage_done}%)"]
    if p.smoothed_train_loss is not None:
        parts.append(f"loss {p.smoothed_train_loss:.4f} (smoothed)")
    if p.val_loss is not None:
        parts.append(f"val loss {p.val_loss:.4f}")
    if p.eta:
        parts.append(f"ETA {p.eta}")
    return ", ".join(parts)


def collection_progress(report: CollectionReport) -> CollectionProgress:
    return CollectionProgress(
        phase=report.phase, percentage_done=_percent(report.examples_done, report.examples_total),
        examples_done=report.examples_done, examples_total=report.examples_total,
        runs_completed=report.runs_completed, runs_total=report.runs_total, candidates=report.candidates,
        pairs=report.pairs, average_reward=report.average_reward, eta=eta_text(report.eta_seconds),
        eta_seconds=report.eta_seconds, reported_at=reported_at(report))


def collection_summary(p: CollectionProgress) -> str:
    """``collecting: 120/1500 examples (8.0%), run 1/3, 96 pairs so far, avg reward 0.4523, ETA 3m10s``."""
    if p.phase != "collecting":
        return p.phase or "starting"
    parts = [f"collecting: {p.examples_done}/{p.examples_total} examples ({p.percentage_done}%)"]
    if p.runs_total:
        parts.append(f"{p.runs_completed}/{p.runs_total} runs done")
    parts.append(f"{p.pairs} pairs so far")
    if p.average_reward is not None:
        parts.append(f"avg reward {p.average_reward:.4f}")
    if p.eta:
        parts.append(f"ETA {p.eta}")
    return ", ".join(parts)
