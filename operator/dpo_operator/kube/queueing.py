"""A resource's ``spec.suspend`` applied to its Job without fighting Kueue, and the phase the pair implies.

Not managed by Kueue (no ``kueue.x-k8s.io/queue-name`` label, no Workload): the Job's ``spec.suspend`` follows the
resource's, but only a suspension the operator made itself (annotation :data:`kueue.SUSPENDED_BY`) is ever lifted;
a Job someone else holds stays held and reads as Queued. Managed by Kueue (queued, or a Workload exists, as under
``manageJobsWithoutQueueName``): the operator never writes ``spec.suspend`` (Kueue un-suspends admitted Jobs); the
resource's suspend deactivates the Workload instead, and only a Workload it deactivated is reactivated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpo_operator.api.common import Phase, QueueStatus
from dpo_operator.api.reasons import Reason
from dpo_operator.kube import client, kueue
from dpo_operator.kube.jobs import JobState, to_dict


@dataclass
class Queueing:
    """The Job after the suspend was applied, the state Kueue puts it in (None: the Job's own), and status.queue."""

    job: dict[str, Any]
    state: JobState | None
    queue: QueueStatus | None


def _patch(namespace: str, job: dict[str, Any], suspend: bool | None, ours: bool) -> dict[str, Any]:
    patch: dict[str, Any] = {"metadata": {"annotations": {kueue.SUSPENDED_BY: kueue.OPERATOR if ours else None}}}
    if suspend is not None:
        patch["spec"] = {"suspend": suspend}
    return to_dict(client.batch().patch_namespaced_job(job["metadata"]["name"], namespace, patch))


def _finished(job: dict[str, Any]) -> bool:
    return any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed", "SuccessCriteriaMet",
                                                                "FailureTarget")
               for c in (job.get("status") or {}).get("conditions") or [])


def apply(namespace: str, job: dict[str, Any], suspend: bool, created: bool = False) -> Queueing:
    """Apply the resource's ``suspend`` to ``job`` as described above, and read where Kueue has it. ``created``:
    the caller created the Job just now."""
    queue = kueue.queue_of(job)
    if created and queue is None and not suspend and not job["spec"].get("suspend"):
        # Kueue makes a Job's Workload after the Job exists: a Job created just now, unqueued and running, has none
        # to read yet (what reading found nothing would give; a later reconcile reads it)
        return Queueing(job, None, None)
    workload, obj = kueue.read(namespace, job)
    if _finished(job):  # what Kueue did (admission, preemptions) stays in status
        return Queueing(job, None, _status(queue or "", workload) if obj is not None else None)
    ours, held = kueue.suspended_by_us(job), bool(job["spec"].get("suspend"))
    if queue is None and obj is None:  # Kueue does not manage it: spec.suspend is ours to set
        if suspend and not held:
            job = _patch(namespace, job, True, ours=True)
        elif not suspend and ours:
            job = _patch(namespace, job, False if held else None, ours=False)
        if suspend or not job["spec"].get("suspend"):
            return Queueing(job, None, None)
        # held by someone else before Kueue made its Workload (manageJobsWithoutQueueName, presumably)
        return Queueing(job, _queued(workload, ""), _status("", workload))
    if obj is not None and suspend != ours:  # deactivate for the user; reactivate only what we deactivated
        kueue.set_active(namespace, obj, not suspend)
        job = _patch(namespace, job, None, ours=suspend)
        workload, _ = kueue.read(namespace, job)
    status = _status(queue or "", workload)
    if suspend:
        if obj is None:
            return Queueing(job, JobState(Phase.SUSPENDED.value, Reason.Suspended, (
                "suspended; the job's Kueue Workload is not there yet to deactivate"
                + (f" ({workload.unreadable})" if workload.unreadable else ""))), status)
        state = "suspended" if job["spec"].get("suspend") else "suspending (waiting for Kueue to stop the job)"
        return Queueing(job, JobState(Phase.SUSPENDED.value, Reason.Suspended, (
            f"{state}: Kueue Workload {workload.name} is deactivated, out of the queue until spec.suspend is false")),
            status)
    if job["spec"].get("suspend"):
        return Queueing(job, _queued(workload, queue or ""), status)
    if not (job.get("status") or {}).get("active"):
        where = f" by ClusterQueue {workload.cluster_queue}" if workload.cluster_queue else ""
        return Queueing(job, JobState(Phase.PENDING.value, Reason.Admitted,
                                      f"admitted{where}; waiting for the job's pods to start"), status)
    return Queueing(job, None, status)


def _status(queue: str, workload: kueue.Workload) -> QueueStatus:
    return QueueStatus(name=queue, workload=workload.name, admitted=workload.admitted,
                       cluster_queue=workload.cluster_queue, reason=workload.reason,
                       message=workload.message or workload.unreadable, preemptions=workload.preemptions)


def _queued(workload: kueue.Workload, queue: str) -> JobState:
    """Held by Kueue: waiting for admission, or preempted and queued again."""
    where = f"LocalQueue {queue}" if queue else "Kueue (the job has no queue label; Kueue manages every Job)"
    if workload.evicted_reason == "Preempted":
        return JobState(Phase.QUEUED.value, Reason.Preempted, (
            f"preempted by Kueue ({workload.message or 'evicted'}); queued again in {where}: training resumes "
            "from its newest checkpoint when readmitted"))
    if workload.found:
        said = f": Kueue says {workload.reason}: {workload.message}" if workload.reason else ""
        return JobState(Phase.QUEUED.value, Reason.WaitingForAdmission, f"waiting for admission in {where}{said}")
    detail = f" ({workload.unreadable})" if workload.unreadable else ""
    return JobState(Phase.QUEUED.value, Reason.WaitingForAdmission,
                    f"held suspended by Kueue, waiting for admission in {where}{detail}")
