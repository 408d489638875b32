"""The NIMService and NIMCache (``apps.nvidia.com/v1alpha1``, NVIDIA NIM Operator) of a ModelDeployment with
backend ``nimOperator`` (pure builders).

The NIM Operator mounts a NIMService's storage at ``/model-store`` (one volume: a PVC, a NIMCache's PVC or an
emptyDir) and injects ``NIM_SERVER_PORT``, ``NIM_CACHE_PATH`` and ``NGC_API_KEY`` (from ``authSecret``, key
``NGC_API_KEY``) itself. Weights on a PVC are therefore served from ``/model-store/<path>`` (``NIM_MODEL_NAME``),
and a LoRA adapter through ``NIM_PEFT_SOURCE`` = its parent directory on the same claim, re-scanned every
``NIM_PEFT_REFRESH_INTERVAL`` seconds (the NIM Operator's documented LoRA set-up): the NIM serves the base model
and lists each adapter directory under its directory name.
"""

from __future__ import annotations

import posixpath
from typing import Any

from dpo_operator.api.deployment import KIND, CacheSource, ModelDeploymentSpec
from dpo_operator.kube.naming import child_name, labels_for, owner_reference
from dpo_operator.render.nim import REVISION_ANNOTATION
from dpo_operator.serving.model import ServedModel

API_GROUP = "apps.nvidia.com"
API_VERSION = "v1alpha1"
MODEL_STORE = "/model-store"  # where the NIM Operator mounts spec.storage (utils.DefaultModelStorePath)
NGC_KEY = "NGC_API_KEY"  # the key the NIM Operator reads from authSecret
HF_KEY = "HF_TOKEN"  # the key it reads from a Hugging Face authSecret
STARTUP_PERIOD = 10


class NotServable(ValueError):
    """The model cannot be laid out the way a NIMService mounts storage (the message says why and what to do)."""


def split_image(image: str) -> tuple[str, str]:
    """``registry/repo:tag`` → (``registry/repo``, ``tag``); no tag (or a digest) → ``latest`` / the digest."""
    if "@" in image:
        repository, digest = image.split("@", 1)
        return repository, digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1:]
    return image, "latest"


def cache_name(name: str) -> str:
    return child_name(name, "cache")


def store_path(path: str) -> str:
    """A directory of the claim as the NIM sees it under ``/model-store``."""
    return posixpath.normpath(posixpath.join(MODEL_STORE, path.strip("/"))) if path.strip("/") else MODEL_STORE


def served_adapter_name(model: ServedModel) -> str:
    """The name the NIM lists an adapter under: its directory's name (NIM_PEFT_SOURCE holds one directory per
    adapter; a NIMService has no per-adapter mounts to rename it)."""
    assert model.adapter is not None
    return posixpath.basename(model.adapter.path.rstrip("/")) or model.served_name


