"""DPOTrainingJob: what happens once the model is trained — deploy it, or first pass it through the promotion gate.

The gate (``deployOnCompletion.promotion``) is a sequence of steps kept in ``status.promotion.step``, each decided
from the children's state, so an operator restart resumes where it was and finds the children it created (names
derived from the job's):

1. ``ServingCandidate``: the trained model served by a candidate ModelDeployment (and the base model by one of ours
   when nothing else is the baseline); the names are written to status before anything is created.
2. ``Evaluating``: once they are Ready, a DPOEvaluation (owned by the job) of candidate vs baseline.
3. ``Promoting`` (a Passed verdict, recorded before acting): the ``replaces`` ModelDeployment is switched to the
   trained model, or the deployOnCompletion ModelDeployment is created; then the candidate is removed and the job
   ends ``Promoted``.
   Any other ending (a verdict other than Passed, a failed evaluation, a candidate that never serves) removes the
   candidate, leaves serving untouched and ends ``NotPromoted`` with the figures.

The job stays Running until the gate has decided; it never serves a model the gate refused (see
:func:`dpo_operator.serving.model.from_training_job`).
"""

from __future__ import annotations

from typing import Any

from dpo_operator.api import deployment as deployment_api
from dpo_operator.api import evaluation as evaluation_api
from dpo_operator.api.common import Phase
from dpo_operator.api.promotion import PromotionStatus, PromotionStep
from dpo_operator.api.reasons import Reason
from dpo_operator.api.training import DPOTrainingJobSpec, DPOTrainingJobStatus
from dpo_operator.handlers.training_shared import deploy_if_requested
from dpo_operator.kube import custom_objects
from dpo_operator.kube.status import Outcome
from dpo_operator.render import promotion as render
from dpo_operator.runtime.controller import Result
from dpo_operator.runtime.errors import InvalidSpec

CONDITION = "Promoted"
IN_PROGRESS = (PromotionStep.SERVING_CANDIDATE.value, PromotionStep.EVALUATING.value, PromotionStep.PROMOTING.value)


def current(body: Any) -> PromotionStatus:
    return PromotionStatus.model_validate(((body.get("status") or {}).get("promotion")) or {})


def in_progress(body: Any) -> bool:
    """The model is trained and the gate has not decided yet (the backends have nothing left to do)."""
    return current(body).step in IN_PROGRESS


def check(body: Any, spec: DPOTrainingJobSpec) -> None:
    """InvalidSpec (naming the field) for a promotion gate that could not run: no baseline to be had, or an
    evaluation the DPOEvaluation kind would refuse."""
    if render.promotion_of(spec) is not None:
        render.evaluation_spec(spec, render.plan(body, spec))


def finish(body: Any, spec: DPOTrainingJobSpec, fields: DPOTrainingJobStatus, message: str,
           applied: tuple[bool, str, str] | None) -> Result:
    """Training succeeded (``fields`` holds its output): deploy as deployOnCompletion says, or start the gate."""
    if render.promotion_of(spec) is None:
        deploy_if_requested(body, spec, fields)
        return Result(Outcome(Phase.SUCCEEDED.value, Reason.Trained, message, fields, applied))
    return gate(body, spec, fields, applied)


def gate(body: Any, spec: DPOTrainingJobSpec, fields: DPOTrainingJobStatus,
         applied: tuple[bool, str, str] | None = None) -> Result:
    """One step of the gate."""
    state = current(body)
    if render.promotion_of(spec) is None:  # the gate was removed from the spec meanwhile: deploy without it
        _remove_children(body, state)
        deploy_if_requested(body, spec, fields)
        fields.promotion = state.model_copy(update={"step": None, "message": "the promotion gate was removed from "
                                                    "the spec before it decided; deployed without it"})
        return Result(Outcome(Phase.SUCCEEDED.value, Reason.Trained, fields.promotion.message or "", fields, applied))
    plan = render.plan(body, spec)
    if state.step is None:
        render.evaluation_spec(spec, plan)  # an invalid template fails now, before anything is served
        fields.promotion = PromotionStatus(
            step=PromotionStep.SERVING_CANDIDATE, candidate_deployment=plan.candidate,
            baseline_deployment=plan.baseline_deployment, baseline=plan.describe_baseline(),
            evaluation=plan.evaluation, target=plan.target)
        return _running(fields, applied, Reason.ServingCandidate,
                        f"training completed; serving the trained model as ModelDeployment {plan.candidate} to "
                        f"evaluate it against {plan.describe_baseline()}", requeue=True)
    if state.step == PromotionStep.PROMOTING.value:
        return _promote(body, spec, state, fields, applied)
    return _evaluate(body, spec, plan, state, fields, applied)


