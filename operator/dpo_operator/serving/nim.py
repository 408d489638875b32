"""What the operator reads about a NIM it runs for a ModelDeployment (backend ``kubernetes``): the revision a spec
implies, the in-cluster URL, and how far a rollout is. The Deployment and Service themselves are built in
:mod:`dpo_operator.render.nim`, following these conventions:

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

from dpo_operator.api.deployment import ModelDeploymentSpec
from dpo_operator.kube.naming import service_name
from dpo_operator.render.nim import REVISION_ANNOTATION
from dpo_operator.serving.model import ServedModel


def revision(spec: ModelDeploymentSpec, model: ServedModel) -> str:
    """A hash of everything that changes the pods (not the readiness timeout): a new one means a new rollout."""
    relevant = spec.to_api()
    relevant.pop("readinessTimeoutSeconds", None)
    relevant["resolved"] = [model.served_name, model.base_name, model.weights and model.weights.to_api(),
                            model.adapter and model.adapter.to_api(), model.remote_model]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]



def cluster_url(name: str, namespace: str, port: int) -> str:
    """The in-cluster URL of the ModelDeployment ``name``'s Service."""
    return f"http://{service_name(name)}.{namespace}.svc.cluster.local:{port}"


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
