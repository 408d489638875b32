"""NeMo Deployment Management (v1): deployment configs and model deployments, addressed by namespace/name.

Statuses are the SDK's ``JobStatus`` values: ``ready`` serves; ``failed`` and ``cancelled`` are terminal (there
is no ``error`` status). Deployments we create carry an owner tag in their description: only those are ever
deleted, so a base-model NIM someone else runs (and that we reuse to serve a LoRA adapter) is left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dpo_operator.nemo.http import NemoApi, NemoError
from dpo_operator.render.nemo import config_body, deployment_body

READY, FAILED = {"ready"}, {"failed", "cancelled"}
PAGE_SIZE = 100
MAX_PAGES = 50


def owner_tag(namespace: str, name: str) -> str:
    return f"dpo-operator ModelDeployment {namespace}/{name}"


def ensure_config(api: NemoApi, namespace: str, name: str, model: str, image_name: str, image_tag: str, gpu: int) -> None:
    api.request("POST", "/v1/deployment/configs", ok=(409,),
                json=config_body(namespace, name, model, image_name, image_tag, gpu))


def ensure_deployment(api: NemoApi, namespace: str, name: str, config: str, description: str) -> None:
    api.request("POST", "/v1/deployment/model-deployments", ok=(409,),
                json=deployment_body(namespace, name, config, description))


def get_deployment(api: NemoApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return api.request("GET", f"/v1/deployment/model-deployments/{namespace}/{name}")
    except NemoError as exc:
        if exc.status == 404:
            return None
        raise


def iter_deployments(api: NemoApi, namespace: str) -> Iterator[dict[str, Any]]:
    """The model deployments of ``namespace``, page after page until an empty page."""
    for page in range(1, MAX_PAGES + 1):
        answer = api.request("GET", "/v1/deployment/model-deployments", params={
            "page": page, "page_size": PAGE_SIZE, "filter[namespace]": namespace}) or {}
        items = answer.get("data") or []
        if not items:
            return
        yield from items


def config_model(api: NemoApi, deployment: dict[str, Any]) -> str | None:
    """The model a deployment's config deploys (the config may be inlined or referenced as namespace/name)."""
    config = deployment.get("config")
    if isinstance(config, str):
        try:
            config = api.request("GET", f"/v1/deployment/configs/{config}")
        except NemoError as exc:
            if exc.status == 404:
                return None
            raise
    model = (config or {}).get("model")
    return model if isinstance(model, str) else (model or {}).get("name")


def find_serving(api: NemoApi, namespace: str, model: str) -> dict[str, Any] | None:
    """A deployment of ``model`` that is not ours and has not failed, to reuse (e.g. a base-model NIM)."""
    for deployment in iter_deployments(api, namespace):
        if "dpo-operator" in (deployment.get("description") or ""):
            continue
        if deployment_status(deployment)[0] in FAILED:
            continue
        if config_model(api, deployment) == model:
            return deployment
    return None


def deployment_status(deployment: dict[str, Any]) -> tuple[str, str]:
    """(status in lower case, its description) from ``status_details``; missing fields mean still pending."""
    details = deployment.get("status_details") or {}
    return str(details.get("status") or "pending").lower(), str(details.get("description") or "")


def delete(api: NemoApi, namespace: str, name: str, tag: str) -> bool:
    """Remove a model deployment we created (``tag`` in its description) and its config; gone ones are fine.
    Answers whether anything of ours was there."""
    deployment = get_deployment(api, namespace, name)
    if deployment is not None and tag not in (deployment.get("description") or ""):
        return False  # not ours (a reused NIM): never deleted
    api.request("DELETE", f"/v1/deployment/model-deployments/{namespace}/{name}", ok=(404,))
    api.request("DELETE", f"/v1/deployment/configs/{namespace}/{name}", ok=(404,))
    return deployment is not None
