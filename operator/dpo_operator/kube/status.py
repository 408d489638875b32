"""Write a custom resource's status through the status subresource, following Kubernetes conventions.

A reconcile ends in an :class:`Outcome` (phase, reason, message and per-kind fields); this module turns it
into ``phase``, ``conditions`` (Progressing / Failed / Suspended / the kind's done-condition),
``observedGeneration`` and start/completion times, and patches only when something changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from dpo_operator.api import GROUP, VERSION, KindInfo
from dpo_operator.api.common import Phase
from dpo_operator.api.reasons import Reason
from dpo_operator.kube import client, events
from dpo_operator.kube.conditions import now, set_condition
from dpo_operator.kube.redact import redact

# reasons of non-terminal outcomes that need a person's attention (recorded as Warning events)
WARNING_REASONS = {"SecretNotFound", "SecretNotUsable", "SecretDestinationNotAllowed", "PollFailing", "Retrying", "CreateContainerConfigError",
                   "CreateContainerError", "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "Unschedulable",
                   "CrashLoopBackOff", "PodFailing", "NameConflict", "NotPromoted"}
TERMINAL_PHASES = {Phase.SUCCEEDED.value, Phase.FAILED.value, Phase.CANCELLED.value}
ACTIVE_PHASES = {Phase.PENDING.value, Phase.RUNNING.value, Phase.PROGRESSING.value}


@dataclass
class Outcome:
    phase: str
    reason: str
    message: str
    # the kind's own status fields, as its status model (only the fields set are written; None removes one)
    fields: BaseModel | None = None
    # whether what runs reflects the current spec: (applied, reason, message) for the SpecApplied condition
    applied: tuple[bool, str, str] | None = None
    # a kind's own conditions: type -> (status, reason, message)
    conditions: dict[str, tuple[bool, str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reason = str(self.reason)  # a Reason member, or a reason Kubernetes reported: plain text in the API


def status_fields(fields: BaseModel | None) -> dict[str, Any]:
    """The fields set in a status model, camelCase as in the API (an explicit None stays: it removes the field)."""
    return {} if fields is None else fields.model_dump(by_alias=True, exclude_unset=True, mode="json")


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def finite(value: Any) -> Any:
    """``value`` without NaN or infinities, which JSON cannot carry (kube-apiserver answers 400): a field holding
    one is left out, a list item dropped (an unknown number is no number)."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items() if not _non_finite(v)}
    if isinstance(value, list):
        return [finite(v) for v in value if not _non_finite(v)]
    return value


def is_terminal(body: Any) -> bool:
    return ((body.get("status") or {}).get("phase")) in TERMINAL_PHASES


