"""ModelDeployment, ``nemo`` backend with ``nemo.apiVersion: v2``: the NeMo platform (26.x) serves the model.

What is served is a model entity of the platform: the full-weights model a DPOTrainingJob trained there (the
platform's customization job registers it, and the job's status names it), or one named in ``model.explicit``.
The ModelDeployment owns one platform deployment (:func:`render.platform_models.deployment_name`) and one
deployment config per revision of its spec; a new revision points the deployment at the new config, which makes
a new deployment version while the older versions keep serving; once the new version is READY and the gateway
routes its model, the older versions and their configs are deleted. Ready means: the deployment is READY and the
inference gateway lists the model (``workspace/name``) on its OpenAI-compatible route, which becomes
status.endpoint. LoRA adapters are refused: DPO on the platform trains full weights only, and an adapter on a
PVC or in v1's Entity Store is not a platform entity.
"""

from __future__ import annotations

import logging
from typing import Any

from dpo_operator.api.common import Phase
from dpo_operator.api.deployment import KIND, ModelDeploymentSpec, ModelDeploymentStatus, NemoDeploymentBackend
from dpo_operator.api.reasons import Reason
from dpo_operator.handlers.deployment_shared import progressing_or_timed_out
from dpo_operator.handlers.own_key import Refusal, with_own_key
from dpo_operator.kube.captured import capture, read_captured
from dpo_operator.kube.secrets import SecretMissing, read_secret_key
from dpo_operator.kube.status import Outcome
from dpo_operator.nemo.http import NemoApi, NemoError
from dpo_operator.nemo.platform import models as remote
from dpo_operator.render import platform_models as render
from dpo_operator.runtime.controller import RUNTIME
from dpo_operator.runtime.errors import InvalidSpec, PermanentFailure
from dpo_operator.serving.model import ServedModel

log = logging.getLogger(__name__)
SERVICE = "platform-models"


def session(namespace: str, backend: NemoDeploymentBackend) -> NemoApi:
    return NemoApi(backend.url, read_secret_key(namespace, backend.api_key_secret_ref, backend.url),
                   deadline=RUNTIME.config.remote_call_deadline, service=SERVICE)


def served_entity(model: ServedModel, workspace: str) -> tuple[str, str]:
    """The model entity to serve, or an InvalidSpec saying what to use instead."""
    if model.remote_base is not None or model.adapter is not None:
        raise InvalidSpec("model: a LoRA adapter cannot be served by backend nemo with nemo.apiVersion v2 (DPO on the NeMo "
                          "platform trains full weights only, and an adapter from the local backend or NeMo "
                          "Microservices v1 is not a platform entity): serve it with nemo.apiVersion v1, or with backend "
                          "kubernetes or nimOperator")
    if model.remote_model is None:
        raise InvalidSpec("model: backend nemo with nemo.apiVersion v2 serves a model entity of the NeMo platform (a model "
                          "trained there, or model.explicit.name as workspace/name); this model's weights are on a "
                          "PVC: use backend kubernetes or nimOperator")
    return remote.entity_ref(model.remote_model, workspace)


def retire_older(api: NemoApi, backend: NemoDeploymentBackend, deployment: str, latest: int, tag: str,
                 keep: str) -> None:
    """Delete the versions before ``latest``, then our configs no version still uses (one in use goes at a later
    check, once the platform has its version DELETED, or with the resource)."""
    for version in remote.versions(api, backend.workspace, deployment):
        number = int(version.get("entity_version") or 0)
        if number < latest and version.get("status") not in remote.GONE:
            remote.delete_version(api, backend.workspace, deployment, number)
    used = {str(v.get("config")) for v in remote.versions(api, backend.workspace, deployment)
            if v.get("status") != "DELETED"} | {keep}
    for config in remote.iter_configs(api, backend.workspace):
        name = str(config.get("name", ""))
        if name.startswith(f"{deployment}-") and config.get("description") == tag and name not in used:
            remote.delete_config(api, backend.workspace, name)


def roll_out(api: NemoApi, body: Any, spec: ModelDeploymentSpec, entity: str, rev: str) -> dict[str, Any]:
    """The deployment serving this revision's config: created, or given a new version, as needed."""
    backend = spec.nemo
    assert backend is not None
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    target, tag = render.deployment_name(namespace, name), remote.owner_tag(namespace, name)
    config = render.config_name(target, rev)
    existing = remote.get_config(api, backend.workspace, config)
    if existing is not None and existing.get("description") != tag:
        raise PermanentFailure(Reason.NameConflict, f"deployment config {backend.workspace}/{config} on the NeMo "
                               "platform is not this ModelDeployment's; rename one of them")
    if existing is None:
        capture(KIND.kind, body, api.base_url, api.api_key)  # before anything remote exists: delete can always reach it
        remote.ensure_config(api, backend.workspace, render.config_body(config, tag, entity, spec))
    deployment = remote.get_deployment(api, backend.workspace, target)
    if deployment is not None and deployment.get("status") == "DELETED":
        # the tombstone of an earlier ModelDeployment of this name (the platform keeps DELETED ones for a grace
        # period): deleting it again removes it for good, so the name can be used again
        remote.delete_deployment(api, backend.workspace, target)
        deployment = None
    if deployment is None:
        remote.create_deployment(api, backend.workspace, render.deployment_body(target, config))
    elif deployment.get("config") != config:
        current = remote.get_config(api, backend.workspace, str(deployment.get("config")))
        if (current or {}).get("description") != tag:
            raise PermanentFailure(Reason.NameConflict, f"deployment {backend.workspace}/{target} on the NeMo "
                                   "platform is not this ModelDeployment's; rename one of them")
        remote.update_deployment(api, backend.workspace, target, render.update_body(config))
        log.info("ModelDeployment %s/%s: deployment %s now serves config %s (new version)", namespace, name,
                 target, config)
    return remote.get_deployment(api, backend.workspace, target) or {}


