"""Kueue, read and respected: the labels that queue a Job, who suspended it, and its Workload's state.

Kueue (kueue.sigs.k8s.io) suspends a queued Job at creation, un-suspends it on admission and suspends it again to
preempt. The operator therefore changes ``spec.suspend`` only of Jobs it suspended itself (recorded in
:data:`SUSPENDED_BY`); a user's ``spec.suspend`` on a queued resource deactivates the Job's Workload instead
(``spec.active: false``, Kueue's documented way to stop an admitted workload), which Kueue answers by evicting it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from dpo_operator.kube import client

log = logging.getLogger(__name__)

GROUP, VERSION, WORKLOADS = "kueue.x-k8s.io", "v1beta2", "workloads"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # Kueue labels each Workload with its Job's uid
SUSPENDED_BY = "dpo.ai/suspended-by"  # on a Job: the operator suspended it (for the resource's spec.suspend)
OPERATOR = "dpo-operator"


def labels(queue_name: str | None, priority_class: str | None) -> dict[str, str]:
    """The Job labels Kueue reads: the LocalQueue and the WorkloadPriorityClass."""
    return {**({QUEUE_LABEL: queue_name} if queue_name else {}),
            **({PRIORITY_LABEL: priority_class} if priority_class else {})}


def queue_of(job: dict[str, Any]) -> str | None:
    return (job["metadata"].get("labels") or {}).get(QUEUE_LABEL)


def suspended_by_us(job: dict[str, Any]) -> bool:
    return (job["metadata"].get("annotations") or {}).get(SUSPENDED_BY) == OPERATOR


@dataclass
class Workload:
    """What the operator reads of a Job's Workload (``found`` False: none yet, or Workloads cannot be read)."""

    found: bool
    name: str | None = None
    active: bool = True
    admitted: bool = False
    cluster_queue: str | None = None
    reason: str | None = None
    message: str | None = None
    evicted_reason: str | None = None
    preemptions: int = 0
    unreadable: str | None = None  # why Workloads could not be read (no CRD, no RBAC)


def _condition(workload: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (workload.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def _true(condition: dict[str, Any] | None) -> bool:
    return condition is not None and condition.get("status") == "True"


def find_workload(namespace: str, job: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The Job's Workload (by Kueue's job-uid label, then checked by owner reference), or why it cannot be read."""
    uid = job["metadata"]["uid"]
    try:
        listed = client.custom().list_namespaced_custom_object(GROUP, VERSION, namespace, WORKLOADS,
                                                               label_selector=f"{JOB_UID_LABEL}={uid}")
    except ApiException as exc:
        if exc.status in (403, 404):
            return None, ("Workloads cannot be read (is Kueue installed, and the chart's kueue.enabled set?): "
                          f"{exc.status} {exc.reason}")
        raise
    for workload in listed.get("items") or []:
        if any(ref.get("uid") == uid for ref in workload["metadata"].get("ownerReferences") or []):
            return workload, None
    return None, None


def read(namespace: str, job: dict[str, Any]) -> tuple[Workload, dict[str, Any] | None]:
    """The Job's Workload state, and the Workload object (None when there is none or it cannot be read)."""
    workload, unreadable = find_workload(namespace, job)
    if workload is None:
        return Workload(found=False, unreadable=unreadable), None
    admission = (workload.get("status") or {}).get("admission") or {}
    quota, evicted = _condition(workload, "QuotaReserved"), _condition(workload, "Evicted")
    latest = max((c for c in (quota, evicted) if c is not None), key=lambda c: c.get("lastTransitionTime") or "",
                 default=None)
    return Workload(found=True, name=workload["metadata"]["name"],
                    active=(workload.get("spec") or {}).get("active", True) is not False,
                    admitted=_true(_condition(workload, "Admitted")),
                    cluster_queue=admission.get("clusterQueue"),
                    reason=(latest or {}).get("reason"), message=(latest or {}).get("message"),
                    evicted_reason=evicted.get("reason") if _true(evicted) else None,
                    preemptions=_preemptions(workload)), workload


def _preemptions(workload: dict[str, Any]) -> int:
    stats = ((workload.get("status") or {}).get("schedulingStats") or {}).get("evictions") or []
    return sum(int(e.get("count") or 0) for e in stats if e.get("reason") == "Preempted")


def set_active(namespace: str, workload: dict[str, Any], active: bool) -> None:
    """Deactivate (Kueue evicts it and keeps it out of the queue) or reactivate the Workload."""
    if ((workload.get("spec") or {}).get("active", True) is not False) == active:
        return
    client.custom().patch_namespaced_custom_object(GROUP, VERSION, namespace, WORKLOADS,
                                                   workload["metadata"]["name"], {"spec": {"active": active}})
