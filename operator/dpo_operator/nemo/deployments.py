"""NeMo Deployment Management (v1): deployment configs and model deployments, addressed by namespace/name."""

from __future__ import annotations

from typing import Any

from dpo_operator.nemo.http import NemoApi, NemoError

READY, FAILED = {"ready"}, {"failed", "error"}


def ensure_config(api: NemoApi, namespace: str, name: str, model: str, image_name: str, image_tag: str, gpu: int) -> None:
    api.request("POST", "/v1/deployment/configs", ok=(409,), json={
        "name": name, "namespace": namespace, "model": model,
        "nim_deployment": {"image_name": image_name, "image_tag": image_tag, "gpu": gpu}})


def ensure_deployment(api: NemoApi, namespace: str, name: str, config: str) -> None:
    api.request("POST", "/v1/deployment/model-deployments", ok=(409,), json={
        "name": name, "namespace": namespace, "config": f"{namespace}/{config}"})


def get_deployment(api: NemoApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return api.request("GET", f"/v1/deployment/model-deployments/{namespace}/{name}")
    except NemoError as exc:
        if exc.status == 404:
            return None
        raise


def deployment_status(deployment: dict[str, Any]) -> tuple[str, str]:
    """(status in lower case, its description) from ``status_details``; missing fields mean still pending."""
    details = deployment.get("status_details") or {}
    return str(details.get("status") or "pending").lower(), str(details.get("description") or "")


def delete(api: NemoApi, namespace: str, name: str) -> None:
    """Remove a model deployment and its config; ones already gone are fine."""
    api.request("DELETE", f"/v1/deployment/model-deployments/{namespace}/{name}", ok=(404,))
    api.request("DELETE", f"/v1/deployment/configs/{namespace}/{name}", ok=(404,))
