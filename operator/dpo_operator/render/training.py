"""The trainer Job of a local DPOTrainingJob and, for several nodes, its headless Service (pure builders)."""

from __future__ import annotations

from typing import Any

from dpo_operator.api.common import PodOptions, ResourceRequirements, StorageLocation
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
from dpo_operator.render.job import job, spec_env
from dpo_operator.render.paths import MOUNT_ROOT, mounted

SPEC_ENV = "DPO_TRAINING_SPEC"
MASTER_PORT = 29500
TRAINING_GRACE_SECONDS = 300  # between SIGTERM and SIGKILL: the trainer saves a checkpoint in it
RESTARTS_ON_RANK_FAILURE = 3  # torchrun restarts every rank from the newest checkpoint when one dies


def job_name(name: str) -> str:
    """A DNS label short enough that ``{job}-{index}``, the hostname of an Indexed Job's pod, is one too."""
    return child_name(name, "train", limit=MAX_LABEL - 6, hostname=True)


def _dataset_args(dataset: StorageLocation) -> list[str]:
    if dataset.pvc is not None:
        return [f"--dataset-dir={mounted(dataset.pvc)}"]
    assert dataset.hub is not None  # each pod downloads it (token: DATASET_HF_TOKEN)
    return [f"--dataset-hub={dataset.hub.repo_id}", f"--dataset-hub-endpoint={dataset.hub.endpoint}",
            f"--dataset-hub-revision={dataset.hub.revision}"]


def _starting_point_args(spec: DPOTrainingJobSpec) -> list[str]:
    """Where the pod finds model.adapter and referenceModel (a mounted directory, or a hub id by name)."""
    args = [f"--adapter={mounted(spec.model.adapter)}"] if spec.model.adapter is not None else []
    reference = spec.reference_model
    if reference is not None:
        args.append(f"--reference-model={mounted(reference.pvc) if reference.pvc else reference.name}")
    return args


def _starting_point_env(spec: DPOTrainingJobSpec) -> list[dict[str, Any]]:
    """The reference's hub token (its own variable: the model's HF_TOKEN goes to the model's hub only)."""
    hub = spec.reference_model.hub if spec.reference_model is not None else None
    return secret_env("REFERENCE_HF_TOKEN", hub.token_secret_ref if hub else None)


def spec_for_pod(spec: DPOTrainingJobSpec) -> dict[str, Any]:
    """The spec the pod reads. With model.adapter, hyperparameters.lora carries only the fields the user set: the
    trainer compares those with the saved adapter (the others are the adapter's)."""
    api = spec.to_api()
    if spec.model.adapter is not None:
        api["hyperparameters"]["lora"] = spec.hyperparameters.lora.model_dump(
            by_alias=True, exclude_none=True, exclude_unset=True, mode="json")
    return api


def _command(spec: DPOTrainingJobSpec, name: str, dataset: StorageLocation) -> list[str]:
    """The trainer's argv. No shell ever parses it, and every value from the spec travels as ``--flag=value`` (one
    argument, never read as an option even when it starts with ``-``). Several nodes: torchrun takes its rendezvous
    endpoint and id from the environment (``PET_RDZV_ENDPOINT``, ``PET_RDZV_ID``: see :func:`_torchrun_env`); when a
    rank dies, every node's agent restarts its ranks (``--max-restarts``) and they resume from the newest checkpoint
    instead of waiting in a collective until the deadline."""
    local = spec.local
    assert local is not None and local.output is not None
    model = mounted(spec.model.pvc) if spec.model.pvc else spec.model.name
    train = ["-m", "dpo_operator", "train", f"--spec-env={SPEC_ENV}", f"--model={model}", *_dataset_args(dataset),
             *_starting_point_args(spec), f"--output-dir={mounted(local.output)}/{name}", "--result-file=/dev/termination-log"]
    # a rank's death restarts all; on SIGTERM torchrun gives the ranks the pod's grace period to save (less a margin)
    restarts = f"--max-restarts={RESTARTS_ON_RANK_FAILURE}"
    shutdown = f"--shutdown-timeout={max(1, grace_seconds(spec) - 10)}"
    if local.num_nodes > 1:  # one rank's death restarts every rank (c10d rendezvous), which resume from a checkpoint
        return ["torchrun", f"--nnodes={local.num_nodes}", f"--nproc-per-node={max(1, local.gpus_per_node)}",
                "--rdzv-backend=c10d", restarts, shutdown, *train]
    if local.gpus_per_node > 1:
        return ["torchrun", "--standalone", f"--nproc-per-node={local.gpus_per_node}", restarts, shutdown, *train]
    return ["dpo-operator", *train[2:]]


