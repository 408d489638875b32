"""DPOTrainingJob reconciler, ``local`` backend: our trainer in GPU pods (an Indexed Job for several nodes).

Waits for the referenced DPOCollection to succeed, then runs one training Job (deterministic name) with the
dataset and output PVCs mounted; progress and the result come back through the Job and the pod's termination
message. With ``deployOnCompletion`` it creates a ModelDeployment owned by the job once training succeeds.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from dpo_operator.api import API_VERSION, GROUP, VERSION
from dpo_operator.api import collection as collection_api
from dpo_operator.api import deployment as deployment_api
from dpo_operator.api.common import Phase, PvcLocation, ResourceRequirements
from dpo_operator.api.training import KIND, Backend, DPOTrainingJobSpec
from dpo_operator.config import OperatorConfig
from dpo_operator.handlers.common import InvalidSpec, PermanentFailure, parse_spec, reconcile_guard
from dpo_operator.kube import client, resources
from dpo_operator.kube.jobs import ensure_job, failure_message, job_state, pod_results, set_suspended
from dpo_operator.kube.naming import child_name, labels_for, owner_label, owner_reference
from dpo_operator.kube.pods import container, pod_metadata, pod_spec, secret_env
from dpo_operator.kube.status import Outcome, is_terminal, write_status

log = logging.getLogger(__name__)
SPEC_ENV = "DPO_TRAINING_SPEC"
MOUNT_ROOT = "/mnt/pvc"
MASTER_PORT = 29500


def job_name(name: str) -> str:
    return child_name(name, "train")


def _mounted(location: PvcLocation) -> str:
    return f"{MOUNT_ROOT}/{location.claim_name}/{location.path.strip('/')}".rstrip("/")


def resolve_dataset(body: Any, spec: DPOTrainingJobSpec) -> PvcLocation | Outcome:
    """The dataset's PVC location, or the outcome to report while it is not ready."""
    if spec.dataset.location is not None:
        if spec.dataset.location.pvc is None:
            raise InvalidSpec("dataset.location.hub: the local backend reads datasets from a PVC; use a pvc location "
                              "or backend: customizer")
        return spec.dataset.location.pvc
    assert spec.dataset.collection_ref is not None
    ref = spec.dataset.collection_ref.name
    collection = resources.read(collection_api.KIND, body["metadata"]["namespace"], ref)
    if collection is None:
        return Outcome(Phase.PENDING.value, "WaitingForDataset", f"DPOCollection {ref} does not exist (yet)")
    phase = (collection.get("status") or {}).get("phase")
    if phase in (Phase.FAILED.value, Phase.CANCELLED.value):
        raise PermanentFailure("DatasetFailed", f"DPOCollection {ref} ended {phase}: "
                                                f"{(collection.get('status') or {}).get('message', '')}")
    if phase != Phase.SUCCEEDED.value:
        return Outcome(Phase.PENDING.value, "WaitingForDataset", f"waiting for DPOCollection {ref} (phase {phase or 'unknown'})")
    output = collection_api.DPOCollectionSpec.model_validate(collection["spec"]).output
    if output.pvc is None:
        raise InvalidSpec(f"dataset.collectionRef: DPOCollection {ref} wrote to a hub repo; the local backend needs a PVC")
    return output.pvc


def _command(spec: DPOTrainingJobSpec, name: str, dataset: PvcLocation) -> list[str]:
    local = spec.local
    assert local is not None and local.output is not None
    model = _mounted(spec.model.pvc) if spec.model.pvc else spec.model.name
    train = ["-m", "dpo_operator", "train", "--spec-env", SPEC_ENV, "--model", model,
             "--dataset-dir", _mounted(dataset), "--output-dir", f"{_mounted(local.output)}/{name}",
             "--result-file", "/dev/termination-log"]
    if local.num_nodes > 1:
        return ["sh", "-c", "exec torchrun --nnodes {n} --nproc-per-node {g} --node-rank $JOB_COMPLETION_INDEX "
                "--master-addr $MASTER_ADDR --master-port {p} {args}".format(
                    n=local.num_nodes, g=max(1, local.gpus_per_node), p=MASTER_PORT, args=" ".join(train))]
    if local.gpus_per_node > 1:
        return ["torchrun", "--standalone", f"--nproc-per-node={local.gpus_per_node}", *train]
    return ["dpo-operator", *train[2:]]


