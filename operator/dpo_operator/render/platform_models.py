"""Request bodies of the NeMo platform's models service (pure builders): a deployment config and a deployment.

Field names and limits are those of the platform's OpenAPI document (``CreateModelDeploymentConfigRequest``,
``CreateModelDeploymentRequest``, ``UpdateModelDeploymentRequest``); names follow its entity-name pattern.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from dpo_operator.api.deployment import ModelDeploymentSpec

NAME_LIMIT = 63


def deployment_name(namespace: str, name: str) -> str:
    """The platform deployment of ModelDeployment ``namespace/name``: ``md-<name>-<hash>``, valid as a platform
    entity name (lower case, no ``--``, at most 63 characters) and distinct per Kubernetes namespace (several
    namespaces may share a workspace); the revision suffix of :func:`config_name` still fits."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]
    head = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", name.lower())).strip("-")[:40].rstrip("-")
    return f"md-{head}-{digest}" if head else f"md-{digest}"


def config_name(deployment: str, revision: str) -> str:
    """One deployment config per revision of the spec: ``<deployment>-<revision[:8]>``."""
    return f"{deployment}-{revision[:8]}"[:NAME_LIMIT]


def config_body(name: str, description: str, entity: str, spec: ModelDeploymentSpec) -> dict[str, Any]:
    """A NIM deployment config serving model entity ``entity`` (``workspace/name``) with our image, GPUs, start-up
    grace and pod placement (the fields of ours the platform accepts)."""
    assert spec.nemo is not None
    k8s: dict[str, Any] = {"startup_probe_grace_seconds": spec.startup_timeout_seconds}
    if spec.template.node_selector:
        k8s["node_selector"] = dict(spec.template.node_selector)
    if spec.template.tolerations:
        k8s["tolerations"] = [dict(t) for t in spec.template.tolerations]
    return {"name": name, "description": description, "engine": "nim",
            "model_spec": {"model_type": "llm"},
            "executor_config": {"gpu": spec.nemo.gpu, "image_name": spec.nemo.image_name,
                                "image_tag": spec.nemo.image_tag, "k8s_nim_operator_config": k8s},
            "model_entity_id": entity}


def deployment_body(name: str, config: str) -> dict[str, Any]:
    return {"name": name, "config": config}


def update_body(config: str) -> dict[str, Any]:
    """A new version of a deployment, serving another config."""
    return {"config": config}
