"""The Deployment and Service that run a NIM (pure builders) for a ModelDeployment (backend ``kubernetes``).

NIM conventions: port ``NIM_SERVER_PORT``; ``NIM_SERVED_MODEL_NAME``; full weights from a directory through
``NIM_MODEL_NAME``; LoRA adapters as sub-directories of ``NIM_PEFT_SOURCE`` (the directory name is the adapter's
model name, so ours is mounted at ``/loras/<served name>`` with a subPath); downloads cached under
``/opt/nim/.cache``; ``NGC_API_KEY`` from a Secret. Probes hit ``/v1/health/ready`` (startup, readiness) and
``/v1/health/live``. Rolling updates never take a ready pod away before its replacement is ready.
"""

from __future__ import annotations

from typing import Any

from dpo_operator.api.deployment import KIND, ModelDeploymentSpec
from dpo_operator.config import OperatorConfig
from dpo_operator.kube.naming import labels_for, owner_reference, service_name
from dpo_operator.kube.pods import (
    NIM_UID,
    container,
    pod_metadata,
    pod_spec,
    secret_env,
)
from dpo_operator.serving.model import ServedModel

WEIGHTS_ROOT = "/mnt/models"
PEFT_SOURCE = "/loras"
CACHE_PATH = "/opt/nim/.cache"
REVISION_ANNOTATION = "dpo.ai/revision"

# where a NIM sends its NGC key (model downloads): the Secret must allow this destination
NGC_URL = "https://api.ngc.nvidia.com"


def _volumes(spec: ModelDeploymentSpec, model: ServedModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    env: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shared_memory_size}}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if model.weights is not None:
        volumes.append({"name": "weights", "persistentVolumeClaim": {"claimName": model.weights.claim_name, "readOnly": True}})
        mounts.append({"name": "weights", "mountPath": WEIGHTS_ROOT, "subPath": model.weights.path.strip("/"), "readOnly": True})
        env.append({"name": "NIM_MODEL_NAME", "value": WEIGHTS_ROOT})
    if model.adapter is not None:
        volumes.append({"name": "adapter", "persistentVolumeClaim": {"claimName": model.adapter.claim_name, "readOnly": True}})
        mounts.append({"name": "adapter", "mountPath": f"{PEFT_SOURCE}/{model.served_name}",
                       "subPath": model.adapter.path.strip("/"), "readOnly": True})
        env.append({"name": "NIM_PEFT_SOURCE", "value": PEFT_SOURCE})
    if spec.model_cache_pvc:
        volumes.append({"name": "nim-cache", "persistentVolumeClaim": {"claimName": spec.model_cache_pvc}})
        mounts.append({"name": "nim-cache", "mountPath": CACHE_PATH})
    else:
        volumes.append({"name": "nim-cache", "emptyDir": {}})
        mounts.append({"name": "nim-cache", "mountPath": CACHE_PATH})
    return env, volumes, mounts


def _probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": 5}


def deployment_manifest(body: Any, spec: ModelDeploymentSpec, model: ServedModel, config: OperatorConfig,
                        rev: str) -> dict[str, Any]:
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    labels = labels_for(KIND.kind, name, "nim")
    env, volumes, mounts = _volumes(spec, model)
    env = [{"name": "NIM_SERVED_MODEL_NAME", "value": model.base_name if model.adapter else model.served_name},
           {"name": "NIM_SERVER_PORT", "value": str(spec.port)}, {"name": "NIM_CACHE_PATH", "value": CACHE_PATH},
           *env, *secret_env("NGC_API_KEY", spec.ngc_api_key_secret_ref)]
    startup = _probe("/v1/health/ready", spec.port, 10, max(1, spec.startup_timeout_seconds // 10))  # large models: slow
    nim = container(spec.template, name="nim", default_image=config.nim_image, command=[], env=env, volume_mounts=mounts,
                    ports=[{"name": "http", "containerPort": spec.port}],
                    startupProbe=startup, readinessProbe=_probe("/v1/health/ready", spec.port, 10, 3),
                    livenessProbe=_probe("/v1/health/live", spec.port, 20, 3))
    nim.pop("command")  # the NIM image's own entrypoint
    # the NIM downloads from NGC with its key (a template image is the administrator's to restrict)
    template_meta = pod_metadata(spec.template, labels, {"NGC_API_KEY": NGC_URL})
    template_meta.setdefault("annotations", {})[REVISION_ANNOTATION] = rev
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels,
                     "annotations": {REVISION_ANNOTATION: rev},
                     "ownerReferences": [owner_reference(KIND.kind, body)]},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": template_meta, "spec": pod_spec(spec.template, [nim], volumes=volumes,
                                                                      restart_policy="Always", uid=NIM_UID,
                                                                      config=config)},
        },
    }


def service_manifest(body: Any, spec: ModelDeploymentSpec) -> dict[str, Any]:
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    labels = labels_for(KIND.kind, name, "nim")
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(name), "namespace": namespace, "labels": labels,
                     "ownerReferences": [owner_reference(KIND.kind, body)]},
        "spec": {"type": spec.service_type, "selector": labels,
                 "ports": [{"name": "http", "port": spec.port, "targetPort": "http"}]},
    }