def headless_service(body: Any, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": body["metadata"]["namespace"],
                     "labels": labels_for(KIND.kind, body["metadata"]["name"], "trainer"),
                     "ownerReferences": [owner_reference(KIND.kind, body)]},
        "spec": {"clusterIP": "None", "selector": {"batch.kubernetes.io/job-name": name},
                 "ports": [{"name": "rendezvous", "port": MASTER_PORT}], "publishNotReadyAddresses": True},
    }


def job_manifest(body: Any, spec: DPOTrainingJobSpec, dataset: PvcLocation, config: OperatorConfig) -> dict[str, Any]:
    name = body["metadata"]["name"]
    jname = job_name(name)
    local = spec.local
    assert local is not None and local.output is not None
    labels = labels_for(KIND.kind, name, "trainer")
    claims = {dataset.claim_name: True, local.output.claim_name: False}
    if spec.model.pvc is not None:
        claims.setdefault(spec.model.pvc.claim_name, True)
    volumes = [{"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim}} for i, claim in enumerate(claims)]
    mounts = [{"name": f"pvc-{i}", "mountPath": f"{MOUNT_ROOT}/{claim}"} for i, claim in enumerate(claims)]
    volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    env = [{"name": SPEC_ENV, "value": json.dumps(spec.to_api(), sort_keys=True)},
           {"name": "DPO_RESOURCE_NAME", "value": name},
           *secret_env("HF_TOKEN", spec.model.hub.token_secret_ref if spec.model.hub else None)]
    if local.num_nodes > 1:
        env.append({"name": "MASTER_ADDR", "value": f"{jname}-0.{jname}"})
    options = spec.template
    if local.gpus_per_node:  # each pod gets the node's GPUs unless the template says otherwise
        current = options.resources or ResourceRequirements()
        limits = {"nvidia.com/gpu": local.gpus_per_node, **(current.limits or {})}
        options = options.model_copy(update={"resources": current.model_copy(update={"limits": limits})})
    trainer = container(options, name="trainer", default_image=config.workload_image,
                        command=_command(spec, name, dataset), env=env, volume_mounts=mounts)
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.job.backoff_limit, "suspend": spec.suspend,
        "template": {"metadata": pod_metadata(spec.template, labels),
                     "spec": pod_spec(options, [trainer], volumes=volumes)},
    }
    if local.num_nodes > 1:
        job_spec.update(completionMode="Indexed", completions=local.num_nodes, parallelism=local.num_nodes)
        job_spec["template"]["spec"]["subdomain"] = jname
    if spec.job.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.job.active_deadline_seconds
    if spec.job.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.job.ttl_seconds_after_finished
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": jname, "namespace": body["metadata"]["namespace"], "labels": labels,
                         "ownerReferences": [owner_reference(KIND.kind, body)]},
            "spec": job_spec}


