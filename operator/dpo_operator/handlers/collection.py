"""DPOCollection reconciler: one collection Job per resource, status read back from the Job and its pod."""

from __future__ import annotations

import json
import logging
from typing import Any

import kopf

from dpo_operator.api import GROUP, VERSION
from dpo_operator.api.collection import (
    KIND,
    NAT_CONFIG_DIR,
    NAT_CONFIG_ENV,
    NAT_DATASET_DIR,
    NAT_DATASET_ENV,
    NAT_OUTPUT_DIR,
    NAT_OUTPUT_ENV,
    DPOCollectionSpec,
)
from dpo_operator.api.common import Phase
from dpo_operator.collect.nat_settings import SPEC_FIELDS_ENV, fields_set
from dpo_operator.config import OperatorConfig
from dpo_operator.handlers.common import (
    NEXT_CHECKS,
    needs_retry_after_fix,
    parse_spec,
    reconcile_guard,
    reconcile_owner,
    reconcile_pod_owner,
    watch_over,
)
from dpo_operator.kube.jobs import (
    JobState,
    ensure_job,
    failure,
    get_job,
    job_state,
    pod_failure_policy,
    pod_problem,
    pod_results,
    set_suspended,
    spec_applied,
)
from dpo_operator.kube.naming import child_name, labels_for, owner_label, owner_reference
from dpo_operator.kube.pods import container, pod_metadata, pod_spec, pvc_volume, secret_env
from dpo_operator.kube.status import Outcome, acknowledge_generation, is_terminal, write_status

log = logging.getLogger(__name__)
SPEC_ENV = "DPO_COLLECTION_SPEC"
RESYNC_SECONDS = 120.0


def job_name(name: str) -> str:
    return child_name(name, "collect")


def _nat_inputs(spec: DPOCollectionSpec, data_root: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                                      list[dict[str, Any]]]:
    """Volumes, mounts and env for a NAT workflow's ConfigMaps, or its offline workflow output on a PVC."""
    nat = spec.workflow.nat
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: list[dict[str, Any]] = []
    if nat is None:
        return volumes, mounts, env
    # the pod's spec has every default filled in: say what the CR sets (a NAT config fills in the rest)
    env.append({"name": SPEC_FIELDS_ENV, "value": json.dumps(sorted(fields_set(spec)))})
    for volume, ref, directory, var in (("nat-config", nat.config_map_ref, NAT_CONFIG_DIR, NAT_CONFIG_ENV),
                                        ("nat-dataset", nat.dataset_ref, NAT_DATASET_DIR, NAT_DATASET_ENV)):
        if ref is not None:  # the config's whole ConfigMap: its relative paths may name the other keys (data.json)
            items = {} if volume == "nat-config" else {"items": [{"key": ref.key, "path": ref.key}]}
            volumes.append({"name": volume, "configMap": {"name": ref.name, **items}})
            mounts.append({"name": volume, "mountPath": directory, "readOnly": True})
            env.append({"name": var, "value": f"{directory}/{ref.key}"})
    source = nat.workflow_output
    if source is not None:
        root = data_root
        if spec.output.pvc is None or spec.output.pvc.claim_name != source.claim_name:  # else: already mounted
            volumes.append(pvc_volume("nat-output", source, read_only=True))
            mounts.append({"name": "nat-output", "mountPath": NAT_OUTPUT_DIR, "readOnly": True})
            root = NAT_OUTPUT_DIR
        env.append({"name": NAT_OUTPUT_ENV, "value": f"{root.rstrip('/')}/{source.path.strip('/')}".rstrip("/")})
    return volumes, mounts, env


def job_manifest(body: Any, spec: DPOCollectionSpec, config: OperatorConfig) -> dict[str, Any]:
    name = body["metadata"]["name"]
    labels = labels_for(KIND.kind, name, "collector")
    volumes, mounts = [], []
    if spec.output.pvc is not None:
        volumes.append(pvc_volume("output", spec.output.pvc))
        mounts.append({"name": "output", "mountPath": config.data_root})
    nat_volumes, nat_mounts, nat_env = _nat_inputs(spec, config.data_root)
    volumes.extend(nat_volumes)
    mounts.extend(nat_mounts)
    env = [
        {"name": SPEC_ENV, "value": json.dumps(spec.to_api(), sort_keys=True)},
        {"name": "DPO_DATA_ROOT", "value": config.data_root},
        {"name": "DPO_RESOURCE_NAME", "value": name},
        *nat_env,
        *secret_env("OPENAI_API_KEY", spec.llm.api_key_secret_ref if spec.llm else None),
        *secret_env("HF_TOKEN", spec.output.hub.token_secret_ref if spec.output.hub else None),
    ]
    collector = container(
        spec.template, name="collector", default_image=config.workload_image,
        command=["dpo-operator", "collect", "--spec-env", SPEC_ENV, "--result-file", "/dev/termination-log"],
        env=env, volume_mounts=mounts,
    )
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.job.backoff_limit,
        "podFailurePolicy": pod_failure_policy("collector"),
        "suspend": spec.suspend,
        "template": {
            "metadata": pod_metadata(spec.template, labels),
            "spec": pod_spec(spec.template, [collector], volumes=volumes),
        },
    }
    if spec.job.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.job.active_deadline_seconds
    if spec.job.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.job.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name),
            "namespace": body["metadata"]["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(KIND.kind, body)],
        },
        "spec": job_spec,
    }


