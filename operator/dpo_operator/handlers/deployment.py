"""ModelDeployment handlers: resolve the model, roll out a revision on the chosen backend, watch readiness.

Phases: Pending (waiting for the training job's model) → Progressing (rolling out) → Ready, or Failed
(terminal for this generation: a spec change starts a new rollout). Spec changes make a new revision; the previous
one keeps serving until the new one is Ready. The rollout clock (``status.rolloutStartTime``) lives in status, so
``readinessTimeoutSeconds`` is wall-clock time from the rollout start, across operator restarts.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from dpo_operator.api import GROUP, VERSION
from dpo_operator.api import training as training_api
from dpo_operator.api.common import Phase
from dpo_operator.api.deployment import (
    KIND,
    DeploymentBackend,
    ModelDeploymentSpec,
    NemoApiGeneration,
    ModelDeploymentStatus,
)
from dpo_operator.api.reasons import Reason
from dpo_operator.config import OperatorConfig
from dpo_operator.handlers import (
    deployment_kubernetes,
    deployment_nemo,
    deployment_nimoperator,
    deployment_platform,
)
from dpo_operator.handlers.common import enqueue_owner, not_confirmed, object_lock
from dpo_operator.kube import custom_objects
from dpo_operator.kube.conditions import elapsed_since_start, now
from dpo_operator.kube.naming import owner_label
from dpo_operator.kube.secrets import SecretMissing
from dpo_operator.kube.status import Outcome, is_terminal
from dpo_operator.runtime.controller import RUNTIME, Controller, Result
from dpo_operator.runtime.errors import PermanentFailure, parse_spec
from dpo_operator.serving import model as serving_model
from dpo_operator.serving.nim import revision

log = logging.getLogger(__name__)
DONE = "Ready"
BACKENDS: dict[DeploymentBackend, Any] = {DeploymentBackend.KUBERNETES: deployment_kubernetes,
                                          DeploymentBackend.NEMO: deployment_nemo,
                                          DeploymentBackend.NIM_OPERATOR: deployment_nimoperator}


def backend_module(spec: ModelDeploymentSpec) -> Any:
    """The module serving this spec: by backend, and for nemo by the API generation it speaks."""
    if spec.backend == DeploymentBackend.NEMO.value and spec.nemo is not None \
            and spec.nemo.api_version == NemoApiGeneration.V2.value:
        return deployment_platform
    return BACKENDS[DeploymentBackend(spec.backend)]


def settled(body: Any) -> bool:
    """Failed (or otherwise terminal) for the current generation: nothing to do until the spec changes."""
    status = body.get("status") or {}
    return is_terminal(body) and status.get("observedGeneration") == body["metadata"].get("generation")


def decide(body: dict[str, Any]) -> Result:
    """The model to serve, the revision to roll out on the chosen backend, and the outcome its readiness implies."""
    if settled(body):
        return Result()
    spec = parse_spec(ModelDeploymentSpec, body)
    namespace = body["metadata"]["namespace"]
    try:
        model = serving_model.resolve(spec, lambda ref: custom_objects.read(training_api.KIND, namespace, ref),
                                      body["metadata"]["name"])
    except serving_model.ModelNotReady as exc:
        return Result(Outcome(Phase.PENDING.value, Reason.WaitingForModel, str(exc)))
    except serving_model.ModelUnavailable as exc:
        raise PermanentFailure(Reason.ModelUnavailable, str(exc)) from None
    status = body.get("status") or {}
    rev = revision(spec, model)
    # a rollout clock that is not a timestamp, or lies in the future (edited by hand), starts again
    new_rollout = status.get("revision") != rev or elapsed_since_start(status.get("rolloutStartTime")) is None
    fields = ModelDeploymentStatus(revision=rev, served_model_name=model.served_name,
                                   rollout_start_time=now() if new_rollout else status["rolloutStartTime"])
    backend = backend_module(spec)
    try:
        return Result(backend.decide(body, spec, model, rev, fields))
    except SecretMissing as exc:
        return Result(Outcome(Phase.PENDING.value, exc.reason, f"{exc}; {exc.hint}", fields))


def next_check(body: Any) -> float | None:
    """While rolling out, look again soon; once Ready, now and then to see that it stays so; never once settled
    (Failed for this generation: a spec change starts over)."""
    if settled(body):
        return None
    config = RUNTIME.config
    ready = (body.get("status") or {}).get("phase") == Phase.READY.value
    return config.ready_check_seconds if ready else config.rollout_check_seconds


RUNTIME.register(Controller(KIND, decide, next_check, DONE, lane=lambda _: "deployment"))


@kopf.on.create(GROUP, VERSION, KIND.plural)
@kopf.on.resume(GROUP, VERSION, KIND.plural)
@kopf.on.update(GROUP, VERSION, KIND.plural, field="spec")
def deployment_changed(body: kopf.Body, **_: Any) -> None:
    RUNTIME.enqueue(KIND, body)


@kopf.on.event("apps", "v1", "deployments", labels={owner_label(KIND.kind): kopf.PRESENT})
def nim_deployment_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    enqueue_owner(KIND, body, namespace, type)


# registered at import (kopf's registry), so read from the environment here: chart nimOperator.enabled
if OperatorConfig.from_env().watch_nim_operator:
    @kopf.on.event(deployment_nimoperator.render.API_GROUP, deployment_nimoperator.render.API_VERSION,
                   deployment_nimoperator.NIMSERVICES, labels={owner_label(KIND.kind): kopf.PRESENT})
    @kopf.on.event(deployment_nimoperator.render.API_GROUP, deployment_nimoperator.render.API_VERSION,
                   deployment_nimoperator.NIMCACHES, labels={owner_label(KIND.kind): kopf.PRESENT})
    def nim_operator_object_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
        """The NIM Operator's status changes (NIMService, NIMCache) release a waiting rollout at once."""
        enqueue_owner(KIND, body, namespace, type)


