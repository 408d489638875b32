"""The batch/v1 Job envelope every workload shares: owner reference, retries, failure policy, deadlines, TTL."""

from __future__ import annotations

import json
from typing import Any

from dpo_operator.api.common import JobControls, PodOptions
from dpo_operator.kube import kueue
from dpo_operator.kube.jobs import pod_failure_policy
from dpo_operator.kube.naming import owner_reference
from dpo_operator.kube.pods import pod_metadata
from dpo_operator.runtime.errors import InvalidSpec

# Linux refuses to start a process with one environment string ("NAME=value") over MAX_ARG_STRLEN (128 KiB):
# "Argument list too long". The spec travels to the workload in one variable, so its JSON is bounded below that.
SPEC_ENV_LIMIT = 120 * 1024


def spec_env(name: str, api_spec: dict[str, Any]) -> dict[str, str]:
    """The env var carrying the spec to the workload; an InvalidSpec (with its size) when it could not start."""
    value = json.dumps(api_spec, sort_keys=True)
    size = len(value.encode())
    if size > SPEC_ENV_LIMIT:
        raise InvalidSpec(f"spec is {size // 1024} KiB as JSON; the workload receives it in one environment variable, "
                          f"which may hold at most {SPEC_ENV_LIMIT // 1024} KiB (Linux's limit on one variable is "
                          "128 KiB): move large values (prompts, configs) into a ConfigMap the spec refers to")
    return {"name": name, "value": value}


def job(owner_kind: str, owner: Any, name: str, labels: dict[str, str], controls: JobControls, options: PodOptions,
        pod: dict[str, Any], *, suspend: bool | None = None, deadline: bool = True,
        extra: dict[str, Any] | None = None,
        secret_destinations: dict[str, str | None] | None = None,
        queue_name: str | None = None, priority_class: str | None = None) -> dict[str, Any]:
    """A Job named ``name`` controlled by ``owner``, running ``pod`` (a pod spec whose first container is the
    workload). ``deadline`` False leaves out ``activeDeadlineSeconds`` (the upload Job: the Customizer's deadline
    counts from submission); ``extra`` adds Job spec fields (an Indexed Job's completions); ``secret_destinations``
    (env var -> the URL the pod sends that Secret to) becomes the pod template's destinations annotation.
    ``queue_name`` / ``priority_class``: the Kueue LocalQueue and WorkloadPriorityClass labels of the Job (one Job,
    so one Workload admits all its pods). A Job created suspended says the operator suspended it."""
    spec: dict[str, Any] = {
        "backoffLimit": controls.backoff_limit,
        # deterministic failures fail the Job at once, not after retries; disruptions do not count
        "podFailurePolicy": pod_failure_policy(pod["containers"][0]["name"]),
        "template": {"metadata": pod_metadata(options, labels, secret_destinations), "spec": pod},
        **(extra or {}),
    }
    metadata: dict[str, Any] = {"name": name, "namespace": owner["metadata"]["namespace"],
                                "labels": {**labels, **kueue.labels(queue_name, priority_class)},
                                "ownerReferences": [owner_reference(owner_kind, owner)]}
    if suspend is not None:
        spec["suspend"] = suspend
        if suspend:
            metadata["annotations"] = {kueue.SUSPENDED_BY: kueue.OPERATOR}
    if deadline and controls.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = controls.active_deadline_seconds
    if controls.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = controls.ttl_seconds_after_finished
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}