def ensure_service(namespace: str, manifest: dict[str, Any]) -> None:
    try:
        client.core().create_namespaced_service(namespace, manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise


def deployment_for(body: Any, spec: DPOTrainingJobSpec) -> dict[str, Any] | None:
    if spec.deploy_on_completion is None:
        return None
    name = body["metadata"]["name"]
    deploy_spec = {**spec.deploy_on_completion.to_api(), "model": {"trainingJobRef": {"name": name}}}
    return {"apiVersion": API_VERSION, "kind": deployment_api.KIND.kind,
            "metadata": {"name": name, "namespace": body["metadata"]["namespace"],
                         "labels": labels_for(KIND.kind, name, "deployment"),
                         "ownerReferences": [owner_reference(KIND.kind, body)]},
            "spec": deploy_spec}


def reconcile(body: Any) -> None:
    if is_terminal(body):
        return
    spec = parse_spec(DPOTrainingJobSpec, body)
    if spec.backend != Backend.LOCAL.value:
        raise PermanentFailure("BackendUnavailable", f"backend {spec.backend!r} is not available in this operator "
                                                     "version; use backend: local")
    if spec.local is None or spec.local.output is None:
        raise InvalidSpec("local.output is required for the local backend: the PVC directory the trained model goes to")
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    dataset = resolve_dataset(body, spec)
    if isinstance(dataset, Outcome):
        write_status(KIND, body, dataset)
        return
    jname = job_name(name)
    if spec.local.num_nodes > 1:
        ensure_service(namespace, headless_service(body, jname))
    job = ensure_job(namespace, job_manifest(body, spec, dataset, OperatorConfig.from_env()))
    job = set_suspended(namespace, job, spec.suspend)
    state = job_state(job)
    fields: dict[str, Any] = {"jobName": jname, "datasetLocation": f"pvc://{dataset.claim_name}/{dataset.path.strip('/')}"}
    if state.phase == Phase.SUCCEEDED.value:
        result = next((r for r in pod_results(namespace, jname) if "outputModel" in r), None)
        if result is not None:
            relative = "/".join(p for p in (spec.local.output.path.strip("/"), name, "final") if p)
            fields["outputModel"] = f"pvc://{spec.local.output.claim_name}/{relative}"
            fields["progress"] = {"percentageDone": 100.0, "stepsCompleted": result.get("steps"),
                                  "epochsCompleted": spec.hyperparameters.epochs,
                                  "trainLoss": result.get("trainLoss"), "valLoss": result.get("valLoss")}
        deployment = deployment_for(body, spec)
        if deployment is not None:
            resources.ensure(deployment_api.KIND, namespace, deployment)
            fields["deploymentName"] = deployment["metadata"]["name"]
        write_status(KIND, body, Outcome(state.phase, "Trained", "training completed", fields))
        return
    if state.phase == Phase.FAILED.value:
        fields["failureReason"] = state.reason
        write_status(KIND, body, Outcome(state.phase, state.reason, failure_message(namespace, jname, state), fields))
        return
    write_status(KIND, body, Outcome(state.phase, state.reason, state.message, fields))


@kopf.on.create(GROUP, VERSION, KIND.plural)
@kopf.on.resume(GROUP, VERSION, KIND.plural)
@kopf.on.update(GROUP, VERSION, KIND.plural, field="spec")
def training_changed(body: kopf.Body, retry: int, **_: Any) -> None:
    reconcile_guard(KIND, body, retry, lambda: reconcile(body))


def _reconcile_quietly(body: dict[str, Any]) -> None:
    try:
        reconcile_guard(KIND, body, 0, lambda: reconcile(body))
    except (kopf.PermanentError, kopf.TemporaryError) as exc:
        log.info("DPOTrainingJob %s: %s", body["metadata"]["name"], exc)


@kopf.on.event("batch", "v1", "jobs", labels={owner_label(KIND.kind): kopf.PRESENT})
def training_job_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        return
    owner = resources.read(KIND, namespace, body["metadata"]["labels"][owner_label(KIND.kind)])
    if owner is not None:
        _reconcile_quietly(owner)


@kopf.on.event(GROUP, VERSION, collection_api.KIND.plural)
def dataset_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A collection that finishes releases the training jobs waiting for it."""
    if type == "DELETED" or (body.get("status") or {}).get("phase") not in (Phase.SUCCEEDED.value, Phase.FAILED.value):
        return
    for job in resources.list_in(KIND, namespace):
        ref = ((job.get("spec") or {}).get("dataset") or {}).get("collectionRef") or {}
        if ref.get("name") == body["metadata"]["name"] and not is_terminal(job):
            _reconcile_quietly(job)


@kopf.timer(GROUP, VERSION, KIND.plural, interval=60, initial_delay=60, when=lambda body, **_: not is_terminal(body))
def training_resync(body: kopf.Body, retry: int, **_: Any) -> None:
    reconcile_guard(KIND, body, retry, lambda: reconcile(body))
