"""A DPOLoop's pure rules: which policy a round starts from, what a round's children say (its lineage), and when
the loop stops."""

from __future__ import annotations

from typing import Any

from dpo_operator.api.evaluation import DifferenceSummary
from dpo_operator.api.loop import DPOLoopSpec, RoundPhase, RoundStatus
from dpo_operator.api.reasons import Reason
from dpo_operator.render.loop import Policy
from dpo_operator.serving.model import parse_pvc_url


def current_policy(rounds: list[RoundStatus]) -> Policy:
    """The newest promoted round's model, else the base model."""
    for previous in reversed(rounds):
        if previous.promoted and previous.trained_model and previous.trained_model.startswith("pvc://"):
            return Policy(promoted_job=previous.training_job, trained=parse_pvc_url(previous.trained_model))
    return Policy()


def record_collection(current: RoundStatus, status: dict[str, Any]) -> None:
    """The collection's figures into the round's lineage."""
    current.dataset_location = status.get("datasetLocation")
    current.pairs = (status.get("pairs") or {}).get("total")


def record_training(current: RoundStatus, status: dict[str, Any]) -> None:
    """The training job's figures (trained model, loss, digest, the gate's verdict) into the round's lineage."""
    progress = status.get("progress") or {}
    loss = progress.get("smoothedTrainLoss", progress.get("trainLoss"))
    current.trained_model = status.get("outputModel") or current.trained_model
    current.final_loss = loss if loss is not None else current.final_loss
    current.dataset_digest = (status.get("dataCheck") or {}).get("trainingFileSha256") or current.dataset_digest
    promotion = status.get("promotion") or {}
    if promotion.get("evaluation"):
        current.evaluation = promotion["evaluation"]
    for key, field in (("verdict", "verdict"), ("candidateMean", "candidate_mean"), ("baselineMean", "baseline_mean")):
        if promotion.get(key) is not None:
            setattr(current, field, promotion[key])
    if promotion.get("difference"):
        current.difference = DifferenceSummary.model_validate(promotion["difference"])


def stop_reason(spec: DPOLoopSpec, rounds: list[RoundStatus]) -> tuple[str, str] | None:
    """(reason, message) when the loop stops after its finished rounds; None while another round should run."""
    finished = [r for r in rounds if r.phase == RoundPhase.DONE.value]
    if not finished:
        return None
    last = finished[-1]
    if last.failure_reason:
        return last.failure_reason, f"round {last.round} failed: {last.message}"
    if spec.stop.when_not_promoted and not last.promoted:
        return Reason.NotPromoted, (f"stopped after round {last.round}: the gate refused its model (verdict "
                                    f"{last.verdict}); the serving deployment keeps the previous policy")
    if spec.stop.min_improvement is not None and len(finished) >= spec.stop.last_rounds:
        window = finished[-spec.stop.last_rounds:]
        gained = sum((r.difference.mean or 0.0) for r in window if r.promoted and r.difference is not None)
        if gained < spec.stop.min_improvement:
            return Reason.BelowMinImprovement, (
                f"stopped after round {last.round}: the last {len(window)} round(s) improved the mean score by "
                f"{gained:+.4f} in all, below stop.minImprovement {spec.stop.min_improvement}")
    if len(finished) >= spec.max_rounds:
        return Reason.MaxRounds, (f"stopped after round {last.round}: maxRounds {spec.max_rounds} reached; raise "
                                  "spec.maxRounds to go on")
    return None
