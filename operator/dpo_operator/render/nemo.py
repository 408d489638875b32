"""Request bodies of NeMo Deployment Management (pure builders): a deployment config and a model deployment."""

from __future__ import annotations

from typing import Any


def config_body(namespace: str, name: str, model: str, image_name: str, image_tag: str, gpu: int) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "model": model,
            "nim_deployment": {"image_name": image_name, "image_tag": image_tag, "gpu": gpu}}


def deployment_body(namespace: str, name: str, config: str, description: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "config": f"{namespace}/{config}", "description": description}
