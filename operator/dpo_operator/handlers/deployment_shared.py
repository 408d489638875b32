"""What both ModelDeployment backends share: the rollout clock and the ReadinessTimeout verdict."""

from __future__ import annotations

from typing import Any

from dpo_operator.api.common import Phase
from dpo_operator.api.deployment import ModelDeploymentSpec, ModelDeploymentStatus
from dpo_operator.api.reasons import Reason
from dpo_operator.kube.conditions import seconds_since
from dpo_operator.kube.status import Outcome
from dpo_operator.runtime.errors import PermanentFailure
from dpo_operator.serving.model import ServedModel


def progressing_or_timed_out(body: Any, spec: ModelDeploymentSpec, fields: ModelDeploymentStatus,
                             detail: str) -> Outcome:
    """Not ready yet: Progressing, or a terminal ReadinessTimeout once the wall clock since the rollout started
    (kept in status, so it survives operator restarts) passes ``readinessTimeoutSeconds``."""
    elapsed = seconds_since(fields.rollout_start_time) or 0.0
    if elapsed > spec.readiness_timeout_seconds:
        serving = (body.get("status") or {}).get("servingRevision")
        still = f"; the previous revision {serving} keeps serving" if serving and serving != fields.revision else ""
        raise PermanentFailure(Reason.ReadinessTimeout, f"not ready {elapsed:.0f}s after the rollout started "
                               f"(readinessTimeoutSeconds {spec.readiness_timeout_seconds}): {detail}{still}")
    return Outcome(Phase.PROGRESSING.value, Reason.RollingOut, detail, fields)


def require_weights(model: ServedModel) -> None:
    """A NIM we run needs weights it can mount: a Customizer-trained model lives in NeMo (backend: nemo serves it)."""
    if model.remote_model is not None and model.weights is None and not model.nim_builtin:
        raise PermanentFailure(Reason.ModelUnavailable, f"model {model.remote_model!r} was trained by NeMo Customizer and "
                               "lives in NeMo (no weights on a PVC): serve it with backend: nemo")
