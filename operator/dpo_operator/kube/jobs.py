"""batch/v1 Jobs the operator owns: create once, read their state, read their pods' results."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any


from dpo_operator.api.common import Phase
from dpo_operator.kube import client
from dpo_operator.kube.objects import controller_uid, none_if_missing, read_or_create
from dpo_operator.kube.secrets import check_pod_secrets

log = logging.getLogger(__name__)


def to_dict(obj: Any) -> dict[str, Any]:
    return client.api_client().sanitize_for_serialization(obj)


def get_job(namespace: str, name: str) -> dict[str, Any] | None:
    return none_if_missing(lambda: to_dict(client.batch().read_namespaced_job(name, namespace)))


def ensure_job(namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create the Job, or return the one that already exists under its deterministic name."""
    def create() -> dict[str, Any]:
        check_pod_secrets(namespace, manifest["spec"]["template"]["spec"])  # refuses Secrets that did not opt in
        return to_dict(client.batch().create_namespaced_job(namespace, manifest))

    return read_or_create(lambda: get_job(namespace, manifest["metadata"]["name"]), create, manifest)


def set_suspended(namespace: str, job: dict[str, Any], suspend: bool) -> dict[str, Any]:
    if bool(job["spec"].get("suspend")) == suspend:
        return job
    return to_dict(client.batch().patch_namespaced_job(job["metadata"]["name"], namespace, {"spec": {"suspend": suspend}}))


@dataclass(frozen=True)
class JobState:
    phase: str
    reason: str
    message: str


def job_state(job: dict[str, Any]) -> JobState:
    """The phase a Job implies (Pending / Running / Suspended / Succeeded / Failed) and why."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return JobState(Phase.SUCCEEDED.value, "JobComplete", "the job completed")
        if condition.get("type") in ("Failed", "FailureTarget"):
            reason = condition.get("reason") or "JobFailed"
            return JobState(Phase.FAILED.value, reason, condition.get("message") or f"the job failed ({reason})")
    if job["spec"].get("suspend"):
        return JobState(Phase.SUSPENDED.value, "Suspended", "the job is suspended")
    if (status.get("active") or 0) > 0:
        return JobState(Phase.RUNNING.value, "PodsRunning", f"{status['active']} pod(s) running")
    return JobState(Phase.PENDING.value, "JobCreated", "waiting for the job's pods to start")


def failure_message(namespace: str, job_name: str, state: JobState) -> str:
    """The Job's failure, with the last error a pod reported in its termination message."""
    errors = [r["error"] for r in pod_results(namespace, job_name) if r.get("error")]
    return state.message + (f"; last pod error: {errors[0]}" if errors else "")


def pod_results(namespace: str, job_name: str) -> list[dict[str, Any]]:
    """Termination messages (JSON objects) of the Job's terminated containers, newest first.

    The workload writes its result summary to /dev/termination-log, so pods need no API permissions. Only pods
    the Job controls count: anyone may create a pod carrying the job-name label.
    """
    job = get_job(namespace, job_name)
    if job is None:
        return []
    pods = client.core().list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}")
    results: list[tuple[str, dict[str, Any]]] = []
    for pod in to_dict(pods).get("items", []):
        if controller_uid(pod) != job["metadata"]["uid"]:
            continue
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            if not message:
                continue
            try:
                parsed = json.loads(message)
            except ValueError:
                parsed = {"error": message.strip()[-2000:]}
            if isinstance(parsed, dict):
                parsed.setdefault("exitCode", terminated.get("exitCode"))
                results.append((terminated.get("finishedAt") or "", parsed))
    return [result for _, result in sorted(results, key=lambda item: item[0], reverse=True)]
