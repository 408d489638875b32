"""DPOCollection: one collection Job per resource (with ``parallelism`` > 1 an Indexed Job of shard pods, then a
merge Job), status read back from the Job and its pods.

Events (the resource, its Job, the Job's pods) only enqueue it; :func:`decide` is the whole reconcile, run by
:mod:`dpo_operator.runtime.controller`, which writes the outcome to status."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from dpo_operator.api import GROUP, VERSION
from dpo_operator.api.collection import (
    KIND,
    CollectionProgress,
    DPOCollectionSpec,
    DPOCollectionStatus,
    PairCounts,
)
from dpo_operator.api.common import Phase
from dpo_operator.api.reasons import Reason
from dpo_operator.api.progress import CollectionReport
from dpo_operator.api.results import CollectionResult, read_result
from dpo_operator.handlers.common import (
    enqueue_owner,
    enqueue_pod_owner,
    needs_retry_after_fix,
    queue_check,
)
from dpo_operator.handlers.live_progress import collection_progress, collection_summary, recorded
from dpo_operator.kube import progress
from dpo_operator.kube.conditions import now
from dpo_operator.kube.jobs import (
    JobState,
    JobGone,
    create_or_get_job,
    ensure_job,
    failure,
    get_job,
    job_state,
    pod_problem,
    pod_results,
    retrying,
    spec_applied,
)
from dpo_operator.kube.queueing import apply as apply_suspend
from dpo_operator.kube.naming import (
    owner_label,
)
from dpo_operator.kube import events
from dpo_operator.kube.status import Outcome, acknowledge_generation, is_terminal
from dpo_operator.render.collection import SPEC_ENV, job_manifest, job_name  # noqa: F401  (job_name: API)
from dpo_operator.runtime.controller import RUNTIME, Controller, Result
from dpo_operator.runtime.errors import parse_spec

log = logging.getLogger(__name__)


def _record_result(status: DPOCollectionStatus, result: CollectionResult) -> None:
    status.pairs = PairCounts(**{k: int(result.pairs.get(k, 0)) for k in ("total", "training", "validation")})
    status.candidates = result.candidates
    status.runs_completed = result.runs_completed
    status.runs_failed = result.runs_failed
    status.mean_score_diff = result.mean_score_diff
    status.dataset_location = result.dataset_location
    status.invalid_candidates = result.invalid_candidates
    status.candidates_per_second = result.candidates_per_second


def _data_checked(result: CollectionResult) -> dict[str, tuple[bool, str, str]]:
    """The ``DataChecked`` condition from the check the collector ran on its output (datacheck.collection)."""
    checked = result.data_check
    if checked is None:
        return {}
    if not checked.passed:
        return {"DataChecked": (False, Reason.DataCheckFailed, "; ".join(checked.failures))}
    if checked.warnings:
        return {"DataChecked": (True, Reason.DataCheckWarnings, "; ".join(checked.warnings))}
    return {"DataChecked": (True, Reason.DataCheckPassed, f"{checked.pairs.get('training', 0)} training pairs "
                            "passed the data check")}


def outcome_for(namespace: str, job: dict[str, Any], state: JobState, body: Any,
                fields: DPOCollectionStatus | None = None, new_job: bool = False) -> Outcome:
    """The outcome the Job's state implies. ``new_job``: this reconcile created the Job, so it has no pods to
    look at yet (their events enqueue the collection again)."""
    fields = fields or DPOCollectionStatus(job_name=job["metadata"]["name"])
    if state.phase in (Phase.SUCCEEDED.value, Phase.FAILED.value):
        progress.done(body)
    if state.phase == Phase.SUCCEEDED.value:
        result, why = read_result(CollectionResult, pod_results(namespace, job["metadata"]["name"]))
        if result is None:  # never Succeeded without a result: a training job would proceed on nothing
            fields.failure_reason = Reason.ResultUnavailable
            return Outcome(Phase.FAILED.value, Reason.ResultUnavailable,
                           f"job {job['metadata']['name']} completed but {why}; the dataset cannot be trusted", fields)
        _record_result(fields, result)
        total = fields.pairs.total if fields.pairs else 0
        fields.progress = final_progress(body, result)
        return Outcome(state.phase, Reason.Collected, f"collected {total} preference pairs", fields,
                       conditions=_data_checked(result))
    if state.phase == Phase.FAILED.value:
        explained = failure(namespace, job["metadata"]["name"], state)
        fields.failure_reason = explained.reason
        return Outcome(state.phase, explained.reason, explained.message, fields)
    if state.phase in (Phase.PENDING.value, Phase.RUNNING.value):
        problem = None if new_job else pod_problem(namespace, job["metadata"]["name"], job)
        state = problem or retrying(namespace, job["metadata"]["name"], job, state)
    message = state.message
    if state.phase == Phase.RUNNING.value:
        report = progress.poll(body, job["metadata"]["name"], CollectionReport, RUNTIME.config.progress_interval_seconds)
        current = collection_progress(report) if report else recorded(body, CollectionProgress)
        if report:
            fields.progress = current
        if current is not None:
            message = f"{message}; {collection_summary(current)}"
    return Outcome(state.phase, state.reason, message, fields)


def final_progress(body: Any, result: CollectionResult) -> CollectionProgress:
    """Done: the last live figures completed with the result's counts."""
    last = recorded(body, CollectionProgress) or CollectionProgress()
    runs = (result.runs_completed or 0) + (result.runs_failed or 0)
    return last.model_copy(update={
        "phase": "done", "percentage_done": 100.0, "eta": "0s", "eta_seconds": 0.0, "reported_at": now(),
        "candidates": result.candidates,
        "pairs": result.pairs.get("total"), "runs_completed": result.runs_completed,
        "runs_total": last.runs_total or runs or None, "examples_done": last.examples_total or last.examples_done})


