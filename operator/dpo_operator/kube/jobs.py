"""batch/v1 Jobs the operator owns: create once, read their state, read their pods' results."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from dpo_operator.api.common import Phase
from dpo_operator.api.exits import REASONS, UNRECOVERABLE, ExitCode
from dpo_operator.api.reasons import Reason
from dpo_operator.kube import client
from dpo_operator.kube.objects import controller_uid, none_if_missing, ours, read_or_create
from dpo_operator.kube.secrets import SecretMissing, check_pod_secrets

log = logging.getLogger(__name__)


def to_dict(obj: Any) -> dict[str, Any]:
    return client.api_client().sanitize_for_serialization(obj)


def get_job(namespace: str, name: str) -> dict[str, Any] | None:
    return none_if_missing(lambda: to_dict(client.batch().read_namespaced_job(name, namespace)))


class JobGone(Exception):
    """A Job the resource's status already names is not there: someone deleted it. It is never created again."""


def ensure_job(namespace: str, manifest: dict[str, Any], recorded: bool = False) -> dict[str, Any]:
    """Create the Job, or return the one that already exists under its deterministic name.

    ``recorded``: the resource's status already names this Job, so a missing one was deleted (by a person, or by its
    TTL while the operator was down) and :class:`JobGone` is raised instead of creating it. One read decides, so a
    Job deleted between an earlier read of the same reconcile and this one is not re-created behind its back."""
    def create() -> dict[str, Any]:
        if recorded:
            raise JobGone(manifest["metadata"]["name"])
        check_pod_secrets(namespace, manifest["spec"]["template"])  # refuses Secrets that did not opt in
        return to_dict(client.batch().create_namespaced_job(namespace, manifest))

    return read_or_create(lambda: get_job(namespace, manifest["metadata"]["name"]), create, manifest)


def create_or_get_job(namespace: str, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """:func:`ensure_job` for a Job that most likely does not exist yet (its owner has recorded none): create it
    first and read it only when the name is taken (409), one request instead of a read that finds nothing and a
    create. Also says whether this call created it (a Job created just now has no pods yet). Same outcome as
    :func:`ensure_job`: an existing Job is used only when it is ours (:class:`NameConflict` otherwise), and one
    that exists is returned even while a Secret its pods need is missing or cannot be read."""
    name = manifest["metadata"]["name"]
    try:
        check_pod_secrets(namespace, manifest["spec"]["template"])  # refuses Secrets that did not opt in
        return to_dict(client.batch().create_namespaced_job(namespace, manifest)), True
    except (SecretMissing, ApiException):  # 409, or a check that a Job already created no longer needs
        if (existing := get_job(namespace, name)) is not None:
            return ours(existing, manifest), False
        raise


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
            return JobState(Phase.SUCCEEDED.value, Reason.JobComplete, "the job completed")
        if condition.get("type") in ("Failed", "FailureTarget"):
            reason = condition.get("reason") or Reason.JobFailed
            return JobState(Phase.FAILED.value, reason, condition.get("message") or f"the job failed ({reason})")
    if job["spec"].get("suspend"):
        return JobState(Phase.SUSPENDED.value, Reason.Suspended, "the job is suspended")
    if (status.get("active") or 0) > 0:
        return JobState(Phase.RUNNING.value, Reason.PodsRunning, f"{status['active']} pod(s) running")
    return JobState(Phase.PENDING.value, Reason.JobCreated, "waiting for the job's pods to start")


# exit code of a workload that failed on its input (bad spec, missing dataset); all of them: api/exits.py
DETERMINISTIC_EXIT_CODE = int(ExitCode.BAD_INPUT)
# container waiting reasons that mean the pod will not start by itself
WAITING_PROBLEMS = {"CreateContainerConfigError", "CreateContainerError", "ImagePullBackOff", "ErrImagePull",
                    "InvalidImageName", "CrashLoopBackOff", "RunContainerError"}


def pod_failure_policy(container: str) -> dict[str, Any]:
    """Failures no retry can fix (:data:`api.exits.UNRECOVERABLE`) fail the Job at once instead of burning
    ``backoffLimit`` retries; pods disrupted by the cluster (preemption, eviction, node drain) do not count."""
    return {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": container, "operator": "In",
                                              "values": [int(code) for code in UNRECOVERABLE]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]}


