"""ModelDeployment, ``nimOperator`` backend: a NIMService (and a NIMCache for a hub model) for the NVIDIA NIM
Operator, Ready when the NIMService reports ``state: Ready`` and the NIM answers ``/v1/health/ready`` and lists the
served model in ``/v1/models``.

The NIM Operator runs the Deployment, Service, HPA and cache Job; we own the NIMService and NIMCache (owner
references: deleting the ModelDeployment deletes them, and the NIM Operator its children). A spec change replaces
the NIMService's spec (the NIM Operator rolls its Deployment without taking a ready pod away). Its status has no
observedGeneration, so right after we change the spec we wait for the next check before trusting ``Ready``.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from dpo_operator.api.common import Phase
from dpo_operator.api.deployment import CacheSource, ModelDeploymentSpec, ModelDeploymentStatus
from dpo_operator.api.reasons import Reason
from dpo_operator.handlers.deployment_shared import progressing_or_timed_out, require_weights
from dpo_operator.kube import client
from dpo_operator.kube.naming import service_name
from dpo_operator.kube.objects import none_if_missing, read_or_create
from dpo_operator.kube.secrets import check_refs
from dpo_operator.kube.status import Outcome
from dpo_operator.render import nimoperator as render
from dpo_operator.render.nim import NGC_URL, REVISION_ANNOTATION
from dpo_operator.runtime.controller import RUNTIME
from dpo_operator.runtime.errors import InvalidSpec, PermanentFailure
from dpo_operator.serving.model import ServedModel
from dpo_operator.serving.nim import cluster_url
from dpo_operator.serving.probe import check_endpoint

NIMSERVICES, NIMCACHES = "nimservices", "nimcaches"


def _read(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    return none_if_missing(lambda: client.custom().get_namespaced_custom_object(
        render.API_GROUP, render.API_VERSION, namespace, plural, name))


def _refused(exc: ApiException, kind: str) -> InvalidSpec:
    """The NIM Operator's schema refused what we built from the spec: the spec asks for something it cannot do."""
    return InvalidSpec(f"the NIM Operator's {kind} schema refused the {kind} built from this spec ({exc.status}): "
                       f"{exc.body}")


def apply(plural: str, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create the object, or replace its spec when the revision annotation changed; (object, changed)."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    custom = client.custom()
    created: list[bool] = []

    def create() -> dict[str, Any]:
        created.append(True)
        return custom.create_namespaced_custom_object(render.API_GROUP, render.API_VERSION, namespace, plural, manifest)

    try:
        current = read_or_create(lambda: _read(plural, namespace, name), create, manifest)
        wanted = (manifest["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)
        if created or (current["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION) == wanted:
            return current, bool(created)
        current["metadata"].setdefault("annotations", {}).update(manifest["metadata"]["annotations"])
        current["spec"] = manifest["spec"]
        return custom.replace_namespaced_custom_object(render.API_GROUP, render.API_VERSION, namespace, plural, name,
                                                       current), True  # 409 on a race: retried
    except ApiException as exc:
        if exc.status == 422:
            raise _refused(exc, manifest["kind"]) from None
        if exc.status == 404 and created:  # the API server does not serve the kind at all
            raise PermanentFailure(Reason.NimOperatorNotInstalled, f"the API server does not serve {plural}."
                                   f"{render.API_GROUP}: install the NVIDIA NIM Operator (its CRDs), or use "
                                   "backend: kubernetes") from None
        raise


def check_secrets(namespace: str, spec: ModelDeploymentSpec) -> None:
    """The Secrets the NIM Operator's pods read (by name) must exist, have opted in and allow their destination."""
    refs: list[tuple[str, str | None, bool, str | None]] = []
    if spec.ngc_api_key_secret_ref is not None:
        refs.append((spec.ngc_api_key_secret_ref.name, render.NGC_KEY, False, NGC_URL))
    cache = spec.nim_operator_settings.cache
    if cache is not None and cache.source == CacheSource.HUGGING_FACE.value and cache.hf_token_secret_ref:
        refs.append((cache.hf_token_secret_ref.name, render.HF_KEY, False, cache.hf_endpoint))
    check_refs(namespace, refs)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def cache_verdict(cache: dict[str, Any]) -> str | None:
    """None once the NIMCache is Ready; else what it is doing (raises when it failed)."""
    status = cache.get("status") or {}
    state = status.get("state") or "Pending"
    if state == "Ready":
        return None
    if state == "Failed":
        detail = condition(cache, "NIM_CACHE_JOB_COMPLETED").get("message") or condition(cache, "Failed").get("message")
        raise PermanentFailure(Reason.DeploymentFailed, f"NIMCache {cache['metadata']['name']} failed to cache the "
                               f"model" + (f": {detail}" if detail else "") + "; fix the cache settings (a new "
                               "revision creates it again) or delete the NIMCache to retry")
    return f"NIMCache {cache['metadata']['name']} is {state}"


def decide(body: Any, spec: ModelDeploymentSpec, model: ServedModel, rev: str,
           fields: ModelDeploymentStatus) -> Outcome:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    config = RUNTIME.config
    require_weights(model)
    image = spec.template.image or config.nim_image
    try:
        service_manifest = render.nim_service(body, spec, model, image, rev)
    except render.NotServable as exc:
        raise PermanentFailure(Reason.ModelUnavailable, str(exc)) from None
    check_secrets(namespace, spec)
    if model.adapter is not None:
        fields.served_model_name = render.served_adapter_name(model)
    fields.endpoint = cluster_url(name, namespace, spec.port)
    waiting = None
    if (cache_manifest := render.nim_cache(body, spec, model, image)) is not None:
        cache, _ = apply(NIMCACHES, cache_manifest)
        waiting = cache_verdict(cache)
    service, changed = apply(NIMSERVICES, service_manifest)
    status = service.get("status") or {}
    fields.ready_replicas = int(status.get("availableReplicas") or 0)  # its model.clusterEndpoint is an IP:port
    if spec.replicas == 0 and spec.nim_operator_settings.autoscaling is None:
        return Outcome(Phase.SUSPENDED.value, Reason.ScaledToZero, "replicas is 0: nothing serves", fields)
    state = status.get("state") or "Pending"
    where = f"NIMService {name}"
    if state == "Failed":
        message = condition(service, "Failed").get("message") or condition(service, "Ready").get("message")
        raise PermanentFailure(Reason.DeploymentFailed, f"{where} failed" + (f": {message}" if message else ""))
    ready = condition(service, "Ready")
    detail = waiting or f"{where} is {state}" + (f" ({ready['message']})" if ready.get("message") else "")
    if state == "Ready" and not changed and waiting is None:
        probe_url = config.probe_url_template.format(name=service_name(name), namespace=namespace, port=spec.port)
        check = check_endpoint(probe_url, fields.served_model_name or model.served_name, deadline=config.probe_deadline)
        if check.ready:
            fields.serving_revision = rev
            return Outcome(Phase.READY.value, Reason.Ready, f"{where} is Ready; {check.detail}", fields)
        detail = f"{where} is Ready but not serving yet: {check.detail}"
    return progressing_or_timed_out(body, spec, fields, detail)