def _evaluate(body: Any, spec: DPOTrainingJobSpec, plan: render.GatePlan, state: PromotionStatus,
              fields: DPOTrainingJobStatus, applied: tuple[bool, str, str] | None) -> Result:
    namespace = body["metadata"]["namespace"]
    evaluation = custom_objects.read(evaluation_api.KIND, namespace, plan.evaluation)
    if evaluation is None:  # created once, when every side serves; afterwards it is the record
        waiting = _await_sides(body, spec, plan)
        if isinstance(waiting, _Refusal):
            return _refuse(body, state, fields, applied, waiting.why)
        if waiting is not None:
            fields.promotion = state.model_copy(update={"step": PromotionStep.SERVING_CANDIDATE})
            return _running(fields, applied, Reason.ServingCandidate, waiting)
        try:
            manifest = render.evaluation(body, spec, plan)
        except InvalidSpec as exc:
            return _refuse(body, state, fields, applied, f"the evaluation cannot run: {exc}")
        evaluation = custom_objects.ensure(evaluation_api.KIND, namespace, manifest)
    status = evaluation.get("status") or {}
    phase = status.get("phase")
    if phase in (Phase.FAILED.value, Phase.CANCELLED.value):
        return _refuse(body, state, fields, applied, f"DPOEvaluation {plan.evaluation} ended {phase} "
                       f"({status.get('reason')}: {status.get('message', '')}); nothing is promoted on missing data")
    if phase != Phase.SUCCEEDED.value:
        fields.promotion = state.model_copy(update={"step": PromotionStep.EVALUATING})
        return _running(fields, applied, Reason.EvaluatingCandidate, f"DPOEvaluation {plan.evaluation} of "
                        f"{plan.candidate} against {plan.describe_baseline()}: {phase or 'Pending'}")
    figures = _figures(status)
    if status.get("verdict") != evaluation_api.Verdict.PASSED.value:
        return _refuse(body, state.model_copy(update=figures), fields, applied,
                       f"verdict {status.get('verdict')}: {_summary(status)}")
    fields.promotion = state.model_copy(update={**figures, "step": PromotionStep.PROMOTING,
                                                "message": f"verdict Passed: {_summary(status)}"})
    return _running(fields, applied, Reason.Promoting, f"verdict Passed ({_summary(status)}); promoting to "
                    f"ModelDeployment {plan.target}", requeue=True)


class _Refusal:
    def __init__(self, why: str) -> None:
        self.why = why


def _await_sides(body: Any, spec: DPOTrainingJobSpec, plan: render.GatePlan) -> str | _Refusal | None:
    """None once every ModelDeployment among the sides is Ready (ours are created here); else what is awaited, or
    why the gate cannot go on."""
    namespace = body["metadata"]["namespace"]
    custom_objects.ensure(deployment_api.KIND, namespace, render.candidate_deployment(body, spec, plan))
    if (baseline := render.baseline_deployment(body, spec, plan)) is not None:
        custom_objects.ensure(deployment_api.KIND, namespace, baseline)
    for side, endpoint in render.sides(plan).items():
        ref = (endpoint.get("modelDeploymentRef") or {}).get("name")
        if ref is None:
            continue
        deployment = custom_objects.read(deployment_api.KIND, namespace, ref)
        status = (deployment or {}).get("status") or {}
        if status.get("phase") in (Phase.FAILED.value, Phase.CANCELLED.value):
            return _Refusal(f"ModelDeployment {ref} ({side}) cannot serve for the evaluation "
                            f"({status.get('reason')}: {status.get('message', '')})")
        if deployment is None or status.get("phase") != Phase.READY.value:
            state = "does not exist (yet)" if deployment is None else \
                f"is {status.get('phase') or 'Pending'}: {status.get('message', '')}"
            return f"training completed; waiting for ModelDeployment {ref} ({side}) to be Ready: it {state}"
    return None


