"""DPOTrainingJob: dispatch to the ``local`` or ``customizer`` backend, follow child Jobs and datasets, poll
remote jobs, and cancel remote work on deletion.

Events (the resource, its Jobs and their pods, the collection it waits for) only enqueue it; :func:`decide` is the
whole reconcile, run by :mod:`dpo_operator.runtime.controller`, which writes the outcome to status. The
Customizer backend runs in a lane of its own, so hanging NeMo calls never hold local training's work.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from dpo_operator.api import GROUP, VERSION
from dpo_operator.api import collection as collection_api
from dpo_operator.api.common import Phase
from dpo_operator.api.reasons import Reason
from dpo_operator.api import deployment as deployment_api
from dpo_operator.api import evaluation as evaluation_api
from dpo_operator.api.training import KIND, Backend, DPOTrainingJobSpec, DPOTrainingJobStatus
from dpo_operator.handlers import training_customizer, training_local, training_promotion
from dpo_operator.handlers.common import (
    enqueue_owner,
    enqueue_pod_owner,
    needs_retry_after_fix,
    not_confirmed,
    object_lock,
    queue_check,
)
from dpo_operator.handlers.dataset_size import dataset_condition
from dpo_operator.kube import custom_objects
from dpo_operator.kube.naming import owner_label
from dpo_operator.kube.status import Outcome, acknowledge_generation, is_terminal
from dpo_operator.runtime.controller import RUNTIME, Controller, Result
from dpo_operator.runtime.errors import parse_spec

log = logging.getLogger(__name__)


def decide(body: dict[str, Any]) -> Result:
    if is_terminal(body):
        if not needs_retry_after_fix(body):
            return Result(acknowledge_generation(KIND, body))
        # the spec that failed validation was fixed: start over (both backends act only on non-terminal objects)
        return Result(Outcome(Phase.PENDING.value, Reason.SpecChanged, "the spec was fixed after an InvalidSpec failure; "
                              "trying again"), requeue_after=0.0)
    spec = parse_spec(DPOTrainingJobSpec, body)
    if training_promotion.in_progress(body):  # trained: only the promotion gate is left
        return training_promotion.gate(body, spec, DPOTrainingJobStatus())
    training_promotion.check(body, spec)  # a gate that cannot work is refused before training, not after
    if spec.backend == Backend.CUSTOMIZER.value:
        result, accumulation = training_customizer.decide(body, spec), 1
    else:  # validated there: local is set
        decided = training_local.decide(body, spec)
        result = decided if isinstance(decided, Result) else Result(decided)
        accumulation = spec.local.gradient_accumulation_steps if spec.local is not None else 1
    if result.outcome is not None:  # either backend: the SmallDataset condition where the dataset's size is known
        result.outcome.conditions.update(dataset_condition(body, spec, accumulation))
    return result


def _is_customizer(spec: Any, **_: Any) -> bool:
    return spec.get("backend") == Backend.CUSTOMIZER.value


def next_check(body: Any) -> float | None:
    """When to look again: at the next Customizer poll (the runtime's pacing may make it later), or a periodic
    resync of a local training Job in case an event was missed; never once the job finished."""
    if is_terminal(body):
        return None
    if training_promotion.in_progress(body):  # children's events drive the gate; this is in case one was missed
        return RUNTIME.config.rollout_check_seconds
    if not _is_customizer(body.get("spec") or {}):
        config = RUNTIME.config
        running = (body.get("status") or {}).get("phase") == Phase.RUNNING.value
        return queue_check(body) or (min(config.training_resync_seconds, config.progress_interval_seconds) if running
                                     else config.training_resync_seconds)
    return training_customizer.pace(body)


RUNTIME.register(Controller(
    KIND, decide, next_check,
    lane=lambda body: "customizer" if _is_customizer(body.get("spec") or {}) else "training",
    pace=lambda body: training_customizer.pace(body) if _is_customizer(body.get("spec") or {}) else None))


@kopf.on.create(GROUP, VERSION, KIND.plural)
@kopf.on.resume(GROUP, VERSION, KIND.plural)
@kopf.on.update(GROUP, VERSION, KIND.plural, field="spec")
def training_changed(body: kopf.Body, **_: Any) -> None:
    RUNTIME.enqueue(KIND, body)


@kopf.on.event("batch", "v1", "jobs", labels={owner_label(KIND.kind): kopf.PRESENT})
def training_job_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A trainer or upload Job changed: reconcile its owner."""
    enqueue_owner(KIND, body, namespace, type)


@kopf.on.event("", "v1", "pods", labels={owner_label(KIND.kind): kopf.PRESENT})
def training_pod_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A trainer or upload pod that cannot start changes no Job: watch pods too."""
    enqueue_pod_owner(KIND, body, namespace, type)


@kopf.on.event(GROUP, VERSION, deployment_api.KIND.plural, labels={owner_label(KIND.kind): kopf.PRESENT})
def gate_deployment_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A ModelDeployment of the promotion gate (candidate, base model) changed: the gate may move on."""
    enqueue_owner(KIND, body, namespace, type)


@kopf.on.event(GROUP, VERSION, evaluation_api.KIND.plural, labels={owner_label(KIND.kind): kopf.PRESENT})
def gate_evaluation_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """The promotion gate's DPOEvaluation changed: its verdict decides."""
    enqueue_owner(KIND, body, namespace, type)


def _collection_finished(body: kopf.Body, type: str | None, **_: Any) -> bool:
    return type != "DELETED" and (body.get("status") or {}).get("phase") in (Phase.SUCCEEDED.value, Phase.FAILED.value)


# ``when``: kopf skips the call (no thread hand-over, no log line) for the events of collections still running
@kopf.on.event(GROUP, VERSION, collection_api.KIND.plural, when=_collection_finished)
def dataset_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A collection that finishes releases the training jobs waiting for it."""
    for job in custom_objects.list_in(KIND, namespace):
        ref = ((job.get("spec") or {}).get("dataset") or {}).get("collectionRef") or {}
        if ref.get("name") == body["metadata"]["name"] and not is_terminal(job):
            RUNTIME.enqueue(KIND, job)


@kopf.on.delete(GROUP, VERSION, KIND.plural, when=_is_customizer)
def customizer_deleted(body: kopf.Body, retry: int, **_: Any) -> None:
    """Cancel the remote job; the finalizer stays until that is confirmed (or a person removes it)."""
    name = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    RUNTIME.forget(KIND, body)
    try:
        spec: DPOTrainingJobSpec | None = DPOTrainingJobSpec.model_validate(dict(body["spec"]))
    except ValueError:
        spec = None  # an invalid spec now: the credentials captured at submission still know where it went
    try:
        with object_lock(body["metadata"]["uid"], RUNTIME.config.remote_call_deadline):
            log.info("DPOTrainingJob %s deleted: %s", name, training_customizer.cancel_remote(body, spec))
    except Exception as exc:
        raise not_confirmed(KIND, body, "cancelling its NeMo Customizer job", exc, retry) from None