def grace_seconds(spec: DPOTrainingJobSpec) -> int:
    """Seconds a training pod has from SIGTERM to SIGKILL: time to finish a step and save a checkpoint."""
    grace = spec.template.termination_grace_period_seconds
    return TRAINING_GRACE_SECONDS if grace is None else grace


def _reference_hub_endpoint(spec: DPOTrainingJobSpec) -> str | None:
    hub = spec.reference_model.hub if spec.reference_model is not None else None
    return hub.endpoint if hub is not None else None


def _wandb_url(spec: DPOTrainingJobSpec) -> str | None:
    """Where the W&B client sends its key: WANDB_BASE_URL when the template sets it, W&B's cloud otherwise."""
    if spec.local is None or spec.local.wandb is None:
        return None
    custom = next((e.value for e in spec.template.env or [] if e.name == "WANDB_BASE_URL" and e.value), None)
    return custom or "https://api.wandb.ai"


# torchrun's agents otherwise lend their rendezvous store to the ranks and keep it across restarts: the restarted
# ranks would find the dead ranks' addresses there and fail to connect; with this, rank 0 hosts a new one each round
FRESH_STORE_PER_RESTART = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


def _torchrun_env(jname: str, run_id: str) -> list[dict[str, Any]]:
    """torchrun reads each option from ``PET_<OPTION>`` when not given: the c10d rendezvous is hosted by index 0's
    pod (reached through the headless Service its subdomain names), its id the resource's uid; the node rank (the
    pod's completion index, the annotation $JOB_COMPLETION_INDEX is made from) names the pod in torchrun's logs."""
    index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    return [{"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": index}}},
            {"name": "PET_RDZV_ENDPOINT", "value": f"{jname}-0.{service_name(jname)}:{MASTER_PORT}"},
            {"name": "PET_RDZV_ID", "value": run_id}]


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


def _claim_volumes(spec: DPOTrainingJobSpec, dataset: StorageLocation) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The PVCs a trainer or data check pod mounts under MOUNT_ROOT/<claim>: the dataset's, the output's, the
    model's, the starting adapter's and the reference model's (each once; a claim only the last two use is
    mounted read-only)."""
    assert spec.local is not None and spec.local.output is not None
    claims = {dataset.pvc.claim_name: True} if dataset.pvc is not None else {}
    claims[spec.local.output.claim_name] = False
    if spec.model.pvc is not None:
        claims.setdefault(spec.model.pvc.claim_name, True)
    reference = spec.reference_model.pvc if spec.reference_model is not None else None
    read_only = {p.claim_name for p in (spec.model.adapter, reference) if p is not None} - set(claims)
    for claim in sorted(read_only):
        claims[claim] = True
    volumes = [{"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim}} for i, claim in enumerate(claims)]
    mounts = [{"name": f"pvc-{i}", "mountPath": f"{MOUNT_ROOT}/{claim}", **({"readOnly": True} if claim in read_only
                                                                           else {})} for i, claim in enumerate(claims)]
    return volumes, mounts


def job_manifest(body: Any, spec: DPOTrainingJobSpec, dataset: StorageLocation, config: OperatorConfig) -> dict[str, Any]:
    name = body["metadata"]["name"]
    jname = job_name(name)
    local = spec.local
    assert local is not None and local.output is not None
    labels = labels_for(KIND.kind, name, "trainer")
    volumes, mounts = _claim_volumes(spec, dataset)
    volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    env = [spec_env(SPEC_ENV, spec_for_pod(spec)),
           {"name": "DPO_RESOURCE_NAME", "value": name},
           *secret_env("HF_TOKEN", spec.model.hub.token_secret_ref if spec.model.hub else None),
           *_starting_point_env(spec),
           *secret_env("DATASET_HF_TOKEN", dataset.hub.token_secret_ref if dataset.hub else None)]
    if local.wandb is not None:  # the run id is the resource's uid: a restarted pod continues the same run
        env += [*secret_env("WANDB_API_KEY", local.wandb.api_key_secret_ref),
                {"name": "WANDB_PROJECT", "value": local.wandb.project}, {"name": "WANDB_NAME", "value": name},
                {"name": "WANDB_RUN_ID", "value": body["metadata"]["uid"]},
                *([{"name": "WANDB_ENTITY", "value": local.wandb.entity}] if local.wandb.entity else [])]
    if local.num_nodes > 1:
        env += _torchrun_env(jname, body["metadata"]["uid"])
    if local.num_nodes > 1 or local.gpus_per_node > 1:  # torchrun: a fresh store for the ranks of each restart
        env.append({"name": FRESH_STORE_PER_RESTART, "value": "1"})
    options = spec.template
    if local.gpus_per_node:  # each pod gets the node's GPUs unless the template says otherwise
        current = options.resources or ResourceRequirements()
        limits = {"nvidia.com/gpu": local.gpus_per_node, **(current.limits or {})}
        options = options.model_copy(update={"resources": current.model_copy(update={"limits": limits})})
    trainer = container(options, name="trainer", default_image=config.workload_image,
                        command=_command(spec, name, dataset), env=env, volume_mounts=mounts)
    # SIGTERM (preemption, suspension) makes the trainer save a checkpoint: give it time to finish one
    pod = pod_spec(options, [trainer], volumes=volumes, config=config, terminationGracePeriodSeconds=grace_seconds(spec))
    indexed: dict[str, Any] = {}
    if local.num_nodes > 1:
        indexed = {"completionMode": "Indexed", "completions": local.num_nodes, "parallelism": local.num_nodes}
        pod["subdomain"] = service_name(jname)
    return job(KIND.kind, body, jname, labels, spec.job, spec.template, pod, suspend=spec.suspend, extra=indexed,
               queue_name=spec.queue_name, priority_class=spec.workload_priority_class_name,
               secret_destinations={"HF_TOKEN": spec.model.hub.endpoint if spec.model.hub else None,
                                    "DATASET_HF_TOKEN": dataset.hub.endpoint if dataset.hub else None,
                                    "REFERENCE_HF_TOKEN": _reference_hub_endpoint(spec),
                                    "WANDB_API_KEY": _wandb_url(spec)})


GPU_RESOURCE = "nvidia.com/gpu"


def check_job_name(name: str) -> str:
    return child_name(name, "datacheck")


def check_card_dir(spec: DPOTrainingJobSpec, name: str) -> str:
    """Where the check pod writes the data card and histogram: beside the run's output."""
    assert spec.local is not None and spec.local.output is not None
    return f"{mounted(spec.local.output)}/{name}/data-check"