def build_status(body: Any, outcome: Outcome, done_condition: str) -> dict[str, Any]:
    """The full status an outcome implies, given the object's current status."""
    old = dict(body.get("status") or {})
    generation = body["metadata"].get("generation")
    phase = outcome.phase
    outcome = Outcome(phase, outcome.reason, redact(outcome.message), outcome.fields, outcome.applied,
                      outcome.conditions)  # no secret
    conditions = old.get("conditions")
    for type_, (state, reason, message) in outcome.conditions.items():
        conditions = set_condition(conditions, type_, state, reason, message, generation)
    conditions = set_condition(conditions, "Progressing", phase in ACTIVE_PHASES,
                               outcome.reason if phase in ACTIVE_PHASES else phase, outcome.message if phase in ACTIVE_PHASES else "", generation)
    conditions = set_condition(conditions, done_condition, phase in (Phase.SUCCEEDED.value, Phase.READY.value),
                               outcome.reason if phase in (Phase.SUCCEEDED.value, Phase.READY.value) else phase,
                               outcome.message if phase in (Phase.SUCCEEDED.value, Phase.READY.value) else "", generation)
    failed = phase in (Phase.FAILED.value, Phase.CANCELLED.value)
    conditions = set_condition(conditions, "Failed", failed, outcome.reason if failed else Reason.NoFailure,
                               outcome.message if failed else "", generation)
    if outcome.applied is not None:
        conditions = set_condition(conditions, "SpecApplied", outcome.applied[0], outcome.applied[1],
                                   outcome.applied[2], generation)
    suspended = phase == Phase.SUSPENDED.value
    conditions = set_condition(conditions, "Suspended", suspended, outcome.reason if suspended else Reason.NotSuspended,
                               outcome.message if suspended else "", generation)
    queued = phase == Phase.QUEUED.value
    if queued or any(c.get("type") == "Queued" for c in conditions or []):  # only kinds that were ever queued
        conditions = set_condition(conditions, "Queued", queued, outcome.reason if queued else Reason.NotQueued,
                                   outcome.message if queued else "", generation)
    status = {**old, **finite(status_fields(outcome.fields))}
    status.update(phase=phase, reason=str(outcome.reason), message=outcome.message, observedGeneration=generation,
                  conditions=conditions)
    if phase not in (Phase.PENDING.value, Phase.QUEUED.value) and not status.get("startTime"):
        status["startTime"] = now()
    if phase in TERMINAL_PHASES and not status.get("completionTime"):
        status["completionTime"] = now()
    elif phase not in TERMINAL_PHASES:
        status.pop("completionTime", None)  # a ModelDeployment rolls out again after a failure
    return {k: v for k, v in status.items() if v is not None}


def write_status(kind: KindInfo, body: Any, outcome: Outcome, done_condition: str = "Succeeded") -> dict[str, Any]:
    """Patch the status subresource if the outcome changes it; returns the status now in force.

    A first terminal status carries ``body``'s resourceVersion as a precondition: when the object changed since
    the caller read it (another handler wrote meanwhile), the API answers 409 and the caller decides again.
    """
    old = dict(body.get("status") or {})
    new = build_status(body, outcome, done_condition)
    if old == new:
        return old
    removed = {key: None for key in old if key not in new}
    patch: dict[str, Any] = {"status": {**removed, **new}}
    version = body["metadata"].get("resourceVersion")
    if outcome.phase in TERMINAL_PHASES and old.get("phase") not in TERMINAL_PHASES and version:
        patch["metadata"] = {"resourceVersion": version}
    client.custom().patch_namespaced_custom_object_status(
        GROUP, VERSION, body["metadata"]["namespace"], kind.plural, body["metadata"]["name"], patch)
    if (old.get("phase"), _reason(old)) != (new.get("phase"), outcome.reason):
        warning = outcome.phase == Phase.FAILED.value or outcome.reason in WARNING_REASONS
        events.record(kind, body, "Warning" if warning else "Normal", outcome.reason,
                      new.get("message") or outcome.phase, action=outcome.phase)
    return new


def _reason(status: dict[str, Any]) -> str | None:
    """The reason of the last outcome written (kept in the conditions)."""
    phase = status.get("phase")
    for type_ in ("Progressing", "Succeeded", "Ready", "Failed", "Suspended"):
        condition = next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)
        if condition and condition.get("status") == "True":
            return condition.get("reason")
    return phase


def acknowledge_generation(kind: KindInfo, body: Any) -> Outcome | None:
    """A finished resource whose spec was edited: record the generation as observed (tools such as Argo CD wait
    for it) and say in the SpecApplied condition that the change is not applied. None: nothing to record."""
    status = body.get("status") or {}
    if status.get("observedGeneration") == body["metadata"].get("generation"):
        return None
    reason = _reason(status) or status.get("phase") or "Unknown"
    return Outcome(status.get("phase"), reason, status.get("message") or "", applied=(
        False, Reason.ResourceFinished, f"the {kind.kind} had finished ({status.get('phase')}) when its spec changed; "
        f"the change is not applied: create a new {kind.kind} to run with it"))