def _containers(spec: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(c.get("name"), c.get("image"), c.get("command"), c.get("args"))
            for key in ("initContainers", "containers") for c in spec.get(key) or []]


def job_pods(namespace: str, job_name: str, from_template: bool = False,
             job: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The pods the Job controls (anyone may create a pod carrying the job-name label: those do not count). With
    ``from_template``, only those running the Job's template's containers: anyone allowed to create pods could set
    the Job's owner reference too, and a result is trusted only from our workload's image and command. ``job``:
    the Job as the caller just read it (else it is read here)."""
    job = job if job is not None else get_job(namespace, job_name)
    if job is None:
        return []
    template = _containers(job["spec"]["template"].get("spec") or {})
    pods = client.core().list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}")
    return [pod for pod in to_dict(pods).get("items", []) if controller_uid(pod) == job["metadata"]["uid"]
            and (not from_template or _containers(pod.get("spec") or {}) == template)]


def _statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def pod_problem(namespace: str, job_name: str, job: dict[str, Any] | None = None) -> JobState | None:
    """Why the Job's pods do not start, when they are stuck: a container that cannot be created (missing Secret or
    ConfigMap key), an image that cannot be pulled, a pod no node can take (e.g. more GPUs than any node has).
    ``job``: the Job as the caller just read it (saves reading it again)."""
    for pod in job_pods(namespace, job_name, job=job):
        name = pod["metadata"]["name"]
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for status in _statuses(pod):
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in WAITING_PROBLEMS:
                detail = f": {waiting['message']}" if waiting.get("message") else ""
                return JobState(Phase.PENDING.value, waiting["reason"],
                                f"pod {name}, container {status.get('name')}: {waiting['reason']}{detail}")
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False" \
                    and condition.get("reason") == "Unschedulable":
                return JobState(Phase.PENDING.value, Reason.Unschedulable,
                                f"pod {name} cannot be scheduled: {condition.get('message') or 'no node fits'}")
    return None


def terminations(namespace: str, job_name: str) -> list[dict[str, Any]]:
    """How the Job's containers ended abnormally (reason such as OOMKilled, exit code), newest first; the last
    termination counts too, for containers that were restarted."""
    found: list[dict[str, Any]] = []
    for pod in job_pods(namespace, job_name):
        for status in _statuses(pod):
            for state in (status.get("state") or {}, status.get("lastState") or {}):
                ended = state.get("terminated") or {}
                if ended and (ended.get("exitCode") or 0) != 0:
                    found.append({"pod": pod["metadata"]["name"], "container": status.get("name"),
                                  "reason": ended.get("reason") or "Error", "exitCode": ended.get("exitCode"),
                                  "finishedAt": ended.get("finishedAt") or ""})
    return sorted(found, key=lambda t: t["finishedAt"], reverse=True)


def failure(namespace: str, job_name: str, state: JobState) -> JobState:
    """The Job's failure, explained: an OOM kill becomes the reason; the container's exit code and the last error
    a pod reported in its termination message are added to the message."""
    ended = terminations(namespace, job_name)
    reason, message = state.reason, state.message
    oom = next((t for t in ended if t["reason"] == "OOMKilled"), None)
    if oom is not None:
        reason = Reason.OOMKilled
        message = (f"container {oom['container']} of pod {oom['pod']} was killed for exceeding its memory limit "
                   f"(OOMKilled, exit code {oom['exitCode']}); raise template.resources.limits.memory. {message}")
    elif ended:
        last = ended[0]
        reason = REASONS.get(last["exitCode"], reason)  # the exit-code contract names the cause
        message += f"; container {last['container']} exited with code {last['exitCode']} ({last['reason']})"
    errors = [r["error"] for r in pod_results(namespace, job_name) if r.get("error")]
    return JobState(state.phase, reason, message + (f"; last pod error: {errors[0]}" if errors else ""))


def retrying(namespace: str, job_name: str, job: dict[str, Any], state: JobState) -> JobState:
    """A running Job whose pod failed and is being retried: the first failed pod's error in the message (reason
    ``PodFailing``), so a person sees the cause at once rather than when the last retry has failed too."""
    failed = int((job.get("status") or {}).get("failed") or 0)
    if not failed or state.phase not in (Phase.PENDING.value, Phase.RUNNING.value):
        return state
    ended = terminations(namespace, job_name)
    errors = [r["error"] for r in pod_results(namespace, job_name) if r.get("error")]
    if not ended and not errors:
        return state
    first = ended[-1] if ended else None
    how = f"pod {first['pod']} exited with code {first['exitCode']} ({first['reason']})" if first else "a pod failed"
    limit = job["spec"].get("backoffLimit")
    attempts = f"{failed} of {limit + 1} attempts failed" if isinstance(limit, int) else f"{failed} attempt(s) failed"
    detail = f": {errors[-1]}" if errors else ""
    return JobState(state.phase, Reason.PodFailing, f"{how}{detail}; retrying ({attempts})")


def failure_message(namespace: str, job_name: str, state: JobState) -> str:
    """The Job's failure, with the container's end and the last error a pod reported."""
    return failure(namespace, job_name, state).message


def pod_results(namespace: str, job_name: str) -> list[dict[str, Any]]:
    """Termination messages (JSON objects) of the Job's terminated containers, newest first.

    The workload writes its result summary to /dev/termination-log, so pods need no API permissions. Only pods
    the Job controls count.
    """
    results: list[tuple[str, dict[str, Any]]] = []
    for pod in job_pods(namespace, job_name, from_template=True):
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


def spec_digest(spec: dict[str, Any], mutable: tuple[str, ...] = ()) -> dict[str, str]:
    """A short digest of each spec field (objects' fields one level down, as ``customizer.namespace``), leaving out
    ``mutable`` ones: enough to name what changed since, without keeping the spec itself in status."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            flat[key] = value
    return {key: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]
            for key, value in sorted(flat.items()) if key not in mutable and key.split(".")[0] not in mutable}


