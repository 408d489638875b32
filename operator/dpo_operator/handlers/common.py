"""What the kind modules share on the way *into* the runtime: from an event on a child or a dependency to the
key of the object to reconcile (the runtime does the rest, see :mod:`dpo_operator.runtime.controller`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dpo_operator.api import KindInfo
from dpo_operator.kube.jobs import get_job
from dpo_operator.kube.locks import LOCKS
from dpo_operator.runtime.controller import RUNTIME

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
    fresh read checks the uid."""
    ref = controller_ref(child, kind.kind)
    if event_type != "DELETED" and ref is not None:
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
