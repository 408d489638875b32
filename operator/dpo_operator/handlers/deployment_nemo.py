"""ModelDeployment, ``nemo`` backend: NeMo Deployment Management serves the model.

Each revision gets its own config and model deployment (``<name>-<revision>``), so the previous one keeps
serving until the new one reports ``ready``; then the previous one is deleted. Deleting the resource deletes
what it created remotely (see ``delete_remote``).
"""

from __future__ import annotations

import logging
from typing import Any

from dpo_operator.api.common import Phase
from dpo_operator.api.deployment import KIND, ModelDeploymentSpec
from dpo_operator.handlers.common import PermanentFailure
from dpo_operator.handlers.deployment_shared import progressing_or_timed_out
from dpo_operator.kube.naming import child_name
from dpo_operator.kube.secrets import read_secret_key
from dpo_operator.kube.status import Outcome, write_status
from dpo_operator.nemo import deployments as remote
from dpo_operator.nemo.http import NemoApi
from dpo_operator.serving.model import ServedModel

log = logging.getLogger(__name__)


def remote_name(name: str, rev: str) -> str:
    return child_name(name, rev[:8])


def session(namespace: str, spec: ModelDeploymentSpec) -> NemoApi:
    assert spec.nemo is not None
    return NemoApi(spec.nemo.url, read_secret_key(namespace, spec.nemo.api_key_secret_ref))


def reconcile(body: Any, spec: ModelDeploymentSpec, model: ServedModel, rev: str, fields: dict[str, Any]) -> None:
    backend = spec.nemo
    assert backend is not None
    if model.remote_model is None:
        raise PermanentFailure("ModelUnavailable", "backend nemo serves models known to NeMo (a customizer-trained "
                               "model, or model.explicit.name without a pvc); this model lives on a PVC: use "
                               "backend: kubernetes")
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    target = remote_name(name, rev)
    previous = (body.get("status") or {}).get("remoteDeployment")
    with session(namespace, spec) as api:
        deployment = remote.get_deployment(api, backend.namespace, target)
        if deployment is None:  # create-if-absent; 409s from a concurrent create are fine
            remote.ensure_config(api, backend.namespace, target, model.remote_model, backend.image_name,
                                 backend.image_tag, backend.gpu)
            remote.ensure_deployment(api, backend.namespace, target, target)
            deployment = remote.get_deployment(api, backend.namespace, target) or {}
        state, description = remote.deployment_status(deployment)
        fields["endpoint"] = deployment.get("url") or (body.get("status") or {}).get("endpoint")
        if state in remote.FAILED:
            raise PermanentFailure("DeploymentFailed", f"NeMo model deployment {backend.namespace}/{target} is {state}"
                                   + (f": {description}" if description else ""))
        if state in remote.READY:
            if previous and previous != target:
                remote.delete(api, backend.namespace, previous)
                log.info("ModelDeployment %s/%s: %s replaced by %s", namespace, name, previous, target)
            fields.update(remoteDeployment=target, servingRevision=rev, readyReplicas=spec.replicas,
                          endpoint=fields["endpoint"] or backend.url)
            write_status(KIND, body, Outcome(Phase.READY.value, "Ready",
                                             f"NeMo model deployment {backend.namespace}/{target} is ready", fields), "Ready")
            return
    progressing_or_timed_out(body, spec, fields, f"NeMo model deployment {backend.namespace}/{target} is {state}"
                             + (f" ({description})" if description else ""))


def delete_remote(body: Any, spec: ModelDeploymentSpec) -> list[str]:
    """Delete the serving and the in-progress remote deployments; answers their names."""
    assert spec.nemo is not None
    status = body.get("status") or {}
    names = {n for n in (status.get("remoteDeployment"),
                         status.get("revision") and remote_name(body["metadata"]["name"], status["revision"])) if n}
    with session(body["metadata"]["namespace"], spec) as api:
        for target in sorted(names):
            remote.delete(api, spec.nemo.namespace, target)
    return sorted(names)