def _promote(body: Any, spec: DPOTrainingJobSpec, state: PromotionStatus, fields: DPOTrainingJobStatus,
             applied: tuple[bool, str, str] | None) -> Result:
    """The one action that promotes (idempotent: a restart repeats it harmlessly), then the candidate goes."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    promotion = render.promotion_of(spec)
    assert promotion is not None
    _remove_children(body, state)  # before the target: a stand-in NIM on the same port must be gone first
    if promotion.replaces is not None:
        replaced = custom_objects.read(deployment_api.KIND, namespace, promotion.replaces.name)
        if replaced is None:
            return _refuse(body, state, fields, applied, f"the verdict was Passed but ModelDeployment "
                           f"{promotion.replaces.name} (promotion.replaces) no longer exists; nothing was changed")
        custom_objects.patch_spec(deployment_api.KIND, namespace, promotion.replaces.name,
                                  {"model": {"trainingJobRef": {"name": name}, "explicit": None}})
        fields.deployment_name = promotion.replaces.name
    else:
        deploy_if_requested(body, spec, fields)
    message = f"promoted to ModelDeployment {fields.deployment_name}: {state.message or 'verdict Passed'}"
    fields.promotion = state.model_copy(update={"step": PromotionStep.PROMOTED, "message": message})
    return Result(Outcome(Phase.SUCCEEDED.value, Reason.Promoted, message, fields, applied,
                          conditions={CONDITION: (True, Reason.Promoted, message)}))


def _refuse(body: Any, state: PromotionStatus, fields: DPOTrainingJobStatus,
            applied: tuple[bool, str, str] | None, why: str) -> Result:
    """Remove the candidate, leave serving as it is, and say why with the figures."""
    _remove_children(body, state)
    message = f"not promoted: {why}; the candidate was removed and serving is unchanged"
    fields.promotion = state.model_copy(update={"step": PromotionStep.NOT_PROMOTED, "message": message})
    return Result(Outcome(Phase.SUCCEEDED.value, Reason.NotPromoted, message, fields, applied,
                          conditions={CONDITION: (False, Reason.NotPromoted, message)}))


def _remove_children(body: Any, state: PromotionStatus) -> None:
    """The candidate (and base-model) ModelDeployments go; the DPOEvaluation stays as the record."""
    namespace, uid = body["metadata"]["namespace"], body["metadata"]["uid"]
    for name in (state.candidate_deployment, state.baseline_deployment):
        if name:
            custom_objects.delete_owned(deployment_api.KIND, namespace, name, uid)


def _running(fields: DPOTrainingJobStatus, applied: tuple[bool, str, str] | None, reason: Reason, message: str,
             requeue: bool = False) -> Result:
    return Result(Outcome(Phase.RUNNING.value, reason, message, fields, applied,
                          conditions={CONDITION: (False, reason, message)}), requeue_after=0.0 if requeue else None)


def _figures(status: dict[str, Any]) -> dict[str, Any]:
    difference = status.get("difference")
    return {"verdict": status.get("verdict"),
            "candidate_mean": (status.get("candidate") or {}).get("mean"),
            "baseline_mean": (status.get("baseline") or {}).get("mean"),
            "difference": evaluation_api.DifferenceSummary.model_validate(difference) if difference else None}


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _summary(status: dict[str, Any]) -> str:
    """The figures in one line: difference, interval, means and why the verdict is what it is."""
    diff = status.get("difference") or {}
    confidence = diff.get("confidence")
    level = f"{confidence:.0%}" if isinstance(confidence, (int, float)) else "?"
    text = (f"mean difference {_number(diff.get('mean'))} ({level} interval {_number(diff.get('lower'))} to "
            f"{_number(diff.get('upper'))}, {diff.get('pairs', 0)} pairs); candidate mean "
            f"{_number((status.get('candidate') or {}).get('mean'))}, baseline mean "
            f"{_number((status.get('baseline') or {}).get('mean'))}")
    return f"{text}; {status['verdictMessage']}" if status.get("verdictMessage") else text
