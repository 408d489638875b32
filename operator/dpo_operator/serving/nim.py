"""The Deployment and Service that run a NIM for a ModelDeployment (backend ``kubernetes``).

NIM conventions: port ``NIM_SERVER_PORT``; ``NIM_SERVED_MODEL_NAME``; full weights from a directory through
``NIM_MODEL_NAME``; LoRA adapters as sub-directories of ``NIM_PEFT_SOURCE`` (the directory name is the adapter's
model name, so ours is mounted at ``/loras/<served name>`` with a subPath); downloads cached under
``/opt/nim/.cache``; ``NGC_API_KEY`` from a Secret. Probes hit ``/v1/health/ready`` (startup, readiness) and
``/v1/health/live``. Rolling updates never take a ready pod away before its replacement is ready.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dpo_operator.api.deployment import KIND, ModelDeploymentSpec
from dpo_operator.kube.naming import labels_for, owner_reference, service_name
from dpo_operator.kube.pods import NIM_UID, container, pod_metadata, pod_spec, secret_env
from dpo_operator.serving.model import ServedModel

WEIGHTS_ROOT = "/mnt/models"
PEFT_SOURCE = "/loras"
CACHE_PATH = "/opt/nim/.cache"
REVISION_ANNOTATION = "dpo.ai/revision"


def revision(spec: ModelDeploymentSpec, model: ServedModel) -> str:
    """A hash of everything that changes the pods (not the readiness timeout): a new one means a new rollout."""
    relevant = spec.to_api()
    relevant.pop("readinessTimeoutSeconds", None)
    relevant["resolved"] = [model.served_name, model.base_name, model.weights and model.weights.to_api(),
                            model.adapter and model.adapter.to_api(), model.remote_model]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


NGC_URL = "https://api.ngc.nvidia.com"


def cluster_url(name: str, namespace: str, port: int) -> str:
    """The in-cluster URL of the ModelDeployment ``name``'s Service."""
    return f"http://{service_name(name)}.{namespace}.svc.cluster.local:{port}"


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


def deployment_manifest(body: Any, spec: ModelDeploymentSpec, model: ServedModel, image: str, rev: str) -> dict[str, Any]:
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    labels = labels_for(KIND.kind, name, "nim")
    env, volumes, mounts = _volumes(spec, model)
    env = [{"name": "NIM_SERVED_MODEL_NAME", "value": model.base_name if model.adapter else model.served_name},
           {"name": "NIM_SERVER_PORT", "value": str(spec.port)}, {"name": "NIM_CACHE_PATH", "value": CACHE_PATH},
           *env, *secret_env("NGC_API_KEY", spec.ngc_api_key_secret_ref)]
    startup = _probe("/v1/health/ready", spec.port, 10, max(1, spec.readiness_timeout_seconds // 10))
    nim = container(spec.template, name="nim", default_image=image, command=[], env=env, volume_mounts=mounts,
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
                                                                      restart_policy="Always", uid=NIM_UID)},
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


def rollout_state(deployment: dict[str, Any], rev: str) -> tuple[bool, str, int]:
    """(complete, what is missing, ready replicas) for the Deployment's current revision."""
    status = deployment.get("status") or {}
    desired = deployment["spec"].get("replicas", 1)
    ready = int(status.get("readyReplicas") or 0)
    if (deployment["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION) != rev:
        return False, "the Deployment has not been updated to this revision yet", ready
    if int(status.get("observedGeneration") or 0) < int(deployment["metadata"].get("generation") or 0):
        return False, "the Deployment controller has not observed the latest spec", ready
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    if updated < desired:
        return False, f"rollout: {updated}/{desired} replicas updated", ready
    if total > updated:
        return False, f"rollout: {total - updated} old replica(s) still terminating", ready
    if available < desired:
        return False, f"rollout: {available}/{desired} updated replicas available", ready
    return True, f"{available}/{desired} replicas available", ready