def _applied(built: dict[str, Any], current: dict[str, Any], mutable: tuple[str, ...], what: str,
             runs_current: str) -> tuple[bool, str, str]:
    """The SpecApplied condition (status, reason, message) from the spec ``what`` was built from and the current."""
    changed = sorted(k for k in set(built) | set(current) if k not in mutable and built.get(k) != current.get(k))
    if not changed:
        return True, Reason.Applied, runs_current
    return False, Reason.ChangeNotApplied, (f"{what} was created from an earlier spec; changes to {', '.join(changed)} are "
                                       "not applied to it (they take effect only in a new resource)")


def digest_applied(submitted: dict[str, str] | None, current: dict[str, str], what: str) -> tuple[bool, str, str]:
    """SpecApplied from the digest recorded when ``what`` was created and the current spec's."""
    return _applied(current if submitted is None else submitted, current, (), what, f"{what} runs the current spec")


def spec_applied(job: dict[str, Any], env_name: str, current: dict[str, Any],
                 mutable: tuple[str, ...] = ("suspend",)) -> tuple[bool, str, str]:
    """Does the running Job reflect the current spec? Pods cannot change once created: compare the spec the Job
    was built from (in its pods' environment) with the current one, apart from fields applied on the fly."""
    containers = job["spec"]["template"]["spec"].get("containers") or []
    env = next((e.get("value") for c in containers for e in c.get("env") or [] if e.get("name") == env_name), None)
    try:
        built = json.loads(env) if env else None
    except ValueError:
        built = None
    if not isinstance(built, dict):
        return True, Reason.Applied, "the job runs the current spec"
    return _applied(built, current, mutable, f"job {job['metadata']['name']}", "the job runs the current spec")