def _result_fields(result: dict[str, Any]) -> dict[str, Any]:
    pairs = result.get("pairs") or {}
    return {
        "pairs": {k: int(pairs.get(k, 0)) for k in ("total", "training", "validation")},
        "candidates": result.get("candidates"),
        "runsCompleted": result.get("runsCompleted"),
        "runsFailed": result.get("runsFailed"),
        "meanScoreDiff": result.get("meanScoreDiff"),
        "datasetLocation": result.get("datasetLocation"),
        "invalidCandidates": result.get("invalidCandidates"),
        "candidatesPerSecond": result.get("candidatesPerSecond"),
    }


def outcome_for(namespace: str, job: dict[str, Any], state: JobState) -> Outcome:
    fields: dict[str, Any] = {"jobName": job["metadata"]["name"]}
    if state.phase == Phase.SUCCEEDED.value:
        result = next((r for r in pod_results(namespace, job["metadata"]["name"]) if "pairs" in r), None)
        if result is None:  # never Succeeded without a result: a training job would proceed on nothing
            fields["failureReason"] = "ResultUnavailable"
            return Outcome(Phase.FAILED.value, "ResultUnavailable",
                           f"job {job['metadata']['name']} completed but no pod of it left a readable result "
                           "(termination message); the dataset cannot be trusted", fields)
        fields.update(_result_fields(result))
        total = fields["pairs"]["total"]
        return Outcome(state.phase, "Collected", f"collected {total} preference pairs", fields)
    if state.phase == Phase.FAILED.value:
        explained = failure(namespace, job["metadata"]["name"], state)
        fields["failureReason"] = explained.reason
        return Outcome(state.phase, explained.reason, explained.message, fields)
    if state.phase in (Phase.PENDING.value, Phase.RUNNING.value):
        state = pod_problem(namespace, job["metadata"]["name"]) or state
    return Outcome(state.phase, state.reason, state.message, fields)


def reconcile(body: Any) -> None:
    if is_terminal(body) and not needs_retry_after_fix(body):
        acknowledge_generation(KIND, body)
        return
    spec = parse_spec(DPOCollectionSpec, body)
    namespace = body["metadata"]["namespace"]
    recorded_job = (body.get("status") or {}).get("jobName")
    if recorded_job and get_job(namespace, recorded_job) is None:
        write_status(KIND, body, Outcome(
            Phase.FAILED.value, "JobMissing",
            f"job {recorded_job} disappeared before its result was recorded (deleted, or removed by "
            "ttlSecondsAfterFinished while the operator was down); delete and re-create the DPOCollection to run again",
            {"failureReason": "JobMissing"}))
        return
    job = ensure_job(namespace, job_manifest(body, spec, OperatorConfig.from_env()))
    job = set_suspended(namespace, job, spec.suspend)
    outcome = outcome_for(namespace, job, job_state(job))
    outcome.applied = spec_applied(job, SPEC_ENV, spec.to_api())
    write_status(KIND, body, outcome)


@kopf.on.create(GROUP, VERSION, KIND.plural)
@kopf.on.resume(GROUP, VERSION, KIND.plural)
@kopf.on.update(GROUP, VERSION, KIND.plural, field="spec")
def collection_changed(body: kopf.Body, retry: int, **_: Any) -> None:
    try:
        reconcile_guard(KIND, body, retry, lambda: reconcile(body))
    finally:
        watch_over(KIND, body, reconcile, next_check)


def next_check(body: Any) -> float | None:
    """A periodic level-based resync while the collection runs, in case a Job or pod event was missed."""
    return None if is_terminal(body) else RESYNC_SECONDS


NEXT_CHECKS[KIND.kind] = next_check


@kopf.on.event("batch", "v1", "jobs", labels={owner_label(KIND.kind): kopf.PRESENT})
def collection_job_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """Job progress (pods started, completion, failure) flows into the owner's status."""
    reconcile_owner(KIND, body, namespace, type, reconcile)


@kopf.on.event("", "v1", "pods", labels={owner_label(KIND.kind): kopf.PRESENT})
def collection_pod_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A pod that cannot start (missing Secret, image pull error, unschedulable) changes no Job: watch pods too."""
    reconcile_pod_owner(KIND, body, namespace, type, reconcile)