def _model_may_be_ready(body: kopf.Body, type: str | None, **_: Any) -> bool:
    status = body.get("status") or {}
    return type != "DELETED" and (status.get("phase") in (Phase.SUCCEEDED.value, Phase.FAILED.value)
                                  or bool(status.get("promotion")))


# ``when``: kopf skips the call (no thread hand-over, no log line) for the events of training jobs still running
@kopf.on.event(GROUP, VERSION, training_api.KIND.plural, when=_model_may_be_ready)
def model_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """A training job that finishes (or whose promotion gate moves on) releases the deployments waiting for its
    model."""
    for deployment in custom_objects.list_in(KIND, namespace):
        ref = (((deployment.get("spec") or {}).get("model") or {}).get("trainingJobRef") or {}).get("name")
        if ref == body["metadata"]["name"] and not settled(deployment):
            RUNTIME.enqueue(KIND, deployment)


@kopf.on.delete(GROUP, VERSION, KIND.plural, when=lambda spec, **_: spec.get("backend") == DeploymentBackend.NEMO.value)
def nemo_deployment_deleted(body: kopf.Body, retry: int, **_: Any) -> None:
    """Delete the remote deployments; the finalizer stays until that is confirmed (or a person removes it)."""
    name = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    RUNTIME.forget(KIND, body)
    platform = ((body["spec"].get("nemo") or {}).get("apiVersion")) == NemoApiGeneration.V2.value
    try:
        spec: ModelDeploymentSpec | None = ModelDeploymentSpec.model_validate(dict(body["spec"]))
    except ValueError:
        if not platform:
            return
        spec = None  # the credentials captured at the first create still know where it went
    try:
        with object_lock(body["metadata"]["uid"], RUNTIME.config.remote_call_deadline):
            if platform:
                removed = deployment_platform.delete_remote(body, spec)
            else:
                assert spec is not None
                removed = deployment_nemo.delete_remote(body, spec)
            log.info("ModelDeployment %s deleted; removed NeMo deployments %s", name, removed)
    except Exception as exc:
        raise not_confirmed(KIND, body, "deleting its NeMo deployments", exc, retry) from None