def _storage(spec: ModelDeploymentSpec, model: ServedModel, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """spec.storage and the model's env (NIM_MODEL_NAME, NIM_PEFT_SOURCE)."""
    settings = spec.nim_operator_settings
    env: list[dict[str, Any]] = []
    storage: dict[str, Any] = {"sharedMemorySizeLimit": spec.shared_memory_size}
    claim = (model.weights or model.adapter).claim_name if (model.weights or model.adapter) else None
    if model.adapter is not None and model.weights is not None and model.adapter.claim_name != model.weights.claim_name:
        raise NotServable(
            f"backend nimOperator mounts one PVC per NIMService, but the base model is on PVC "
            f"{model.weights.claim_name!r} and the LoRA adapter on {model.adapter.claim_name!r}: put both on one claim "
            "(the training job's model.pvc and output on the same PVC) or use backend: kubernetes")
    if claim is not None:
        # an adapter on the NIM's own model (no weights given): the NIM also caches its model profile on that
        # claim, as in the NIM Operator's LoRA sample, so it stays writable
        storage.update(pvc={"name": claim}, readOnly=model.weights is not None)
        if model.weights is not None:
            env.append({"name": "NIM_MODEL_NAME", "value": store_path(model.weights.path)})
        if model.adapter is not None:
            parent = posixpath.dirname(model.adapter.path.rstrip("/")) or "/"
            env += [{"name": "NIM_PEFT_SOURCE", "value": store_path(parent)},
                    {"name": "NIM_PEFT_REFRESH_INTERVAL", "value": str(settings.peft_refresh_interval_seconds)}]
    elif settings.cache is not None:
        storage["nimCache"] = {"name": cache_name(name)}
    elif spec.model_cache_pvc:
        storage["pvc"] = {"name": spec.model_cache_pvc}
    else:
        storage["emptyDir"] = {}
    return storage, env


def _pod_fields(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """The pod knobs of spec.template the NIMService passes to its Deployment."""
    template = spec.template
    resources = (template.resources.to_api() if template.resources is not None
                 else {"limits": {"nvidia.com/gpu": spec.nim_operator_settings.gpus}} if spec.nim_operator_settings.gpus else None)
    fields = {"resources": resources, "nodeSelector": template.node_selector, "tolerations": template.tolerations,
              "affinity": template.affinity, "priorityClassName": template.priority_class_name,
              "labels": template.labels, "annotations": template.annotations}
    return {key: value for key, value in fields.items() if value}


def nim_service(body: Any, spec: ModelDeploymentSpec, model: ServedModel, image: str, rev: str) -> dict[str, Any]:
    """The NIMService that serves ``model``; raises :class:`NotServable` for a layout it cannot mount."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    settings = spec.nim_operator_settings
    storage, model_env = _storage(spec, model, name)
    repository, tag = split_image(image)
    image_spec: dict[str, Any] = {"repository": repository, "tag": tag, "pullPolicy": spec.template.image_pull_policy}
    if spec.template.image_pull_secrets:
        image_spec["pullSecrets"] = [s.name for s in spec.template.image_pull_secrets]
    env = [{"name": "NIM_SERVED_MODEL_NAME", "value": model.base_name if model.adapter else model.served_name},
           *model_env, *[e.to_api() for e in spec.template.env or []]]
    startup = {"httpGet": {"path": "/v1/health/ready", "port": "api"}, "periodSeconds": STARTUP_PERIOD,
               "timeoutSeconds": 5, "failureThreshold": max(1, spec.startup_timeout_seconds // STARTUP_PERIOD)}
    nim_spec: dict[str, Any] = {
        "image": image_spec, "env": env, "storage": storage,
        "expose": {"service": {"type": spec.service_type, "port": spec.port}},
        "startupProbe": {"enabled": True, "probe": startup},
        **_pod_fields(spec),
    }
    if spec.ngc_api_key_secret_ref is not None:
        nim_spec["authSecret"] = spec.ngc_api_key_secret_ref.name
    if settings.autoscaling is not None:
        hpa: dict[str, Any] = {"minReplicas": settings.autoscaling.min_replicas,
                               "maxReplicas": settings.autoscaling.max_replicas}
        if settings.autoscaling.metrics:
            hpa["metrics"] = settings.autoscaling.metrics
        if settings.autoscaling.behavior:
            hpa["behavior"] = settings.autoscaling.behavior
        nim_spec["scale"] = {"enabled": True, "hpa": hpa}
    else:
        nim_spec["replicas"] = spec.replicas
    if settings.service_monitor:
        nim_spec["metrics"] = {"enabled": True, "serviceMonitor": {}}
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "NIMService",
        "metadata": {"name": name, "namespace": namespace, "labels": labels_for(KIND.kind, name, "nim"),
                     "annotations": {REVISION_ANNOTATION: rev}, "ownerReferences": [owner_reference(KIND.kind, body)]},
        "spec": nim_spec,
    }


def nim_cache(body: Any, spec: ModelDeploymentSpec, model: ServedModel, image: str) -> dict[str, Any] | None:
    """The NIMCache that downloads a hub model once into a PVC (None unless nimOperator.cache is set and the model
    has no weights on a PVC)."""
    settings = spec.nim_operator_settings.cache
    if settings is None or model.weights is not None or model.adapter is not None:
        return None
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    if settings.source == CacheSource.HUGGING_FACE.value:
        assert settings.hf_token_secret_ref is not None and settings.model_puller  # checked by the spec's validator
        organisation, _, repo = model.base_name.partition("/")
        source: dict[str, Any] = {"hf": {"endpoint": settings.hf_endpoint, "namespace": organisation,
                                         "modelName": repo, "authSecret": settings.hf_token_secret_ref.name,
                                         "modelPuller": settings.model_puller, "pullSecret": settings.pull_secret}}
    else:
        assert spec.ngc_api_key_secret_ref is not None  # checked by the spec's validator
        ngc: dict[str, Any] = {"authSecret": spec.ngc_api_key_secret_ref.name,
                               "modelPuller": settings.model_puller or image, "pullSecret": settings.pull_secret}
        if settings.profiles:
            ngc["model"] = {"profiles": settings.profiles}
        source = {"ngc": ngc}
    pvc: dict[str, Any] = {"create": True, "size": settings.size, "volumeAccessMode": settings.volume_access_mode}
    if settings.storage_class:
        pvc["storageClass"] = settings.storage_class
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "NIMCache",
        "metadata": {"name": cache_name(name), "namespace": namespace, "labels": labels_for(KIND.kind, name, "nim-cache"),
                     "ownerReferences": [owner_reference(KIND.kind, body)]},
        "spec": {"source": source, "storage": {"pvc": pvc}},
    }
