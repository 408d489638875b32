"""DPOTrainingJob handlers: dispatch to the ``local`` or ``customizer`` backend, follow child Jobs and datasets,
poll remote jobs, and cancel remote work on deletion.
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Any

import kopf

from dpo_operator.api import GROUP, VERSION
from dpo_operator.api import collection as collection_api
from dpo_operator.api.common import Phase
from dpo_operator.api.training import KIND, Backend, DPOTrainingJobSpec
from dpo_operator.handlers import training_customizer, training_local
from dpo_operator.handlers.common import (
    backoff_delay,
    is_transient,
    needs_retry_after_fix,
    parse_spec,
    reconcile_guard,
    reconcile_owner,
    reconcile_pod_owner,
    NEXT_CHECKS,
    reconcile_quietly,
    watch_over,
)
from dpo_operator.kube import resources
from dpo_operator.kube.naming import owner_label
from dpo_operator.kube.status import Outcome, acknowledge_generation, is_terminal, write_status

log = logging.getLogger(__name__)
RESYNC_SECONDS = 60.0
_memos: dict[str, SimpleNamespace] = {}
CANCEL_ATTEMPTS = 5


def reconcile(body: Any, memo: Any = None) -> None:
    if is_terminal(body):
        if not needs_retry_after_fix(body):
            acknowledge_generation(KIND, body)
            return
        # the spec that failed validation was fixed: start over (both backends act only on non-terminal objects)
        write_status(KIND, body, Outcome(Phase.PENDING.value, "SpecChanged", "the spec was fixed after an "
                                         "InvalidSpec failure; trying again"))
        body = resources.read(KIND, body["metadata"]["namespace"], body["metadata"]["name"]) or body
    spec = parse_spec(DPOTrainingJobSpec, body)
    if spec.backend == Backend.CUSTOMIZER.value:
        training_customizer.reconcile(body, spec, memo)
    else:
        training_local.reconcile(body, spec)


def _is_customizer(spec: Any, **_: Any) -> bool:
    return spec.get("backend") == Backend.CUSTOMIZER.value


@kopf.on.create(GROUP, VERSION, KIND.plural)
@kopf.on.resume(GROUP, VERSION, KIND.plural)
@kopf.on.update(GROUP, VERSION, KIND.plural, field="spec")
def training_changed(body: kopf.Body, retry: int, **_: Any) -> None:
    if _is_customizer(body.get("spec") or {}):
        # NeMo calls run in the requeue pool, never in kopf's workers: a hanging service must not hold up others
        watch_over(KIND, body, _paced, next_check, delay=0.0)
        return
    try:
        reconcile_guard(KIND, body, retry, lambda: reconcile(body))
    finally:
        watch_over(KIND, body, _paced, next_check)


def _memo(body: Any) -> SimpleNamespace:
    """Per-object pacing state of the Customizer polls (``next_poll``: when the next one is due)."""
    return _memos.setdefault(body["metadata"]["uid"], SimpleNamespace())


def _paced(body: dict[str, Any]) -> None:
    reconcile(body, _memo(body))


def next_check(body: Any) -> float | None:
    """When to look again: at the next Customizer poll (its interval, longer after failures), or a periodic
    resync of a local training Job in case an event was missed; never once the job finished."""
    if is_terminal(body):
        _memos.pop(body["metadata"]["uid"], None)
        return None
    if not _is_customizer(body.get("spec") or {}):
        return RESYNC_SECONDS
    next_poll = getattr(_memos.get(body["metadata"]["uid"]), "next_poll", None)
    if next_poll is not None:
        return max(0.1, next_poll - time.monotonic())
    return float(((body.get("spec") or {}).get("customizer") or {}).get("pollIntervalSeconds") or 30.0)


def _dispatch(body: dict[str, Any]) -> None:
    """Reconcile now (local backend), or in the requeue pool (customizer: its NeMo calls may hang)."""
    if _is_customizer(body.get("spec") or {}):
        watch_over(KIND, body, _paced, next_check, delay=0.0)
    else:
        reconcile(body)


def _reconcile_quietly(body: dict[str, Any]) -> None:
    reconcile_quietly(KIND, body, _dispatch)


NEXT_CHECKS[KIND.kind] = next_check


@kopf.on.event("batch", "v1", "jobs", labels={owner_label(KIND.kind): kopf.PRESENT})
def training_job_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A trainer or upload Job changed: reconcile its owner."""
    reconcile_owner(KIND, body, namespace, type, _dispatch)


@kopf.on.event("", "v1", "pods", labels={owner_label(KIND.kind): kopf.PRESENT})
def training_pod_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A trainer or upload pod that cannot start changes no Job: watch pods too."""
    reconcile_pod_owner(KIND, body, namespace, type, _dispatch)


@kopf.on.event(GROUP, VERSION, collection_api.KIND.plural)
def dataset_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A collection that finishes releases the training jobs waiting for it."""
    if type == "DELETED" or (body.get("status") or {}).get("phase") not in (Phase.SUCCEEDED.value, Phase.FAILED.value):
        return
    for job in resources.list_in(KIND, namespace):
        ref = ((job.get("spec") or {}).get("dataset") or {}).get("collectionRef") or {}
        if ref.get("name") == body["metadata"]["name"] and not is_terminal(job):
            _reconcile_quietly(job)


@kopf.on.delete(GROUP, VERSION, KIND.plural, when=_is_customizer)
def customizer_deleted(body: kopf.Body, retry: int, **_: Any) -> None:
    """Cancel the remote job; after a few failed attempts let the deletion finish (never stuck Terminating)."""
    name = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    _memos.pop(body["metadata"]["uid"], None)
    try:
        spec = DPOTrainingJobSpec.model_validate(dict(body["spec"]))
    except ValueError:
        return  # an invalid spec never reached the Customizer
    try:
        log.info("DPOTrainingJob %s deleted: %s", name, training_customizer.cancel_remote(body, spec))
    except Exception as exc:
        if is_transient(exc) and retry + 1 < CANCEL_ATTEMPTS:
            raise kopf.TemporaryError(f"cancelling the Customizer job: {exc}", delay=min(30.0, backoff_delay(retry)))
        log.error("DPOTrainingJob %s deleted but its Customizer job could not be cancelled (%s); "
                  "cancel it by hand", name, exc)
