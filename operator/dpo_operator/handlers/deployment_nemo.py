"""ModelDeployment, ``nemo`` backend: NeMo Deployment Management serves the model.

A full model (all-weights result, or an explicit NeMo model) gets its own config and model deployment per
revision (``<name>-<revision>``), so the previous one keeps serving until the new one is ready; then the previous
one is deleted. A LoRA adapter trained by NeMo Customizer is served the NeMo way: by a NIM running the base model
with the Entity Store as its PEFT source (Deployment Management sets ``NIM_PEFT_SOURCE`` by default). A running
base-model NIM that is not ours is reused; otherwise we deploy one. Either way the resource is Ready only once
the NIM answers ``/v1/health/ready`` and lists the served name (the adapter's) in ``/v1/models``. Deleting the
resource deletes what it created remotely, never a reused NIM (see ``delete_remote``).
"""

from __future__ import annotations

import logging
from typing import Any

from dpo_operator.api.common import Phase
from dpo_operator.api.deployment import (
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    NemoDeploymentBackend,
)
from dpo_operator.api.reasons import Reason
from dpo_operator.handlers.deployment_shared import progressing_or_timed_out
from dpo_operator.kube.naming import child_name
from dpo_operator.kube.secrets import read_secret_key
from dpo_operator.kube.status import Outcome
from dpo_operator.nemo import deployments as remote
from dpo_operator.nemo.http import NemoApi
from dpo_operator.runtime.controller import RUNTIME
from dpo_operator.runtime.errors import PermanentFailure
from dpo_operator.serving.model import ServedModel
from dpo_operator.serving.probe import check_endpoint

log = logging.getLogger(__name__)


def remote_name(name: str, rev: str) -> str:
    return child_name(name, rev[:8])


def session(namespace: str, spec: ModelDeploymentSpec) -> NemoApi:
    assert spec.nemo is not None
    return NemoApi(spec.nemo.url, read_secret_key(namespace, spec.nemo.api_key_secret_ref, spec.nemo.url),
                   deadline=RUNTIME.config.remote_call_deadline, service="deployment-management")


def served_name(model: ServedModel) -> str:
    """The name the NIM lists: the adapter's or the model's entity name (NeMo names them, not us)."""
    assert model.remote_model is not None
    return model.remote_model


def find_or_create(api: NemoApi, backend: NemoDeploymentBackend, body: Any, model: ServedModel,
                   target: str) -> tuple[str, dict[str, Any]]:
    """Our deployment for this revision, a reusable base-model NIM (LoRA), or a new deployment of ours."""
    deployment = remote.get_deployment(api, backend.namespace, target)
    if deployment is not None:
        return target, deployment
    if model.remote_base is not None:
        running = remote.find_serving(api, backend.namespace, model.remote_base)
        if running is not None:
            return str(running.get("name")), running
    deployed = model.remote_base or model.remote_model
    assert deployed is not None
    remote.ensure_config(api, backend.namespace, target, deployed, backend.image_name, backend.image_tag, backend.gpu)
    tag = remote.owner_tag(body["metadata"]["namespace"], body["metadata"]["name"])
    remote.ensure_deployment(api, backend.namespace, target, target, tag)  # 409 from a concurrent create is fine
    return target, remote.get_deployment(api, backend.namespace, target) or {}


def decide(body: Any, spec: ModelDeploymentSpec, model: ServedModel, rev: str,
           fields: ModelDeploymentStatus) -> Outcome:
    backend = spec.nemo
    assert backend is not None
    if model.remote_model is None:
        raise PermanentFailure(Reason.ModelUnavailable, "backend nemo serves models known to NeMo (a customizer-trained "
                               "model, or model.explicit.name without a pvc); this model lives on a PVC: use "
                               "backend: kubernetes")
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    previous = (body.get("status") or {}).get("remoteDeployment")
    listed = served_name(model)
    fields.served_model_name = listed
    with session(namespace, spec) as api:
        target, deployment = find_or_create(api, backend, body, model, remote_name(name, rev))
        state, description = remote.deployment_status(deployment)
        where = f"NeMo model deployment {backend.namespace}/{target}"
        fields.endpoint = deployment.get("url") or (body.get("status") or {}).get("endpoint")
        if state in remote.FAILED:
            raise PermanentFailure(Reason.DeploymentFailed if state == "failed" else Reason.DeploymentCancelled,
                                   f"{where} is {state}" + (f": {description}" if description else ""))
        detail = f"{where} is {state}" + (f" ({description})" if description else "")
        if state in remote.READY:
            check = check_endpoint(deployment.get("url") or backend.url, listed, deadline=RUNTIME.config.probe_deadline)
            if check.ready:
                if previous and previous != target:
                    remote.delete(api, backend.namespace, previous, remote.owner_tag(namespace, name))
                    log.info("ModelDeployment %s/%s: %s replaced by %s", namespace, name, previous, target)
                fields.remote_deployment, fields.serving_revision = target, rev
                fields.ready_replicas, fields.endpoint = spec.replicas, fields.endpoint or backend.url
                return Outcome(Phase.READY.value, Reason.Ready, f"{where} is ready; {check.detail}", fields)
            detail = f"{where} is ready but not serving yet: {check.detail}"
    return progressing_or_timed_out(body, spec, fields, detail)


def delete_remote(body: Any, spec: ModelDeploymentSpec) -> list[str]:
    """Delete the serving and the in-progress remote deployments we created; answers their names."""
    assert spec.nemo is not None
    status = body.get("status") or {}
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    names = {n for n in (status.get("remoteDeployment"),
                         status.get("revision") and remote_name(name, status["revision"])) if n}
    tag = remote.owner_tag(namespace, name)
    deleted = []
    with session(namespace, spec) as api:
        # also those status does not name (a status write that failed after the create): found by our tag
        names |= {d["name"] for d in remote.iter_deployments(api, spec.nemo.namespace)
                  if d.get("description") == tag and d.get("name")}
        for target in sorted(names):
            if remote.delete(api, spec.nemo.namespace, target, tag):
                deleted.append(target)
    return deleted
