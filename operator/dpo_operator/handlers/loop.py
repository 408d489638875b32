"""DPOLoop: rounds of collect → train → evaluate → promote, each round ordinary children named by round.

Every step is decided from the children's state and the round list in status (names written there before a child
is created), so an operator restart in any phase continues where the loop was, without a second child:

1. ``Serving``: the serving ModelDeployment (adopted, or created from serving.template for the base model) Ready
   with its current spec; then the round's DPOCollection, sampling from it.
2. ``Collecting``: the collection runs; once it Succeeded, the round's DPOTrainingJob (from the current policy, its
   ``deployOnCompletion.promotion`` replacing the serving deployment).
3. ``Training`` / ``Evaluating`` / ``Promoting``: the job trains, then its gate serves the candidate, evaluates it
   against the serving policy and, on Passed, switches the serving deployment (``status.promotion.step``).
4. ``Done``: the round's lineage is recorded; the stop rule or maxRounds ends the loop, else the next round starts.

One child runs at a time, so one round's GPU work at a time. ``suspend`` holds the next child's creation.
"""

from __future__ import annotations

from typing import Any

import kopf

from dpo_operator.api import GROUP, VERSION
from dpo_operator.api import collection as collection_api
from dpo_operator.api import deployment as deployment_api
from dpo_operator.api import training as training_api
from dpo_operator.api.common import Phase
from dpo_operator.api.loop import KIND, DPOLoopSpec, DPOLoopStatus, RoundPhase, RoundStatus
from dpo_operator.api.promotion import PromotionStep
from dpo_operator.api.reasons import Reason
from dpo_operator.handlers.common import enqueue_owner
from dpo_operator.handlers.evaluation import api_root
from dpo_operator.handlers.loop_rules import current_policy, record_collection, record_training, stop_reason
from dpo_operator.kube import custom_objects
from dpo_operator.kube.conditions import now
from dpo_operator.kube.naming import owner_label
from dpo_operator.kube.status import Outcome
from dpo_operator.render import loop as render
from dpo_operator.runtime.controller import RUNTIME, Controller, Result
from dpo_operator.runtime.errors import parse_spec

RESYNC_SECONDS = 30.0
FAILED_PHASES = (Phase.FAILED.value, Phase.CANCELLED.value)


class _Loop:
    """One reconcile's view: the spec, the status fields being built, and the object."""

    def __init__(self, body: dict[str, Any], spec: DPOLoopSpec) -> None:
        self.body, self.spec = body, spec
        self.namespace, self.name = body["metadata"]["namespace"], body["metadata"]["name"]
        status = DPOLoopStatus.model_validate(body.get("status") or {})
        self.fields = DPOLoopStatus(rounds=list(status.rounds or []), current_round=status.current_round,
                                    round_phase=status.round_phase, serving_deployment=spec.serving.name,
                                    serving_model=status.serving_model, last_verdict=status.last_verdict,
                                    stop_reason=None)

    @property
    def rounds(self) -> list[RoundStatus]:
        assert self.fields.rounds is not None
        return self.fields.rounds

    def outcome(self, phase: str, reason: str, message: str, requeue: bool = False) -> Result:
        last = self.rounds[-1] if self.rounds else None
        self.fields.current_round = last.round if last else None
        self.fields.round_phase = last.phase if last else None
        if last is not None and last.phase != RoundPhase.DONE.value:
            last.message = message
        # a null inside a list item is not a removal but an invalid value: leave unknown lineage fields out
        self.fields.rounds = [RoundStatus.model_validate(r.model_dump(exclude_none=True)) for r in self.rounds]
        return Result(Outcome(phase, reason, message, self.fields), requeue_after=0.0 if requeue else None)


