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
from dpo_operator.api.training import KIND, Backend, DPOTrainingJobSpec
from dpo_operator.handlers import training_customizer, training_local
from dpo_operator.handlers.common import (
    enqueue_owner,
    enqueue_pod_owner,
    needs_retry_after_fix,
    object_lock,
    queue_check,
)
from dpo_operator.kube import custom_objects
from dpo_operator.kube.naming import owner_label
from dpo_operator.kube.status import Outcome, acknowledge_generation, is_terminal
from dpo_operator.runtime.controller import RUNTIME, Controller, Result, backoff_delay
from dpo_operator.runtime.errors import is_transient, parse_spec

log = logging.getLogger(__name__)


def decide(body: dict[str, Any]) -> Result:
    if is_terminal(body):
        if not needs_retry_after_fix(body):
            return Result(acknowledge_generation(KIND, body))
        # the spec that failed validation was fixed: start over (both backends act only on non-terminal objects)
        return Result(Outcome(Phase.PENDING.value, Reason.SpecChanged, "the spec was fixed after an InvalidSpec failure; "
                              "trying again"), requeue_after=0.0)
    spec = parse_spec(DPOTrainingJobSpec, body)
    if spec.backend == Backend.CUSTOMIZER.value:
        return training_customizer.decide(body, spec)
    return Result(training_local.decide(body, spec))


def _is_customizer(spec: Any, **_: Any) -> bool:
    return spec.get("backend") == Backend.CUSTOMIZER.value


def next_check(body: Any) -> float | None:
    """When to look again: at the next Customizer poll (the runtime's pacing may make it later), or a periodic
    resync of a local training Job in case an event was missed; never once the job finished."""
    if is_terminal(body):
        return None
    if not _is_customizer(body.get("spec") or {}):
        return queue_check(body) or RUNTIME.config.training_resync_seconds
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


@kopf.on.event(GROUP, VERSION, collection_api.KIND.plural)
def dataset_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A collection that finishes releases the training jobs waiting for it."""
    if type == "DELETED" or (body.get("status") or {}).get("phase") not in (Phase.SUCCEEDED.value, Phase.FAILED.value):
        return
    for job in custom_objects.list_in(KIND, namespace):
        ref = ((job.get("spec") or {}).get("dataset") or {}).get("collectionRef") or {}
        if ref.get("name") == body["metadata"]["name"] and not is_terminal(job):
            RUNTIME.enqueue(KIND, job)


@kopf.on.delete(GROUP, VERSION, KIND.plural, when=_is_customizer)
def customizer_deleted(body: kopf.Body, retry: int, **_: Any) -> None:
    """Cancel the remote job; after a few failed attempts let the deletion finish (never stuck Terminating)."""
    name = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    RUNTIME.forget(KIND, body)
    try:
        spec = DPOTrainingJobSpec.model_validate(dict(body["spec"]))
    except ValueError:
        return  # an invalid spec never reached the Customizer
    try:
        with object_lock(body["metadata"]["uid"], RUNTIME.config.remote_call_deadline):
            log.info("DPOTrainingJob %s deleted: %s", name, training_customizer.cancel_remote(body, spec))
    except Exception as exc:
        if is_transient(exc) and retry + 1 < RUNTIME.config.remote_delete_attempts:
            raise kopf.TemporaryError(f"cancelling the Customizer job: {exc}",
                                      delay=min(30.0, backoff_delay(retry, RUNTIME.config.max_backoff_seconds)))
        log.error("DPOTrainingJob %s deleted but its Customizer job could not be cancelled (%s); "
                  "cancel it by hand", name, exc)
