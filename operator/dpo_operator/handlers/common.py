"""What the kind modules share on the way *into* the runtime: from an event on a child or a dependency to the
key of the object to reconcile (the runtime does the rest, see :mod:`dpo_operator.runtime.controller`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kopf

from dpo_operator.api import GROUP, KindInfo
from dpo_operator.kube import custom_objects, events
from dpo_operator.kube.jobs import get_job
from dpo_operator.kube.locks import LOCKS
from dpo_operator.kube.redact import remote_body
from dpo_operator.runtime.controller import RUNTIME, backoff_delay

log = logging.getLogger(__name__)


def needs_retry_after_fix(body: Any) -> bool:
    """A spec fixed after an InvalidSpec failure gets another chance; other terminal states are final."""
    status = body.get("status") or {}
    failed = next((c for c in status.get("conditions") or [] if c.get("type") == "Failed"), {})
    return failed.get("status") == "True" and failed.get("reason") == "InvalidSpec" \
        and body["metadata"].get("generation") != status.get("observedGeneration")


def queue_check(body: Any) -> float | None:
    """Sooner than the resync while Kueue holds the Job or is letting it start (Queued, Admitted, or the user's
    suspend waiting on Kueue): the Workload's state changes without an event the operator watches."""
    status = body.get("status") or {}
    if status.get("queue") and status.get("phase") in ("Queued", "Pending", "Suspended"):
        return RUNTIME.config.queue_check_seconds
    return None


def controller_ref(obj: Any, kind: str) -> dict[str, Any] | None:
    return next((r for r in obj["metadata"].get("ownerReferences") or []
                 if r.get("controller") and r.get("kind") == kind), None)


def enqueue_owner(kind: KindInfo, child: Any, namespace: str, event_type: str | None) -> None:
    """A child (Job, Deployment) changed: reconcile the resource that controls it. Found through the child's
    controller owner reference (the label only selects which children to watch; anyone can set it); the runtime's
    fresh read checks the uid.

    A deleted child enqueues whatever resource has the owner's name *now*: the same one (a person deleted its
    Job: noticed at once), or a re-created one waiting for an earlier incarnation's child to leave (NameConflict)."""
    ref = controller_ref(child, kind.kind)
    if ref is None:
        return
    if event_type == "DELETED":
        current = custom_objects.read(kind, namespace, ref["name"])
        if current is not None and not current["metadata"].get("deletionTimestamp"):
            RUNTIME.enqueue(kind, current)
        return
    RUNTIME.enqueue(kind, {"metadata": {"namespace": namespace, "name": ref["name"], "uid": ref.get("uid")}})


def enqueue_pod_owner(kind: KindInfo, pod: Any, namespace: str, event_type: str | None) -> None:
    """A pod of one of our Jobs changed: reconcile the resource that controls the Job."""
    ref = controller_ref(pod, "Job")
    if event_type == "DELETED" or ref is None:
        return
    job = get_job(namespace, ref["name"])
    if job is not None and job["metadata"].get("uid") == ref.get("uid"):
        enqueue_owner(kind, job, namespace, event_type)


@contextmanager
def object_lock(uid: str, timeout: float) -> Iterator[None]:
    """The object's lock for a deletion handler: waits for a running reconcile (each remote call of which has a
    total deadline); should one still hold it after ``timeout``, the deletion goes ahead rather than hang."""
    lock: threading.RLock = LOCKS[uid]
    acquired = lock.acquire(timeout=timeout)
    if not acquired:
        log.warning("object %s still busy after %.0fs; going ahead with its deletion", uid, timeout)
    try:
        yield
    finally:
        if acquired:
            lock.release()
        LOCKS.pop(uid, None)


FINALIZER = f"{GROUP}/finalizer"
REMOTE_CLEANUP_PENDING = "RemoteCleanupPending"


def remove_finalizer_hint(kind: KindInfo, body: Any) -> str:
    meta = body["metadata"]
    return (f"kubectl patch {kind.plural} {meta['name']} -n {meta['namespace']} --type=json "
            f"-p '[{{\"op\": \"remove\", \"path\": \"/metadata/finalizers\"}}]'")


def not_confirmed(kind: KindInfo, body: Any, what: str, exc: Exception, retry: int) -> kopf.TemporaryError:
    """Remote work a deleted resource created is not confirmed gone: the deletion is retried (backing off) and the
    finalizer stays, so nothing is left running unnoticed; after ``remote_delete_attempts`` a Warning event says
    why and how a person can give up (remove the finalizer, then clean up by hand)."""
    meta = body["metadata"]
    detail = remote_body(str(exc)) or type(exc).__name__
    message = (f"{what} is not confirmed ({detail}); the deletion waits for it (finalizer {FINALIZER}). To give up "
               f"and clean up by hand: {remove_finalizer_hint(kind, body)}")
    log.warning("%s %s/%s, attempt %d: %s", kind.kind, meta["namespace"], meta["name"], retry + 1, message)
    if retry + 1 == RUNTIME.config.remote_delete_attempts:
        events.record(kind, body, "Warning", REMOTE_CLEANUP_PENDING, message, action="Delete")
    return kopf.TemporaryError(message, delay=min(30.0, backoff_delay(retry, RUNTIME.config.max_backoff_seconds)))