def decide(body: dict[str, Any]) -> Result:
    """The loop's one decision: the next step of the current round, or the next round, or the end."""
    spec = parse_spec(DPOLoopSpec, body)
    render.check(spec)
    render.check_children(body, spec)
    loop = _Loop(body, spec)
    last = loop.rounds[-1] if loop.rounds else None
    if last is not None and last.phase == RoundPhase.DONE.value and (why := stop_reason(spec, loop.rounds)):
        loop.fields.stop_reason = why[0]
        failed = why[0] in (Reason.CollectionFailed, Reason.TrainingFailed)
        return loop.outcome(Phase.FAILED.value if failed else Phase.SUCCEEDED.value, why[0], why[1])
    between_rounds = last is None or last.phase == RoundPhase.DONE.value
    if between_rounds and spec.suspend:
        return loop.outcome(Phase.SUSPENDED.value, Reason.Suspended, f"suspended before round {len(loop.rounds) + 1}; "
                            "set spec.suspend false to go on")
    serving = _serving(loop)
    if isinstance(serving, Result):
        return serving
    if between_rounds:
        return _next_round(loop)
    if last.phase == RoundPhase.SERVING.value:
        return _collect(loop, last, serving)
    if last.phase == RoundPhase.COLLECTING.value:
        return _collecting(loop, last, serving)
    return _training(loop, last, serving)


def _serving(loop: _Loop) -> dict[str, Any] | Result:
    """The serving ModelDeployment (created from serving.template when missing), or why the loop waits for it."""
    name = loop.spec.serving.name
    deployment = custom_objects.read(deployment_api.KIND, loop.namespace, name)
    if deployment is None and loop.spec.serving.template is not None:
        deployment = custom_objects.ensure(deployment_api.KIND, loop.namespace,
                                           render.serving_deployment(loop.body, loop.spec,
                                                                     current_policy(loop.rounds)))
    if deployment is None:
        return loop.outcome(Phase.PENDING.value, Reason.WaitingForServing,
                            f"ModelDeployment {name} (spec.serving.name) does not exist; create it, or set "
                            "spec.serving.template for the loop to serve the base model")
    loop.fields.serving_model = _served(deployment)  # its spec says what it serves (a promotion switched it)
    return deployment


def _served(deployment: dict[str, Any]) -> str:
    model = (deployment.get("spec") or {}).get("model") or {}
    if (ref := model.get("trainingJobRef")) is not None:
        return f"DPOTrainingJob {ref.get('name')}"
    return str((model.get("explicit") or {}).get("name"))


def _ready(deployment: dict[str, Any]) -> bool:
    """Ready with its current spec (a promotion's new model rolled out), with an endpoint."""
    status = deployment.get("status") or {}
    return status.get("phase") == Phase.READY.value and bool(status.get("endpoint")) \
        and status.get("observedGeneration") == deployment["metadata"].get("generation")


def _next_round(loop: _Loop) -> Result:
    number = len(loop.rounds) + 1
    names = render.names(loop.name, number)
    loop.rounds.append(RoundStatus(round=number, phase=RoundPhase.SERVING, collection=names.collection,
                                   training_job=names.training_job, evaluation=names.evaluation, started_at=now()))
    return loop.outcome(Phase.RUNNING.value, Reason.RoundStarted,
                        f"round {number} of at most {loop.spec.max_rounds} started", requeue=True)


def _collect(loop: _Loop, current: RoundStatus, serving: dict[str, Any]) -> Result:
    """Serving phase: once the current policy serves, the round's collection samples from it."""
    assert current.collection is not None
    found = custom_objects.read(collection_api.KIND, loop.namespace, current.collection)
    if found is None:
        if not _ready(serving):
            status = serving.get("status") or {}
            return loop.outcome(Phase.RUNNING.value, Reason.WaitingForServing,
                                f"round {current.round}: waiting for ModelDeployment {loop.spec.serving.name} to serve "
                                f"{loop.fields.serving_model} (phase {status.get('phase') or 'Pending'})")
        if loop.spec.suspend:
            return loop.outcome(Phase.SUSPENDED.value, Reason.Suspended,
                                f"round {current.round}: suspended before collecting")
        status = serving["status"]
        manifest = render.collection(loop.body, loop.spec, current.round,
                                     api_root(serving, loop.namespace, RUNTIME.config),
                                     status.get("servedModelName") or "")
        custom_objects.ensure(collection_api.KIND, loop.namespace, manifest)
        current.sampled_from = loop.fields.serving_model
    elif current.sampled_from is None:  # created just before a restart: its spec says what it samples
        current.sampled_from = ((found.get("spec") or {}).get("llm") or {}).get("model")
    current.phase = RoundPhase.COLLECTING
    return loop.outcome(Phase.RUNNING.value, Reason.Collecting,
                        f"round {current.round}: DPOCollection {current.collection} samples from "
                        f"{current.sampled_from}", requeue=True)


