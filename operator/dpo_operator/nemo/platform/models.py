"""The NeMo platform's models service (v2) and inference gateway, as a ModelDeployment uses them.

Model entities are read (never created or deleted here: a customization job registers its output), deployment
configs and deployments are created in a workspace. A deployment is versioned: pointing it at another config
makes a new version (``POST /deployments/{name}``) while the older versions keep serving until they are deleted.
Statuses are the platform's ``ModelDeploymentStatus``: ``READY`` serves, ``ERROR`` is terminal, ``DELETING`` and
``DELETED`` mean someone removed it. The owner tag lives in the description of the configs we create (deployments
have none): a config without it is not ours and is never deleted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dpo_operator.nemo.http import NemoApi, NemoError

MODELS = "/apis/models/v2/workspaces"
GATEWAY = "/apis/inference-gateway/v2/workspaces"
READY, FAILED, GONE = "READY", "ERROR", {"DELETING", "DELETED"}
PAGE_SIZE = 100
MAX_PAGES = 50


def owner_tag(namespace: str, name: str) -> str:
    return f"dpo-operator ModelDeployment {namespace}/{name}"


def entity_ref(model: str, workspace: str) -> tuple[str, str]:
    """``workspace/name`` → (workspace, name); a bare name lives in ``workspace``."""
    owner, _, name = model.rpartition("/")
    return (owner or workspace), name


def openai_root(base_url: str, workspace: str) -> str:
    """The inference gateway's OpenAI-compatible API root for a workspace (the SDK's ``get_openai_route_base_url``);
    clients name the model ``workspace/name``."""
    return f"{base_url.rstrip('/')}{GATEWAY}/{workspace}/openai/-/v1"


def _get(api: NemoApi, path: str) -> dict[str, Any] | None:
    try:
        return api.request("GET", path)
    except NemoError as exc:
        if exc.status == 404:
            return None
        raise


def get_model(api: NemoApi, workspace: str, name: str) -> dict[str, Any] | None:
    return _get(api, f"{MODELS}/{workspace}/models/{name}")


def get_config(api: NemoApi, workspace: str, name: str) -> dict[str, Any] | None:
    return _get(api, f"{MODELS}/{workspace}/deployment-configs/{name}")


def ensure_config(api: NemoApi, workspace: str, body: dict[str, Any]) -> None:
    """Create a deployment config; one of that name already there (an earlier try of ours) is fine."""
    api.request("POST", f"{MODELS}/{workspace}/deployment-configs", ok=(409,), json=body)


def get_deployment(api: NemoApi, workspace: str, name: str) -> dict[str, Any] | None:
    """The latest version of a deployment."""
    return _get(api, f"{MODELS}/{workspace}/deployments/{name}")


def create_deployment(api: NemoApi, workspace: str, body: dict[str, Any]) -> None:
    api.request("POST", f"{MODELS}/{workspace}/deployments", ok=(409,), json=body)


def update_deployment(api: NemoApi, workspace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """A new version of the deployment (the older ones keep serving until deleted)."""
    return api.request("POST", f"{MODELS}/{workspace}/deployments/{name}", json=body) or {}


def versions(api: NemoApi, workspace: str, name: str) -> list[dict[str, Any]]:
    try:
        return list(api.request("GET", f"{MODELS}/{workspace}/deployments/{name}/versions") or [])
    except NemoError as exc:
        if exc.status == 404:
            return []
        raise


def delete_version(api: NemoApi, workspace: str, name: str, version: int) -> None:
    """Mark one version for deletion (DELETING, then DELETED); a version already gone is fine."""
    api.request("DELETE", f"{MODELS}/{workspace}/deployments/{name}/versions/{version}", ok=(404,))


def delete_deployment(api: NemoApi, workspace: str, name: str) -> None:
    """Mark every version for deletion; a deployment already gone is fine."""
    api.request("DELETE", f"{MODELS}/{workspace}/deployments/{name}", ok=(404,))


def iter_configs(api: NemoApi, workspace: str) -> Iterator[dict[str, Any]]:
    """The deployment configs of ``workspace`` (latest versions), page after page until the last."""
    for page in range(1, MAX_PAGES + 1):
        answer = api.request("GET", f"{MODELS}/{workspace}/deployment-configs",
                             params={"page": page, "page_size": PAGE_SIZE}) or {}
        yield from answer.get("data") or []
        if page >= int((answer.get("pagination") or {}).get("total_pages") or 0):
            return


def delete_config(api: NemoApi, workspace: str, name: str) -> bool:
    """Delete all versions of a config; answers False while deployments still use it (409), True once gone."""
    try:
        api.request("DELETE", f"{MODELS}/{workspace}/deployment-configs/{name}", ok=(404,))
    except NemoError as exc:
        if exc.status == 409:
            return False
        raise
    return True


def gateway_lists(api: NemoApi, workspace: str, model: str) -> tuple[bool, list[str]]:
    """Whether the gateway routes ``model`` (``workspace/name``) in ``workspace`` yet, and what it lists."""
    answer = api.request("GET", f"{GATEWAY}/{workspace}/openai/-/v1/models") or {}
    listed = [str(item.get("id")) for item in answer.get("data") or [] if isinstance(item, dict)]
    return model in listed, listed
