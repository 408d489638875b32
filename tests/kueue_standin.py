"""A small stand-in for Kueue's controller, behaving as Kueue's documentation says (kueue.sigs.k8s.io: tasks/run/jobs,
concepts/workload, concepts/preemption), against Kueue's real CRDs (tests/fixtures/kueue, v0.19.2) installed into
the emulated API server, so every Workload, ClusterQueue and LocalQueue it writes is validated by Kueue's schema.

- its "webhook" suspends a batch/v1 Job at creation when the Job carries ``kueue.x-k8s.io/queue-name`` (or every
  Job, with ``manage_all``: Kueue's ``manageJobsWithoutQueueName``);
- it creates one Workload per queued Job (one pod set: an Indexed Job's pods are admitted as one gang), labelled
  with the Job's uid and owned by it;
- it admits Workloads by a ClusterQueue's ``pods`` quota, highest WorkloadPriorityClass first (then oldest: Kueue's
  StrictFIFO, by creation time and, within one second, creation order): quota
  reserved, Admitted, and the Job un-suspended; a Workload that does not fit stays Pending with Kueue's message;
- a pending Workload that does not fit preempts admitted ones of lower priority: Evicted (reason Preempted),
  the Job suspended, the quota released once the Job has no active pod, and the preempted Workload queued again;
- a Workload with ``spec.active: false`` is evicted (reason Deactivated) and its Job suspended until reactivated.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException

from dpo_operator.kube.kueue import GROUP, JOB_UID_LABEL, PRIORITY_LABEL, QUEUE_LABEL, VERSION
from dpo_operator.kubeemu.admission import mutating

log = logging.getLogger(__name__)
CRDS = Path(__file__).parent / "fixtures" / "kueue"
FLAVOR = "default-flavor"


def install_crds(api: kubernetes.client.ApiClient) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(api)
    for path in sorted(CRDS.glob("*.yaml.gz")):
        with gzip.open(path) as packed:
            crd = yaml.safe_load(packed)
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _set(conditions: list[dict[str, Any]], kind: str, status: bool, reason: str, message: str) -> None:
    new = {"type": kind, "status": "True" if status else "False", "reason": reason, "message": message,
           "lastTransitionTime": _now()}
    for i, condition in enumerate(conditions):
        if condition["type"] == kind:
            if condition["status"] != new["status"] or condition["reason"] != reason:
                conditions[i] = new
            return
    conditions.append(new)


def _true(workload: dict[str, Any], kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in (workload.get("status") or {}).get("conditions") or [])


class KueueStandIn:
    """Kueue for one namespace: ClusterQueue ``cq-<namespace>`` with ``pods`` quota, LocalQueue ``queue``."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, queue: str = "team", pods: int = 1,
                 manage_all: bool = False, priorities: dict[str, int] | None = None) -> None:
        self.api, self.namespace, self.queue, self.pods, self.manage_all = api, namespace, queue, pods, manage_all
        self.batch = kubernetes.client.BatchV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.cluster_queue = f"cq-{namespace}"
        self.priorities = priorities or {}
        self.admitting = threading.Event()  # cleared: nothing is admitted (a test watches a Job wait)
        self.admitting.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kueue-standin", daemon=True)
        self._hook = mutating(self._webhook)
        self._created: dict[str, int] = {}  # workload name -> creation order (timestamps have 1 s resolution)

    # ---------------------------------------------------------------- set-up

    def _objects(self) -> None:
        install_crds(self.api)
        for plural, body in (
            ("resourceflavors", {"kind": "ResourceFlavor", "metadata": {"name": FLAVOR}}),
            ("clusterqueues", {"kind": "ClusterQueue", "metadata": {"name": self.cluster_queue}, "spec": {
                "namespaceSelector": {}, "preemption": {"withinClusterQueue": "LowerPriority"},
                "resourceGroups": [{"coveredResources": ["pods"], "flavors": [
                    {"name": FLAVOR, "resources": [{"name": "pods", "nominalQuota": self.pods}]}]}]}}),
            *[("workloadpriorityclasses", {"kind": "WorkloadPriorityClass", "metadata": {"name": name},
                                           "value": value}) for name, value in self.priorities.items()],
        ):
            try:
                self.custom.create_cluster_custom_object(GROUP, VERSION, plural,
                                                         {"apiVersion": f"{GROUP}/{VERSION}", **body})
            except ApiException as exc:
                if exc.status != 409:
                    raise
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "localqueues", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "LocalQueue", "metadata": {"name": self.queue},
            "spec": {"clusterQueue": self.cluster_queue}})

    def __enter__(self) -> "KueueStandIn":
        self._objects()
        self._hook.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._hook.__exit__(None, None, None)

    def _webhook(self, group: str, kind: str, obj: dict[str, Any]) -> None:
        """Kueue's Job webhook: a queued Job starts suspended."""
        labels = obj["metadata"].get("labels") or {}
        if (group, kind) == ("batch", "Job") and obj["metadata"].get("namespace") == self.namespace \
                and (QUEUE_LABEL in labels or self.manage_all):
            obj["spec"]["suspend"] = True

    # ---------------------------------------------------------------- the controller

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except ApiException as exc:  # a conflict or a vanished object: next round
                log.debug("kueue stand-in: %s", exc)
            self._stop.wait(0.1)

    def workloads(self) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "workloads")["items"]

    def workload_of(self, job_name: str) -> dict[str, Any] | None:
        return next((w for w in self.workloads() if w["metadata"]["ownerReferences"][0]["name"] == job_name), None)

    def _jobs(self) -> dict[str, dict[str, Any]]:
        jobs = self.api.sanitize_for_serialization(self.batch.list_namespaced_job(self.namespace))["items"]
        return {j["metadata"]["uid"]: j for j in jobs
                if QUEUE_LABEL in (j["metadata"].get("labels") or {}) or self.manage_all}

    def _priority(self, workload: dict[str, Any]) -> int:
        return int(workload["spec"].get("priority") or 0)

    def _create_workload(self, job: dict[str, Any]) -> None:
        labels = job["metadata"].get("labels") or {}
        template = job["spec"]["template"]
        spec: dict[str, Any] = {"queueName": labels.get(QUEUE_LABEL, self.queue), "podSets": [{
            "name": "main", "count": job["spec"].get("parallelism") or 1,
            "template": {"metadata": {"labels": template["metadata"].get("labels") or {}}, "spec": template["spec"]}}]}
        if labels.get(PRIORITY_LABEL) in self.priorities:
            spec.update(priorityClassRef={"group": GROUP, "kind": "WorkloadPriorityClass",
                                          "name": labels[PRIORITY_LABEL]},
                        priority=self.priorities[labels[PRIORITY_LABEL]])
        name = f"job-{job['metadata']['name']}-{job['metadata']['uid'][:5]}"
        self._created[name] = len(self._created)
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "workloads", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Workload",
            "metadata": {"name": name,
                         "labels": {JOB_UID_LABEL: job["metadata"]["uid"]},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                                              "uid": job["metadata"]["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": spec})

    def _status(self, workload: dict[str, Any], status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, self.namespace, "workloads",
                                                          workload["metadata"]["name"], {"status": status})

    def _suspend(self, job: dict[str, Any], suspend: bool) -> None:
        if bool(job["spec"].get("suspend")) != suspend:
            self.batch.patch_namespaced_job(job["metadata"]["name"], self.namespace, {"spec": {"suspend": suspend}})

    def _evict(self, workload: dict[str, Any], job: dict[str, Any], reason: str, message: str) -> None:
        conditions = list((workload.get("status") or {}).get("conditions") or [])
        _set(conditions, "Evicted", True, reason, message)
        if reason == "Preempted":
            _set(conditions, "Preempted", True, "InClusterQueue", message)
        status: dict[str, Any] = {"conditions": conditions}
        if reason == "Preempted":
            stats = ((workload.get("status") or {}).get("schedulingStats") or {}).get("evictions") or []
            count = sum(e["count"] for e in stats if e["reason"] == "Preempted") + 1
            status["schedulingStats"] = {"evictions": [
                {"reason": "Preempted", "underlyingCause": "InClusterQueue", "count": count}]}
        self._status(workload, status)
        self._suspend(job, True)

    def _release(self, workload: dict[str, Any]) -> None:
        """The evicted Job has no pod left: its quota is free, the Workload queued again (Requeued)."""
        conditions = list(workload["status"]["conditions"])
        evicted = next(c for c in conditions if c["type"] == "Evicted")
        _set(conditions, "QuotaReserved", False, "Pending", evicted["message"])
        _set(conditions, "Admitted", False, "NoReservation", "The workload has no reservation")
        _set(conditions, "Requeued", evicted["reason"] == "Preempted", evicted["reason"], evicted["message"])
        self._status(workload, {"conditions": conditions, "admission": None})

    def _admit(self, workload: dict[str, Any], job: dict[str, Any]) -> None:
        count = workload["spec"]["podSets"][0]["count"]
        conditions = list((workload.get("status") or {}).get("conditions") or [])
        message = f"Quota reserved in ClusterQueue {self.cluster_queue}"
        _set(conditions, "QuotaReserved", True, "QuotaReserved", message)
        _set(conditions, "Admitted", True, "Admitted", "The workload is admitted")
        for kind in ("Evicted", "Preempted", "Requeued"):  # Kueue resets them on a new reservation
            if any(c["type"] == kind and c["status"] == "True" for c in conditions):
                _set(conditions, kind, False, "QuotaReserved", "Previously: evicted")
        self._status(workload, {"conditions": conditions, "admission": {
            "clusterQueue": self.cluster_queue,
            "podSetAssignments": [{"name": "main", "count": count, "flavors": {"pods": FLAVOR},
                                   "resourceUsage": {"pods": str(count)}}]}})
        self._suspend(job, False)

    def _pending(self, workload: dict[str, Any], needed: int) -> None:
        conditions = list((workload.get("status") or {}).get("conditions") or [])
        _set(conditions, "QuotaReserved", False, "Pending",
             f"couldn't assign flavors to pod set main: insufficient unused quota for pods in flavor {FLAVOR}, "
             f"{needed} more needed")
        self._status(workload, {"conditions": conditions})

    def reconcile(self) -> None:
        jobs = self._jobs()
        workloads = {w["metadata"]["labels"][JOB_UID_LABEL]: w for w in self.workloads()}
        for uid, job in jobs.items():
            if uid not in workloads:
                self._create_workload(job)
        workloads = {uid: w for uid, w in ((w["metadata"]["labels"][JOB_UID_LABEL], w) for w in self.workloads())
                     if uid in jobs}

        def finished(uid: str) -> bool:
            return any(c["status"] == "True" and c["type"] in ("Complete", "Failed")
                       for c in (jobs[uid].get("status") or {}).get("conditions") or [])

        used = 0
        for uid, workload in workloads.items():
            reserved = (workload.get("status") or {}).get("admission") is not None
            if not reserved or finished(uid):
                continue
            job = jobs[uid]
            if workload["spec"].get("active") is False and not _true(workload, "Evicted"):
                self._evict(workload, job, "Deactivated", "The workload is deactivated")
            elif _true(workload, "Evicted") and not (job.get("status") or {}).get("active"):
                self._release(workload)
                continue
            used += workload["spec"]["podSets"][0]["count"]
        pending = sorted((w for uid, w in workloads.items() if not finished(uid)
                          and (w.get("status") or {}).get("admission") is None
                          and w["spec"].get("active") is not False),
                         key=lambda w: (-self._priority(w), w["metadata"]["creationTimestamp"],
                                        self._created.get(w["metadata"]["name"], 0)))
        for workload in pending if self.admitting.is_set() else []:
            uid, count = workload["metadata"]["labels"][JOB_UID_LABEL], workload["spec"]["podSets"][0]["count"]
            if used + count <= self.pods:
                self._admit(workload, jobs[uid])
                used += count
                continue
            self._pending(workload, used + count - self.pods)
            victims = [w for u, w in workloads.items() if (w.get("status") or {}).get("admission") is not None
                       and not finished(u) and not _true(w, "Evicted") and self._priority(w) < self._priority(workload)]
            for victim in victims:  # freed once their Jobs stop (see _release)
                self._evict(victim, jobs[victim["metadata"]["labels"][JOB_UID_LABEL]], "Preempted",
                            f"Preempted to accommodate a workload (UID: {uid}) due to prioritization in the "
                            "ClusterQueue")