def _collecting(loop: _Loop, current: RoundStatus, serving: dict[str, Any]) -> Result:
    assert current.collection is not None and current.training_job is not None
    found = custom_objects.read(collection_api.KIND, loop.namespace, current.collection)
    if found is None:  # deleted by someone: sample again from the (unchanged) serving policy
        current.phase = RoundPhase.SERVING
        return loop.outcome(Phase.RUNNING.value, Reason.Collecting,
                            f"round {current.round}: DPOCollection {current.collection} is gone; collecting again",
                            requeue=True)
    status = found.get("status") or {}
    if status.get("phase") in FAILED_PHASES:
        return _round_failed(loop, current, Reason.CollectionFailed, f"DPOCollection {current.collection} ended "
                             f"{status['phase']} ({status.get('reason')}: {status.get('message', '')})")
    if status.get("phase") != Phase.SUCCEEDED.value:
        return loop.outcome(Phase.RUNNING.value, Reason.Collecting, f"round {current.round}: DPOCollection "
                            f"{current.collection} is {status.get('phase') or 'Pending'}")
    record_collection(current, status)
    policy = current_policy(loop.rounds[:-1])
    job = custom_objects.read(training_api.KIND, loop.namespace, current.training_job)
    if job is None:
        if loop.spec.suspend:
            return loop.outcome(Phase.SUSPENDED.value, Reason.Suspended,
                                f"round {current.round}: collected {current.pairs} pairs; suspended before training")
        deploy = render.candidate_template(loop.spec, serving)
        job = custom_objects.ensure(training_api.KIND, loop.namespace,
                                    render.training_job(loop.body, loop.spec, current.round, policy, deploy))
    start = render.start_of(loop.spec, policy, job["spec"])  # from the job's own spec: also after a restart
    current.starting_model, current.starting_adapter = start.model, start.adapter
    current.reference_model = start.reference
    current.phase = RoundPhase.TRAINING
    return loop.outcome(Phase.RUNNING.value, Reason.Training,
                        f"round {current.round}: DPOTrainingJob {current.training_job} trains on {current.pairs} "
                        "pairs", requeue=True)


PHASE_OF_STEP = {PromotionStep.SERVING_CANDIDATE.value: RoundPhase.EVALUATING,
                 PromotionStep.EVALUATING.value: RoundPhase.EVALUATING,
                 PromotionStep.PROMOTING.value: RoundPhase.PROMOTING}


