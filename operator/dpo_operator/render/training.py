"""The trainer Job of a local DPOTrainingJob and, for several nodes, its headless Service (pure builders)."""

from __future__ import annotations

import json
from typing import Any

from dpo_operator.api.common import ResourceRequirements, StorageLocation
from dpo_operator.api.training import KIND, DPOTrainingJobSpec
from dpo_operator.config import OperatorConfig
from dpo_operator.kube.naming import (
    MAX_LABEL,
    child_name,
    labels_for,
    owner_reference,
    service_name,
)
from dpo_operator.kube.pods import container, pod_spec, secret_env
from dpo_operator.render.job import job
from dpo_operator.render.paths import MOUNT_ROOT, mounted

SPEC_ENV = "DPO_TRAINING_SPEC"
MASTER_PORT = 29500


def job_name(name: str) -> str:
    """A DNS label short enough that ``{job}-{index}``, the hostname of an Indexed Job's pod, is one too."""
    return child_name(name, "train", limit=MAX_LABEL - 6, hostname=True)


def _dataset_args(dataset: StorageLocation) -> list[str]:
    if dataset.pvc is not None:
        return ["--dataset-dir", mounted(dataset.pvc)]
    assert dataset.hub is not None  # each pod downloads it (token: DATASET_HF_TOKEN)
    return ["--dataset-hub", dataset.hub.repo_id, "--dataset-hub-endpoint", dataset.hub.endpoint,
            "--dataset-hub-revision", dataset.hub.revision]


def _command(spec: DPOTrainingJobSpec, name: str, dataset: StorageLocation) -> list[str]:
    local = spec.local
    assert local is not None and local.output is not None
    model = mounted(spec.model.pvc) if spec.model.pvc else spec.model.name
    train = ["-m", "dpo_operator", "train", "--spec-env", SPEC_ENV, "--model", model, *_dataset_args(dataset),
             "--output-dir", f"{mounted(local.output)}/{name}", "--result-file", "/dev/termination-log"]
    if local.num_nodes > 1:
        return ["sh", "-c", "exec torchrun --nnodes {n} --nproc-per-node {g} --node-rank $JOB_COMPLETION_INDEX "
                "--master-addr $MASTER_ADDR --master-port {p} {args}".format(
                    n=local.num_nodes, g=max(1, local.gpus_per_node), p=MASTER_PORT, args=" ".join(train))]
    if local.gpus_per_node > 1:
        return ["torchrun", "--standalone", f"--nproc-per-node={local.gpus_per_node}", *train]
    return ["dpo-operator", *train[2:]]


def headless_service(body: Any, name: str) -> dict[str, Any]:
    """The Service that gives the Job ``name``'s pods DNS names (its own name is a DNS-1035 form of the Job's)."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(name), "namespace": body["metadata"]["namespace"],
                     "labels": labels_for(KIND.kind, body["metadata"]["name"], "trainer"),
                     "ownerReferences": [owner_reference(KIND.kind, body)]},
        "spec": {"clusterIP": "None", "selector": {"batch.kubernetes.io/job-name": name},
                 "ports": [{"name": "rendezvous", "port": MASTER_PORT}], "publishNotReadyAddresses": True},
    }


def job_manifest(body: Any, spec: DPOTrainingJobSpec, dataset: StorageLocation, config: OperatorConfig) -> dict[str, Any]:
    name = body["metadata"]["name"]
    jname = job_name(name)
    local = spec.local
    assert local is not None and local.output is not None
    labels = labels_for(KIND.kind, name, "trainer")
    claims = {dataset.pvc.claim_name: True} if dataset.pvc is not None else {}
    claims[local.output.claim_name] = False
    if spec.model.pvc is not None:
        claims.setdefault(spec.model.pvc.claim_name, True)
    volumes = [{"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim}} for i, claim in enumerate(claims)]
    mounts = [{"name": f"pvc-{i}", "mountPath": f"{MOUNT_ROOT}/{claim}"} for i, claim in enumerate(claims)]
    volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    env = [{"name": SPEC_ENV, "value": json.dumps(spec.to_api(), sort_keys=True)},
           {"name": "DPO_RESOURCE_NAME", "value": name},
           *secret_env("HF_TOKEN", spec.model.hub.token_secret_ref if spec.model.hub else None),
           *secret_env("DATASET_HF_TOKEN", dataset.hub.token_secret_ref if dataset.hub else None)]
    if local.wandb is not None:  # the run id is the resource's uid: a restarted pod continues the same run
        env += [*secret_env("WANDB_API_KEY", local.wandb.api_key_secret_ref),
                {"name": "WANDB_PROJECT", "value": local.wandb.project}, {"name": "WANDB_NAME", "value": name},
                {"name": "WANDB_RUN_ID", "value": body["metadata"]["uid"]},
                *([{"name": "WANDB_ENTITY", "value": local.wandb.entity}] if local.wandb.entity else [])]
    if local.num_nodes > 1:  # index 0's pod, through the headless Service its subdomain names
        env.append({"name": "MASTER_ADDR", "value": f"{jname}-0.{service_name(jname)}"})
    options = spec.template
    if local.gpus_per_node:  # each pod gets the node's GPUs unless the template says otherwise
        current = options.resources or ResourceRequirements()
        limits = {"nvidia.com/gpu": local.gpus_per_node, **(current.limits or {})}
        options = options.model_copy(update={"resources": current.model_copy(update={"limits": limits})})
    trainer = container(options, name="trainer", default_image=config.workload_image,
                        command=_command(spec, name, dataset), env=env, volume_mounts=mounts)
    pod = pod_spec(options, [trainer], volumes=volumes)
    indexed: dict[str, Any] = {}
    if local.num_nodes > 1:
        indexed = {"completionMode": "Indexed", "completions": local.num_nodes, "parallelism": local.num_nodes}
        pod["subdomain"] = service_name(jname)
    return job(KIND.kind, body, jname, labels, spec.job, spec.template, pod, suspend=spec.suspend, extra=indexed)