def decide(body: dict[str, Any]) -> Result:
    """The collection's one decision: its Job (created once), and the outcome its state implies."""
    if is_terminal(body) and not needs_retry_after_fix(body):
        return Result(acknowledge_generation(KIND, body))
    spec = parse_spec(DPOCollectionSpec, body)
    namespace = body["metadata"]["namespace"]
    manifest = job_manifest(body, spec, RUNTIME.config)
    recorded = (body.get("status") or {}).get("jobName") == manifest["metadata"]["name"]
    if spec.queue_name and spec.suspend and not recorded and get_job(namespace, manifest["metadata"]["name"]) is None:
        return Result(Outcome(Phase.SUSPENDED.value, Reason.Suspended, (
            f"suspended; the job is submitted to LocalQueue {spec.queue_name} when spec.suspend is false"),
            DPOCollectionStatus()))  # Kueue would admit a Job created suspended: none is created yet
    try:
        # none recorded yet: most likely none exists, so create first (one request, not a read and a create)
        job, created = (ensure_job(namespace, manifest, recorded=True), False) if recorded \
            else create_or_get_job(namespace, manifest)
    except JobGone as gone:
        return Result(Outcome(
            Phase.FAILED.value, Reason.JobMissing,
            f"job {gone} disappeared before its result was recorded (deleted, or removed by "
            "ttlSecondsAfterFinished while the operator was down); delete and re-create the DPOCollection to run again",
            DPOCollectionStatus(failure_reason=Reason.JobMissing)))
    queued = apply_suspend(namespace, job, spec.suspend, created=created)
    job = queued.job
    state = queued.state or job_state(job)
    if spec.parallelism > 1 and state.phase == Phase.SUCCEEDED.value:
        outcome = merged(namespace, body, spec, job)
    else:
        fields = DPOCollectionStatus(job_name=job["metadata"]["name"], queue=queued.queue)
        outcome = outcome_for(namespace, job, state, body, fields, new_job=created)
    outcome.applied = spec_applied(job, SPEC_ENV, spec.to_api())
    _warn_once(body, outcome)
    return Result(outcome)


def merged(namespace: str, body: dict[str, Any], spec: DPOCollectionSpec, shards: dict[str, Any]) -> Outcome:
    """Every shard finished: the merge Job (created once) builds the dataset; its result is the collection's."""
    merge = ensure_job(namespace, job_manifest(body, spec, RUNTIME.config, merge=True))
    queued = apply_suspend(namespace, merge, spec.suspend)  # spec.suspend pauses the merge too
    merge = queued.job
    state = queued.state or job_state(merge)
    outcome = outcome_for(namespace, merge, state, body)
    fields = outcome.fields if isinstance(outcome.fields, DPOCollectionStatus) else DPOCollectionStatus()
    fields.job_name, fields.merge_job_name = shards["metadata"]["name"], merge["metadata"]["name"]
    fields.queue = queued.queue
    outcome.fields = fields
    if state.phase in (Phase.PENDING.value, Phase.RUNNING.value):
        outcome.message = f"{spec.parallelism} shards collected; merging them ({outcome.message})"
    return outcome


def _warn_once(body: Any, outcome: Outcome) -> None:
    """A Warning event for the data check's findings, when the status does not hold the condition yet."""
    checked = outcome.conditions.get("DataChecked")
    known = {c.get("type") for c in (body.get("status") or {}).get("conditions") or []}
    if checked is not None and checked[1] != Reason.DataCheckPassed and "DataChecked" not in known:
        events.record(KIND, body, "Warning", checked[1], checked[2], action="DataCheck")


def next_check(body: Any) -> float | None:
    """A periodic level-based resync while the collection runs, in case a Job or pod event was missed; while its
    pod runs, as often as progress is read; while Kueue holds its Job, as often as the queue is checked."""
    if is_terminal(body):
        return None
    config = RUNTIME.config
    running = (body.get("status") or {}).get("phase") == Phase.RUNNING.value
    return queue_check(body) or (min(config.collection_resync_seconds, config.progress_interval_seconds) if running
                                 else config.collection_resync_seconds)


RUNTIME.register(Controller(KIND, decide, next_check, lane=lambda _: "collection"))


@kopf.on.create(GROUP, VERSION, KIND.plural)
@kopf.on.resume(GROUP, VERSION, KIND.plural)
@kopf.on.update(GROUP, VERSION, KIND.plural, field="spec")
def collection_changed(body: kopf.Body, **_: Any) -> None:
    RUNTIME.enqueue(KIND, body)


@kopf.on.event("batch", "v1", "jobs", labels={owner_label(KIND.kind): kopf.PRESENT})
def collection_job_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """Job progress (pods started, completion, failure) flows into the owner's status."""
    enqueue_owner(KIND, body, namespace, type)


@kopf.on.event("", "v1", "pods", labels={owner_label(KIND.kind): kopf.PRESENT})
def collection_pod_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A pod that cannot start (missing Secret, image pull error, unschedulable) changes no Job: watch pods too."""
    enqueue_pod_owner(KIND, body, namespace, type)
