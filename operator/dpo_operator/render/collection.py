"""The collection Job of a DPOCollection (pure: spec and configuration in, manifest out)."""

from __future__ import annotations

import json
from typing import Any

from dpo_operator.api.collection import (
    KIND,
    NAT_CONFIG_DIR,
    NAT_CONFIG_ENV,
    NAT_DATASET_DIR,
    NAT_DATASET_ENV,
    NAT_OUTPUT_DIR,
    NAT_OUTPUT_ENV,
    DPOCollectionSpec,
    NatWorkflowSpec,
)
from dpo_operator.collect.nat_settings import SPEC_FIELDS_ENV, fields_set
from dpo_operator.config import OperatorConfig
from dpo_operator.kube.naming import child_name, labels_for
from dpo_operator.kube.pods import container, pod_spec, pvc_volume, secret_env
from dpo_operator.render.job import job, spec_env

SPEC_ENV = "DPO_COLLECTION_SPEC"


def job_name(name: str) -> str:
    return child_name(name, "collect")


def merge_job_name(name: str) -> str:
    return child_name(name, "merge")


def nat_config_maps(nat: NatWorkflowSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes, mounts and env for a NAT workflow's config and dataset ConfigMaps (collection and evaluation pods)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: list[dict[str, Any]] = []
    for volume, ref, directory, var in (("nat-config", nat.config_map_ref, NAT_CONFIG_DIR, NAT_CONFIG_ENV),
                                        ("nat-dataset", nat.dataset_ref, NAT_DATASET_DIR, NAT_DATASET_ENV)):
        if ref is not None:  # the config's whole ConfigMap: its relative paths may name the other keys (data.json)
            items = {} if volume == "nat-config" else {"items": [{"key": ref.key, "path": ref.key}]}
            volumes.append({"name": volume, "configMap": {"name": ref.name, **items}})
            mounts.append({"name": volume, "mountPath": directory, "readOnly": True})
            env.append({"name": var, "value": f"{directory}/{ref.key}"})
    return volumes, mounts, env


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
    config_volumes, config_mounts, config_env = nat_config_maps(nat)
    volumes += config_volumes
    mounts += config_mounts
    env += config_env
    source = nat.workflow_output
    if source is not None:
        root = data_root
        if spec.output.pvc is None or spec.output.pvc.claim_name != source.claim_name:  # else: already mounted
            volumes.append(pvc_volume("nat-output", source, read_only=True))
            mounts.append({"name": "nat-output", "mountPath": NAT_OUTPUT_DIR, "readOnly": True})
            root = NAT_OUTPUT_DIR
        env.append({"name": NAT_OUTPUT_ENV, "value": f"{root.rstrip('/')}/{source.path.strip('/')}".rstrip("/")})
    return volumes, mounts, env


def job_manifest(body: Any, spec: DPOCollectionSpec, config: OperatorConfig, *, merge: bool = False) -> dict[str, Any]:
    """The collection Job: one pod, or with ``parallelism`` > 1 an Indexed Job of that many shard pods (a shard's
    index is its $JOB_COMPLETION_INDEX); ``merge``: the one-pod Job that merges the shards into the dataset."""
    name = body["metadata"]["name"]
    sharded = spec.parallelism > 1 and not merge
    labels = labels_for(KIND.kind, name, "merger" if merge else "collector")
    volumes, mounts = [], []
    if spec.output.pvc is not None:
        volumes.append(pvc_volume("output", spec.output.pvc))
        mounts.append({"name": "output", "mountPath": config.data_root})
    nat_volumes, nat_mounts, nat_env = _nat_inputs(spec, config.data_root)
    volumes.extend(nat_volumes)
    mounts.extend(nat_mounts)
    env = [
        spec_env(SPEC_ENV, spec.to_api()),
        {"name": "DPO_DATA_ROOT", "value": config.data_root},
        {"name": "DPO_RESOURCE_NAME", "value": name},
        *nat_env,
        *secret_env("OPENAI_API_KEY", spec.llm.api_key_secret_ref if spec.llm and not merge else None),
        *secret_env("HF_TOKEN", spec.output.hub.token_secret_ref if spec.output.hub else None),
    ]
    collector = container(
        spec.template, name="collector", default_image=config.workload_image,
        command=["dpo-operator", "collect", "--spec-env", SPEC_ENV, "--result-file", "/dev/termination-log",
                 *(["--shard"] if sharded else ["--merge"] if merge else [])],
        env=env, volume_mounts=mounts,
    )
    indexed = ({"completionMode": "Indexed", "completions": spec.parallelism, "parallelism": spec.parallelism}
               if sharded else None)
    return job(KIND.kind, body, merge_job_name(name) if merge else job_name(name), labels, spec.job, spec.template,
               pod_spec(spec.template, [collector], volumes=volumes, config=config), suspend=spec.suspend, extra=indexed,
               queue_name=spec.queue_name, priority_class=spec.workload_priority_class_name,
               secret_destinations={"OPENAI_API_KEY": spec.llm.base_url if spec.llm and not merge else None,
                                    "HF_TOKEN": spec.output.hub.endpoint if spec.output.hub else None})
