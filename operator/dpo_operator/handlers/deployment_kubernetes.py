"""ModelDeployment, ``kubernetes`` backend: a NIM Deployment + Service, Ready when the rollout is complete,
``/v1/health/ready`` answers 200 and ``/v1/models`` lists the model."""

from __future__ import annotations

from typing import Any

from dpo_operator.api.common import Phase
from dpo_operator.api.deployment import ModelDeploymentSpec, ModelDeploymentStatus
from dpo_operator.api.reasons import Reason
from dpo_operator.handlers.deployment_shared import progressing_or_timed_out, require_weights
from dpo_operator.kube import client
from dpo_operator.kube.jobs import to_dict
from dpo_operator.kube.naming import service_name
from dpo_operator.kube.objects import none_if_missing, read_or_create
from dpo_operator.kube.secrets import check_pod_secrets
from dpo_operator.kube.status import Outcome
from dpo_operator.runtime.controller import RUNTIME
from dpo_operator.render import nim
from dpo_operator.serving.nim import cluster_url, rollout_state
from dpo_operator.serving.model import ServedModel
from dpo_operator.serving.probe import check_endpoint


def apply_deployment(namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create, or replace the spec when the revision changed (a PUT, so no stale list entries survive a merge)."""
    apps = client.apps()
    name = manifest["metadata"]["name"]
    check_pod_secrets(namespace, manifest["spec"]["template"])  # refuses Secrets that did not opt in
    current = read_or_create(
        lambda: none_if_missing(lambda: to_dict(apps.read_namespaced_deployment(name, namespace))),
        lambda: to_dict(apps.create_namespaced_deployment(namespace, manifest)), manifest)
    wanted = manifest["metadata"]["annotations"][nim.REVISION_ANNOTATION]
    if (current["metadata"].get("annotations") or {}).get(nim.REVISION_ANNOTATION) == wanted:
        return current
    current["metadata"].setdefault("annotations", {}).update(manifest["metadata"]["annotations"])
    current["spec"] = manifest["spec"]
    return to_dict(apps.replace_namespaced_deployment(name, namespace, current))  # 409 on a race: retried


def apply_service(namespace: str, manifest: dict[str, Any]) -> None:
    """Create, or bring ports and type up to date (a PUT that keeps the allocated clusterIP)."""
    core = client.core()
    name = manifest["metadata"]["name"]
    current = read_or_create(
        lambda: none_if_missing(lambda: to_dict(core.read_namespaced_service(name, namespace))),
        lambda: to_dict(core.create_namespaced_service(namespace, manifest)), manifest)
    spec = current["spec"]
    if spec.get("ports") == manifest["spec"]["ports"] and spec.get("type") == manifest["spec"]["type"]:
        return
    spec.update(ports=manifest["spec"]["ports"], type=manifest["spec"]["type"], selector=manifest["spec"]["selector"])
    core.replace_namespaced_service(name, namespace, current)


def decide(body: Any, spec: ModelDeploymentSpec, model: ServedModel, rev: str,
           fields: ModelDeploymentStatus) -> Outcome:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    config = RUNTIME.config
    require_weights(model)
    apply_service(namespace, nim.service_manifest(body, spec))
    deployment = apply_deployment(namespace, nim.deployment_manifest(body, spec, model, config, rev))
    complete, detail, ready_replicas = rollout_state(deployment, rev)
    fields.endpoint, fields.ready_replicas = cluster_url(name, namespace, spec.port), ready_replicas
    if spec.replicas == 0:
        return Outcome(Phase.SUSPENDED.value, Reason.ScaledToZero, "replicas is 0: nothing serves", fields)
    if complete:
        probe_url = config.probe_url_template.format(name=service_name(name), namespace=namespace, port=spec.port)
        check = check_endpoint(probe_url, model.served_name, deadline=config.probe_deadline)
        if check.ready:
            fields.serving_revision = rev
            return Outcome(Phase.READY.value, Reason.Ready, f"{detail}; {check.detail}", fields)
        detail = check.detail
    return progressing_or_timed_out(body, spec, fields, detail)