def _training(loop: _Loop, current: RoundStatus, serving: dict[str, Any]) -> Result:
    assert current.training_job is not None
    job = custom_objects.read(training_api.KIND, loop.namespace, current.training_job)
    if job is None:  # deleted by someone: train again on the round's collection
        current.phase = RoundPhase.COLLECTING
        return loop.outcome(Phase.RUNNING.value, Reason.Training,
                            f"round {current.round}: DPOTrainingJob {current.training_job} is gone; training again",
                            requeue=True)
    status = job.get("status") or {}
    step = (status.get("promotion") or {}).get("step")
    if status.get("phase") in FAILED_PHASES:
        return _round_failed(loop, current, Reason.TrainingFailed, f"DPOTrainingJob {current.training_job} ended "
                             f"{status['phase']} ({status.get('reason')}: {status.get('message', '')})")
    if status.get("phase") != Phase.SUCCEEDED.value or step in PHASE_OF_STEP:  # the gate has not decided yet
        current.phase = PHASE_OF_STEP.get(step, RoundPhase.TRAINING)
        record_training(current, status)
        return loop.outcome(Phase.RUNNING.value, Reason.Training if current.phase == RoundPhase.TRAINING else
                            Reason.EvaluatingCandidate, f"round {current.round}: DPOTrainingJob "
                            f"{current.training_job}: {status.get('message') or status.get('phase') or 'Pending'}")
    record_training(current, status)
    current.promoted = step == PromotionStep.PROMOTED.value
    current.phase, current.finished_at = RoundPhase.DONE, now()
    # Promoted or NotPromoted; no step at all: someone removed the gate from the job, which then deployed unjudged
    current.message = (status.get("promotion") or {}).get("message") or status.get("message")
    loop.fields.last_verdict = current.verdict
    if current.promoted:
        loop.fields.serving_model = f"DPOTrainingJob {current.training_job}"
    verb = "promoted" if current.promoted else "not promoted"
    return loop.outcome(Phase.RUNNING.value, Reason.Promoted if current.promoted else Reason.NotPromoted,
                        f"round {current.round} {verb}: {current.message}", requeue=True)


def _round_failed(loop: _Loop, current: RoundStatus, reason: str, message: str) -> Result:
    """A child failed: the round ends unpromoted and the loop stops Failed (serving is untouched)."""
    current.phase, current.finished_at, current.promoted = RoundPhase.DONE, now(), False
    current.failure_reason, current.message = reason, message
    loop.fields.stop_reason = reason
    return loop.outcome(Phase.FAILED.value, reason, f"round {current.round} failed: {message}")


def next_check(body: Any) -> float | None:
    """A periodic level-based resync while the loop runs, in case a child's event was missed."""
    phase = (body.get("status") or {}).get("phase")
    return None if phase in (Phase.SUCCEEDED.value, Phase.FAILED.value, Phase.SUSPENDED.value) else RESYNC_SECONDS


RUNTIME.register(Controller(KIND, decide, next_check))


@kopf.on.create(GROUP, VERSION, KIND.plural)
@kopf.on.resume(GROUP, VERSION, KIND.plural)
@kopf.on.update(GROUP, VERSION, KIND.plural, field="spec")
def loop_changed(body: kopf.Body, **_: Any) -> None:
    RUNTIME.enqueue(KIND, body)


@kopf.on.event(GROUP, VERSION, collection_api.KIND.plural, labels={owner_label(KIND.kind): kopf.PRESENT})
def round_collection_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    enqueue_owner(KIND, body, namespace, type)


@kopf.on.event(GROUP, VERSION, training_api.KIND.plural, labels={owner_label(KIND.kind): kopf.PRESENT})
def round_training_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    enqueue_owner(KIND, body, namespace, type)


# kopf keeps this index from its watch of DPOLoops: a ModelDeployment's event finds the loops it serves without
# listing every DPOLoop of the namespace (as evaluations_by_dependency does for DPOEvaluations)
@kopf.index(GROUP, VERSION, KIND.plural)
def loops_by_serving(body: kopf.Body, namespace: str, name: str, uid: str,
                     **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, serving ModelDeployment name) -> the loop's identity (what the runtime enqueues)."""
    serving = ((body.get("spec") or {}).get("serving") or {}).get("name")
    return {(namespace, serving): {"metadata": {"namespace": namespace, "name": name, "uid": uid}}} if serving else {}


@kopf.on.event(GROUP, VERSION, deployment_api.KIND.plural)
def serving_changed(body: kopf.Body, namespace: str, loops_by_serving: Any, **_: Any) -> None:
    """The serving deployment (adopted ones carry no label of ours) became Ready or changed: its loops go on."""
    for loop in loops_by_serving.get((namespace, body["metadata"]["name"]), ()):
        RUNTIME.enqueue(KIND, loop)