def _cpu_only(options: PodOptions) -> PodOptions:
    """The template without GPUs: the check must never hold one (requests and limits of nvidia.com/gpu dropped)."""
    if options.resources is None:
        return options
    keep = {field: {k: v for k, v in (getattr(options.resources, field) or {}).items() if k != GPU_RESOURCE} or None
            for field in ("limits", "requests")}
    return options.model_copy(update={"resources": options.resources.model_copy(update=keep)})


def check_job_manifest(body: Any, spec: DPOTrainingJobSpec, dataset: StorageLocation,
                       config: OperatorConfig) -> dict[str, Any]:
    """The data check Job: one CPU-only pod that reads the dataset as the trainer will, with the model's tokenizer,
    and reports a DataCheckResult; the training Job is created only once it passed."""
    name = body["metadata"]["name"]
    local = spec.local
    assert local is not None and local.output is not None
    labels = labels_for(KIND.kind, name, "datacheck")
    volumes, mounts = _claim_volumes(spec, dataset)
    model = mounted(spec.model.pvc) if spec.model.pvc else spec.model.name
    command = ["dpo-operator", "check-data", f"--spec-env={SPEC_ENV}", f"--model={model}", *_dataset_args(dataset),
               *_starting_point_args(spec), f"--card-dir={check_card_dir(spec, name)}", "--result-file=/dev/termination-log"]
    env = [spec_env(SPEC_ENV, spec_for_pod(spec)),
           {"name": "DPO_DATASET_LOCATION", "value": dataset.describe()},
           *secret_env("HF_TOKEN", spec.model.hub.token_secret_ref if spec.model.hub else None),
           *secret_env("DATASET_HF_TOKEN", dataset.hub.token_secret_ref if dataset.hub else None)]
    options = _cpu_only(spec.template)
    checker = container(options, name="datacheck", default_image=config.workload_image, command=command, env=env,
                        volume_mounts=mounts)
    pod = pod_spec(options, [checker], volumes=volumes, config=config)
    return job(KIND.kind, body, check_job_name(name), labels, spec.job, options, pod, suspend=spec.suspend,
               secret_destinations={"HF_TOKEN": spec.model.hub.endpoint if spec.model.hub else None,
                                    "DATASET_HF_TOKEN": dataset.hub.endpoint if dataset.hub else None})
