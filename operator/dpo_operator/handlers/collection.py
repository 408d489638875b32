"""DPOCollection: one collection Job per resource, status read back from the Job and its pod.

Events (the resource, its Job, the Job's pods) only enqueue it; :func:`decide` is the whole reconcile, run by
:mod:`dpo_operator.runtime.controller`, which writes the outcome to status."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from dpo_operator.api import GROUP, VERSION
from dpo_operator.api.collection import (
    KIND,
    DPOCollectionSpec,
    DPOCollectionStatus,
    PairCounts,
)
from dpo_operator.api.common import Phase
from dpo_operator.api.reasons import Reason
from dpo_operator.api.results import CollectionResult, first_valid
from dpo_operator.handlers.common import (
    enqueue_owner,
    enqueue_pod_owner,
    needs_retry_after_fix,
)
from dpo_operator.kube.jobs import (
    JobState,
    ensure_job,
    failure,
    get_job,
    job_state,
    pod_problem,
    pod_results,
    set_suspended,
    spec_applied,
)
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


def outcome_for(namespace: str, job: dict[str, Any], state: JobState) -> Outcome:
    fields = DPOCollectionStatus(job_name=job["metadata"]["name"])
    if state.phase == Phase.SUCCEEDED.value:
        result = first_valid(CollectionResult, pod_results(namespace, job["metadata"]["name"]))
        if result is None:  # never Succeeded without a result: a training job would proceed on nothing
            fields.failure_reason = Reason.ResultUnavailable
            return Outcome(Phase.FAILED.value, Reason.ResultUnavailable,
                           f"job {job['metadata']['name']} completed but no pod of it left a readable result "
                           "(termination message); the dataset cannot be trusted", fields)
        _record_result(fields, result)
        total = fields.pairs.total if fields.pairs else 0
        return Outcome(state.phase, Reason.Collected, f"collected {total} preference pairs", fields,
                       conditions=_data_checked(result))
    if state.phase == Phase.FAILED.value:
        explained = failure(namespace, job["metadata"]["name"], state)
        fields.failure_reason = explained.reason
        return Outcome(state.phase, explained.reason, explained.message, fields)
    if state.phase in (Phase.PENDING.value, Phase.RUNNING.value):
        state = pod_problem(namespace, job["metadata"]["name"]) or state
    return Outcome(state.phase, state.reason, state.message, fields)


def decide(body: dict[str, Any]) -> Result:
    """The collection's one decision: its Job (created once), and the outcome its state implies."""
    if is_terminal(body) and not needs_retry_after_fix(body):
        return Result(acknowledge_generation(KIND, body))
    spec = parse_spec(DPOCollectionSpec, body)
    namespace = body["metadata"]["namespace"]
    recorded_job = (body.get("status") or {}).get("jobName")
    if recorded_job and get_job(namespace, recorded_job) is None:
        return Result(Outcome(
            Phase.FAILED.value, "JobMissing",
            f"job {recorded_job} disappeared before its result was recorded (deleted, or removed by "
            "ttlSecondsAfterFinished while the operator was down); delete and re-create the DPOCollection to run again",
            DPOCollectionStatus(failure_reason=Reason.JobMissing)))
    job = ensure_job(namespace, job_manifest(body, spec, RUNTIME.config))
    job = set_suspended(namespace, job, spec.suspend)
    outcome = outcome_for(namespace, job, job_state(job))
    outcome.applied = spec_applied(job, SPEC_ENV, spec.to_api())
    _warn_once(body, outcome)
    return Result(outcome)


def _warn_once(body: Any, outcome: Outcome) -> None:
    """A Warning event for the data check's findings, when the status does not hold the condition yet."""
    checked = outcome.conditions.get("DataChecked")
    known = {c.get("type") for c in (body.get("status") or {}).get("conditions") or []}
    if checked is not None and checked[1] != Reason.DataCheckPassed and "DataChecked" not in known:
        events.record(KIND, body, "Warning", checked[1], checked[2], action="DataCheck")


def next_check(body: Any) -> float | None:
    """A periodic level-based resync while the collection runs, in case a Job or pod event was missed."""
    return None if is_terminal(body) else RUNTIME.config.collection_resync_seconds


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
