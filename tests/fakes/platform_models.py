"""The NeMo platform fake's models service and inference gateway (v2), as the ModelDeployment backend uses them.

Plugs into the strict core (tests/fakes/platform.py): every request and answer is validated against NVIDIA's
OpenAPI document there. State, as the platform keeps it:

- ``models`` (the core's): model entities by (workspace, name) (``add_model``; a completed customization job of
  the training routes registers its output there).
- ``configs``: deployment configs by ``workspace/name`` (one version each: we never update a config). Deleting
  one that a deployment version not yet DELETED uses is a 409, as the platform answers.
- ``deployments``: by ``workspace/name``, the list of its versions (the last is the latest). Each GET of a
  deployment (or of its versions) is one pass of the platform's controller: the latest version moves one step
  through ``deployment_script`` (PENDING → READY by default, the last repeating) until READY or ERROR; a
  version marked for deletion goes DELETING → DELETED and is removed (the platform's hard delete after its grace period) after
  ``deleted_grace_passes`` more passes; deleting a DELETED one again removes it at once (204), as the platform does.
- The gateway lists (``/openai/-/v1/models``) each model entity of the workspace that a READY version of some
  deployment serves, and proxies ``/openai/-/v1/chat/completions`` for such a model to the OpenAI server
  registered for it in ``backends`` (our NIM stand-in, :mod:`dpo_operator.embedded.model_server`); a model it
  does not route is a 404, as the platform answers.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.fakes.platform import Answer, Call, FakePlatformCore, error, page, route, timestamp
from tests.fakes.platform_training import TrainingPlatform

MODELS = "/apis/models/v2/workspaces/{workspace}"
GATEWAY = "/apis/inference-gateway/v2/workspaces/{workspace}/openai/-"
DEFAULT_SCRIPT = ("PENDING", "READY")


class PlatformModelsMixin:
    """Route handlers of the models service and the gateway; state lives on the fake (see the module doc)."""

    models: dict[tuple[str, str], dict[str, Any]]  # the core's model entities, by (workspace, name)
    configs: dict[str, dict[str, Any]]
    deployments: dict[str, list[dict[str, Any]]]
    backends: dict[str, str]
    deployment_script: list[str]
    deleted_grace_passes: int
    served_chats: list[str]
    new_id: Any

    def init_models(self) -> None:
        self.configs, self.deployments, self.backends = {}, {}, {}
        self.deployment_script = list(DEFAULT_SCRIPT)
        self.deleted_grace_passes = 0  # passes a DELETED version stays before the platform removes it for good
        self.served_chats = []  # the model of each chat completion the gateway proxied

    # ------------------------------------------------------------------ models and configs

    @route("GET", MODELS + "/models/{name}", "get_model")
    async def _get_model(self, call: Call) -> Answer:
        found = self.models.get((call.workspace or "", call.params["name"]))
        return Answer(200, found) if found else error(404, f"Model '{call.params['name']}' not found")

    @route("POST", MODELS + "/deployment-configs", "create_deployment_config")
    async def _create_config(self, call: Call) -> Answer:
        key = f"{call.workspace}/{call.body['name']}"
        if key in self.configs:
            return error(409, f"Deployment config with workspace '{call.workspace}' and name "
                              f"'{call.body['name']}' already exists")
        now = timestamp()
        self.configs[key] = {**call.body, "id": self.new_id("config"), "workspace": call.workspace,
                             "created_at": now, "updated_at": now, "entity_version": 1}
        return Answer(201, self.configs[key])

    @route("GET", MODELS + "/deployment-configs/{name}", "get_deployment_config")
    async def _get_config(self, call: Call) -> Answer:
        found = self.configs.get(f"{call.workspace}/{call.params['name']}")
        return Answer(200, found) if found else error(404, f"Deployment config '{call.params['name']}' not found")

    @route("GET", MODELS + "/deployment-configs", "list_deployment_configs")
    async def _list_configs(self, call: Call) -> Answer:
        return Answer(200, page([c for c in self.configs.values() if c["workspace"] == call.workspace], call))

    @route("DELETE", MODELS + "/deployment-configs/{name}", "delete_deployment_config")
    async def _delete_config(self, call: Call) -> Answer:
        name = call.params["name"]
        if f"{call.workspace}/{name}" not in self.configs:
            return error(404, f"Deployment config '{name}' not found")
        users = [v for versions in self.deployments.values() for v in versions
                 if v["workspace"] == call.workspace and v["config"] == name and v["status"] != "DELETED"]
        if users:
            return error(409, f"Cannot delete deployment config '{name}': {len(users)} dependent ModelDeployments exist")
        del self.configs[f"{call.workspace}/{name}"]
        return Answer(204)

    # ------------------------------------------------------------------ deployments

    def _version(self, workspace: str, name: str, config: str, number: int) -> dict[str, Any]:
        now = timestamp()
        return {"id": self.new_id("deployment"), "name": name, "workspace": workspace, "created_at": now,
                "updated_at": now, "entity_version": number, "config": config,
                "config_version": self.configs[f"{workspace}/{config}"]["entity_version"], "status": "CREATED",
                "status_message": "", "status_history": [{"timestamp": now, "status": "CREATED",
                                                          "status_message": ""}], "_polls": 0}

    @staticmethod
    def _public(version: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in version.items() if not k.startswith("_")}

    def _set(self, version: dict[str, Any], status: str, message: str = "") -> None:
        version.update(status=status, status_message=message, updated_at=timestamp())
        version["status_history"].append({"timestamp": version["updated_at"], "status": status,
                                          "status_message": message})

    def _advance(self, key: str) -> list[dict[str, Any]]:
        """One controller pass over a deployment's versions (see the module doc); answers those left."""
        versions = self.deployments.get(key, [])
        for version in list(versions):
            if version["status"] == "DELETED":
                version["_grace"] = version.get("_grace", 0) + 1
                if version["_grace"] > self.deleted_grace_passes:
                    versions.remove(version)
            elif version["status"] == "DELETING":
                self._set(version, "DELETED", "Deployment deleted")
        if versions and versions[-1]["status"] not in ("READY", "ERROR", "DELETING", "DELETED"):
            latest = versions[-1]
            step = self.deployment_script[min(latest["_polls"], len(self.deployment_script) - 1)]
            latest["_polls"] += 1
            if step != latest["status"]:
                self._set(latest, step, "Deployment failed to start: image pull failed" if step == "ERROR" else "")
        if not versions:
            self.deployments.pop(key, None)
        return versions

    @route("POST", MODELS + "/deployments", "create_deployment")
    async def _create_deployment(self, call: Call) -> Answer:
        key, config = f"{call.workspace}/{call.body['name']}", call.body["config"]
        if key in self.deployments:
            return error(409, f"Deployment '{call.body['name']}' already exists")
        if f"{call.workspace}/{config}" not in self.configs:
            return error(400, f"Deployment config '{call.workspace}/{config}' does not exist")
        self.deployments[key] = [self._version(call.workspace or "", call.body["name"], config, 1)]
        return Answer(201, self._public(self.deployments[key][0]))

    @route("GET", MODELS + "/deployments/{name}", "get_deployment")
    async def _get_deployment(self, call: Call) -> Answer:
        versions = self._advance(f"{call.workspace}/{call.params['name']}")
        return Answer(200, self._public(versions[-1])) if versions else \
            error(404, f"Deployment '{call.params['name']}' not found")

    @route("POST", MODELS + "/deployments/{name}", "update_deployment")
    async def _update_deployment(self, call: Call) -> Answer:
        key, config = f"{call.workspace}/{call.params['name']}", call.body["config"]
        if key not in self.deployments:
            return error(400, f"Deployment with workspace '{call.workspace}' and name '{call.params['name']}' "
                              "does not exist")
        if f"{call.workspace}/{config}" not in self.configs:
            return error(400, f"Deployment config '{call.workspace}/{config}' does not exist")
        versions = self.deployments[key]
        version = self._version(call.workspace or "", call.params["name"], config, versions[-1]["entity_version"] + 1)
        self._set(version, "PENDING", "Deployment update pending")
        versions.append(version)
        return Answer(201, self._public(version))

    @route("GET", MODELS + "/deployments/{name}/versions", "list_deployment_versions")
    async def _versions(self, call: Call) -> Answer:
        return Answer(200, [self._public(v) for v in self._advance(f"{call.workspace}/{call.params['name']}")])

    def _mark_deleted(self, versions: list[dict[str, Any]]) -> int:
        if all(v["status"] == "DELETED" for v in versions):
            for version in versions:
                self.deployments[f"{version['workspace']}/{version['name']}"].remove(version)
            return 204
        for version in versions:
            if version["status"] not in ("DELETING", "DELETED"):
                self._set(version, "DELETING", "Deployment marked for deletion")
        return 202

    @route("DELETE", MODELS + "/deployments/{name}", "delete_deployment")
    async def _delete_deployment(self, call: Call) -> Answer:
        key = f"{call.workspace}/{call.params['name']}"
        if not self.deployments.get(key):
            return error(404, f"Deployment '{call.params['name']}' not found")
        status = self._mark_deleted(list(self.deployments[key]))
        if not self.deployments[key]:
            del self.deployments[key]
        return Answer(status, {} if status == 202 else None)

    @route("DELETE", MODELS + "/deployments/{deployment}/versions/{name}", "delete_deployment_version")
    async def _delete_version(self, call: Call) -> Answer:
        key = f"{call.workspace}/{call.params['deployment']}"
        found = [v for v in self.deployments.get(key, []) if str(v["entity_version"]) == call.params["name"]]
        if not found:
            return error(404, f"Deployment version '{call.params['name']}' not found")
        status = self._mark_deleted(found)
        return Answer(status, {} if status == 202 else None)

    # ------------------------------------------------------------------ inference gateway

    def routed(self, workspace: str) -> list[str]:
        """The model entities of ``workspace`` a READY deployment version serves (``workspace/name``)."""
        served = {self.configs[f"{v['workspace']}/{v['config']}"].get("model_entity_id")
                  for versions in self.deployments.values() for v in versions
                  if v["status"] == "READY" and f"{v['workspace']}/{v['config']}" in self.configs}
        return sorted(m for m in served if m and m.startswith(f"{workspace}/"))

    @route("GET", GATEWAY + "/v1/models", "gateway_list_models")
    async def _gateway_models(self, call: Call) -> Answer:
        return Answer(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "nemo-platform",
                                                        "created": 0} for m in self.routed(call.workspace or "")]})

    @route("POST", GATEWAY + "/{trailing_uri}", "gateway_openai_post")
    async def _gateway_post(self, call: Call) -> Answer:
        if call.params["trailing_uri"] != "v1/chat/completions":
            return error(404, f"no route for {call.params['trailing_uri']}")
        model = str((call.body or {}).get("model") or "")
        if model not in self.routed(call.workspace or "") or model not in self.backends:
            return error(404, f"No VirtualModel found for '{model}' in workspace '{call.workspace}'")
        async with httpx.AsyncClient(timeout=120.0) as http:
            answer = await http.post(f"{self.backends[model]}/v1/chat/completions", json=call.body)
        self.served_chats.append(model)
        return Answer(answer.status_code, answer.json())


class FakePlatformModels(PlatformModelsMixin, FakePlatformCore):
    """The core with the models service and gateway routes (a test's ``with`` block starts and checks it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init_models()


class FullPlatform(PlatformModelsMixin, TrainingPlatform):
    """Training (files, customization, Jobs) and serving (models, gateway) on one fake platform."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init_models()