def decide(body: Any, spec: ModelDeploymentSpec, model: ServedModel, rev: str,
           fields: ModelDeploymentStatus) -> Outcome:
    backend = spec.nemo
    assert backend is not None
    workspace, entity_name = served_entity(model, backend.workspace)
    entity = f"{workspace}/{entity_name}"
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    fields.served_model_name = entity  # the gateway names models workspace/name; servedModelName cannot rename it
    with session(namespace, backend) as api:
        if remote.get_model(api, workspace, entity_name) is None:
            raise PermanentFailure(Reason.ModelUnavailable, f"model entity {entity} does not exist on the NeMo "
                                   "platform (a model trained there is registered by its customization job; "
                                   "model.explicit.name must name a registered entity)")
        deployment = roll_out(api, body, spec, entity, rev)
        target = str(deployment.get("name") or render.deployment_name(namespace, name))
        state, message = str(deployment.get("status") or "UNKNOWN"), str(deployment.get("status_message") or "")
        where = f"NeMo platform deployment {backend.workspace}/{target} (version {deployment.get('entity_version')})"
        detail = f"{where} is {state}" + (f" ({message})" if message else "")
        if state == remote.FAILED:
            raise PermanentFailure(Reason.DeploymentFailed, f"{where} is {state}" + (f": {message}" if message else ""))
        if state in remote.GONE:
            raise PermanentFailure(Reason.DeploymentCancelled, f"{detail}: it was deleted on the platform; change the "
                                   "spec (or re-create the ModelDeployment) to deploy again")
        if state == remote.READY:
            routed, listed = remote.gateway_lists(api, workspace, entity)
            if routed:
                retire_older(api, backend, target, int(deployment.get("entity_version") or 0),
                             remote.owner_tag(namespace, name), str(deployment.get("config")))
                fields.remote_deployment, fields.serving_revision, fields.ready_replicas = target, rev, spec.replicas
                fields.endpoint = remote.openai_root(backend.url, workspace)
                return Outcome(Phase.READY.value, Reason.Ready, f"{where} is ready; the inference gateway routes "
                               f"{entity!r}", fields)
            detail = (f"{where} is READY but the inference gateway does not route {entity!r} yet (listed: "
                      f"{', '.join(listed) or 'none'})")
    status = body.get("status") or {}
    if status.get("servingRevision") and status.get("endpoint"):
        # an older version still serves: clients keep calling it by its name until the new one is Ready
        fields.endpoint, fields.served_model_name = status["endpoint"], status.get("servedModelName") or entity
    return progressing_or_timed_out(body, spec, fields, detail)


def _delete(api: NemoApi, workspace: str, body: Any) -> list[str]:
    """Delete our deployment (all versions), then, once the platform reports it DELETED or gone, our configs.
    Raises while that is not confirmed (the finalizer stays)."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    target, tag = render.deployment_name(namespace, name), remote.owner_tag(namespace, name)
    deleted = []
    deployment = remote.get_deployment(api, workspace, target)
    if deployment is not None:
        config = remote.get_config(api, workspace, str(deployment.get("config")))
        if (config or {}).get("description") == tag:  # never a stranger's deployment of the same name
            if deployment.get("status") not in remote.GONE:
                remote.delete_deployment(api, workspace, target)
            deleted.append(target)
            left = [v for v in remote.versions(api, workspace, target) if v.get("status") != "DELETED"]
            if left:
                raise NemoError(409, f"deployment {workspace}/{target}: versions "
                                f"{', '.join(str(v.get('entity_version')) for v in left)} not DELETED yet", True)
    for config_name in [str(c["name"]) for c in remote.iter_configs(api, workspace)
                        if str(c.get("name", "")).startswith(f"{target}-") and c.get("description") == tag]:
        if not remote.delete_config(api, workspace, config_name):
            raise NemoError(409, f"deployment config {workspace}/{config_name} is still in use", True)
        deleted.append(config_name)
    return deleted


def delete_remote(body: Any, spec: ModelDeploymentSpec | None) -> list[str]:
    """Delete what this ModelDeployment created on the platform; answers the names. The key is the user's Secret as
    it is now; when that is gone or refused (401/403), the one captured at the first create, sent only to the URL
    it was captured for."""
    meta = body["metadata"]
    backend = spec.nemo if spec is not None else None
    workspace = backend.workspace if backend is not None else None
    refused: Exception | None = None
    if backend is not None:
        def delete_with_own_key() -> list[str]:
            with session(meta["namespace"], backend) as api:
                return _delete(api, backend.workspace, body)

        deleted = with_own_key(delete_with_own_key)
        if not isinstance(deleted, Refusal):
            return deleted
        refused = deleted
    captured = read_captured(meta["namespace"], meta["name"], meta["uid"])
    if captured is None:
        if refused is None or isinstance(refused, SecretMissing):
            return []  # nothing was ever created: credentials are captured before the first create
        raise refused
    if workspace is None:
        raise PermanentFailure(Reason.InvalidSpec, "the spec is not valid, so the platform workspace is unknown; fix "
                               "the spec so the deployment can be deleted")
    log.info("deleting with the credentials captured at the first create (%s)", refused)
    with NemoApi(captured.url, captured.api_key, deadline=RUNTIME.config.remote_call_deadline, service=SERVICE) as api:
        return _delete(api, workspace, body)

