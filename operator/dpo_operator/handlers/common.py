"""What every reconciler shares: spec parsing, and the line between transient and permanent failures.

- A spec that fails the pydantic model ends in phase Failed, reason ``InvalidSpec``, and is not retried.
- API 409/429/5xx, NeMo 408/429/5xx and network errors are transient: kopf retries them with exponential backoff.
- Other API errors (400/403/404/422) are permanent for the resource: phase Failed with the API's message
  (reason ``ApiError`` for Kubernetes, ``RemoteApiError`` for NeMo services).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import kopf
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from dpo_operator.api import KindInfo
from dpo_operator.api.common import Phase
from dpo_operator.kube import resources
from dpo_operator.kube.jobs import get_job
from dpo_operator.kube.locks import LOCKS
from dpo_operator.kube.objects import NameConflict
from dpo_operator.kube.pods import WorkloadNotAllowed
from dpo_operator.kube.redact import remote_body
from dpo_operator.kube.requeue import SCHEDULER
from dpo_operator.kube.secrets import SecretMissing
from dpo_operator.kube.status import Outcome, write_status
from dpo_operator.nemo.http import NemoError

log = logging.getLogger(__name__)
SpecT = TypeVar("SpecT", bound=BaseModel)

TRANSIENT_HTTP = {409, 429, 500, 502, 503, 504}
MAX_BACKOFF_SECONDS = 300.0
SECRET_RETRY_SECONDS = 60.0


class InvalidSpec(Exception):
    """The spec cannot be acted on; the message says what to fix."""


class PermanentFailure(Exception):
    """Something outside the spec failed for good (e.g. a referenced object is unusable)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def describe_validation_error(exc: ValidationError, root: str = "spec") -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in (root, *error["loc"]) if p != "")
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


def parse_spec(model: type[SpecT], body: Any) -> SpecT:
    try:
        return model.model_validate(dict(body.get("spec") or {}))
    except ValidationError as exc:
        raise InvalidSpec(describe_validation_error(exc)) from None


def backoff_delay(retry: int) -> float:
    return min(MAX_BACKOFF_SECONDS, 2.0 ** min(retry, 10))


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, NemoError):
        return exc.transient
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_HTTP or exc.status == 0
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message") or str(exc.reason)
    except (ValueError, AttributeError):
        return f"{exc.status} {exc.reason}"


def reconcile_guard(kind: KindInfo, body: Any, retry: int, action: Callable[[], None], done_condition: str = "Succeeded") -> None:
    """Run one reconcile; turn its failures into status and kopf's retry semantics."""
    try:
        action()
    except SecretMissing as exc:  # absent, or not opted in: wait for it (the message says what to do)
        write_status(kind, body, Outcome(Phase.PENDING.value, exc.reason, f"{exc}; {exc.hint}"), done_condition)
        raise kopf.TemporaryError(str(exc), delay=min(SECRET_RETRY_SECONDS, backoff_delay(retry))) from None
    except (NameConflict, WorkloadNotAllowed) as exc:
        fail(kind, body, exc.reason, str(exc), done_condition)
        raise kopf.PermanentError(str(exc)) from None
    except InvalidSpec as exc:
        fail(kind, body, "InvalidSpec", str(exc), done_condition)
        raise kopf.PermanentError(f"invalid spec: {exc}") from None
    except PermanentFailure as exc:
        fail(kind, body, exc.reason, str(exc), done_condition)
        raise kopf.PermanentError(str(exc)) from None
    except Exception as exc:
        if is_transient(exc):
            delay = backoff_delay(retry)
            detail = remote_body(str(exc))
            log.warning("transient failure reconciling %s/%s (retry %d in %.0fs): %s", kind.kind,
                        body["metadata"]["name"], retry, delay, detail)
            _report_retry(kind, body, retry, delay, detail, done_condition)
            raise kopf.TemporaryError(f"transient: {detail}", delay=delay) from None
        if isinstance(exc, NemoError):
            message = f"a NeMo service refused a request: {remote_body(str(exc))}"
            fail(kind, body, "RemoteApiError", message, done_condition)
            raise kopf.PermanentError(message) from None
        if isinstance(exc, ApiException):
            message = f"the Kubernetes API refused a request ({exc.status}): {api_message(exc)}"
            fail(kind, body, "ApiError", message, done_condition)
            raise kopf.PermanentError(message) from None
        raise


def fail(kind: KindInfo, body: Any, reason: str, message: str, done_condition: str) -> None:
    """Write a terminal Failed status under the resource's lock, on the condition that the object has not changed
    since ``body`` was read (a concurrent handler may have moved it on, e.g. submitted the remote job): if it has,
    decide again shortly on a fresh copy."""
    with LOCKS[body["metadata"]["uid"]]:
        try:
            write_status(kind, body, Outcome(Phase.FAILED.value, reason, message), done_condition)
        except ApiException as exc:
            if exc.status != 409:
                raise
            raise kopf.TemporaryError(f"{kind.kind} changed while failing it ({reason}); deciding again",
                                      delay=1.0) from None


def needs_retry_after_fix(body: Any) -> bool:
    """A spec fixed after an InvalidSpec failure gets another chance; other terminal states are final."""
    status = body.get("status") or {}
    failed = next((c for c in status.get("conditions") or [] if c.get("type") == "Failed"), {})
    return failed.get("status") == "True" and failed.get("reason") == "InvalidSpec" \
        and body["metadata"].get("generation") != status.get("observedGeneration")


def _report_retry(kind: KindInfo, body: Any, retry: int, delay: float, detail: str, done_condition: str) -> None:
    """Before anything runs (no phase yet, or Pending), say in status what keeps failing and how often; a resource
    that already runs keeps its phase (its own status tells its progress)."""
    status = body.get("status") or {}
    if status.get("phase") not in (None, Phase.PENDING.value):
        return
    message = f"attempt {retry + 1} failed, retrying in {delay:.0f}s: {detail}"
    try:
        write_status(kind, body, Outcome(Phase.PENDING.value, "Retrying", message), done_condition)
    except Exception as exc:  # the API itself may be what fails
        log.info("could not report the retry of %s/%s: %s", kind.kind, body["metadata"]["name"], exc)


NEXT_CHECKS: dict[str, Callable[[Any], float | None]] = {}
"""Each kind's ``next_check`` (when to look at an object again), registered by its handler module."""


def reconcile_quietly(kind: KindInfo, body: Any, reconcile: Callable[[dict[str, Any]], None],
                      done_condition: str = "Succeeded") -> None:
    """A reconcile triggered by an event on another object (kopf never retries event handlers): the guard reports
    failures in status as usual; after a transient one, the object is looked at again after the backoff."""
    try:
        reconcile_guard(kind, body, 0, lambda: reconcile(body), done_condition)
    except kopf.PermanentError as exc:
        log.info("%s %s/%s: %s", kind.kind, body["metadata"]["namespace"], body["metadata"]["name"], exc)
    except kopf.TemporaryError as exc:
        log.info("%s %s/%s: %s", kind.kind, body["metadata"]["namespace"], body["metadata"]["name"], exc)
        watch_over(kind, body, reconcile, NEXT_CHECKS.get(kind.kind, lambda _: None), done_condition,
                   delay=exc.delay if exc.delay is not None else 1.0)


def owner_of(kind: KindInfo, namespace: str, child: Any) -> dict[str, Any] | None:
    """The resource of ``kind`` that controls a child (Job, Deployment), if it still exists: found through the
    child's controller owner reference (the label only selects which children to watch; its value may be a
    shortened name, and anyone can set it)."""
    ref = next((r for r in child["metadata"].get("ownerReferences") or []
                if r.get("controller") and r.get("kind") == kind.kind), None)
    if ref is None:
        return None
    owner = resources.read(kind, namespace, ref["name"])
    return owner if owner is not None and owner["metadata"].get("uid") == ref.get("uid") else None


def reconcile_pod_owner(kind: KindInfo, pod: Any, namespace: str, event_type: str | None,
                        reconcile: Callable[[dict[str, Any]], None], done_condition: str = "Succeeded") -> None:
    """A pod of one of our Jobs changed: reconcile the resource that controls the Job."""
    if event_type == "DELETED":
        return
    ref = next((r for r in pod["metadata"].get("ownerReferences") or []
                if r.get("controller") and r.get("kind") == "Job"), None)
    job = get_job(namespace, ref["name"]) if ref else None
    if job is not None and job["metadata"].get("uid") == ref.get("uid"):
        reconcile_owner(kind, job, namespace, event_type, reconcile, done_condition)


def reconcile_owner(kind: KindInfo, child: Any, namespace: str, event_type: str | None,
                    reconcile: Callable[[dict[str, Any]], None], done_condition: str = "Succeeded") -> None:
    """A child (Job, Deployment) changed: reconcile the resource it belongs to, if that still exists."""
    if event_type == "DELETED":
        return
    owner = owner_of(kind, namespace, child)
    if owner is not None:
        reconcile_quietly(kind, owner, reconcile, done_condition)


# --------------------------------------------------------------------------- requeue-after

_failures: dict[tuple[str, str], int] = {}


def watch_over(kind: KindInfo, body: Any, reconcile: Callable[[dict[str, Any]], None],
               next_delay: Callable[[Any], float | None], done_condition: str = "Succeeded",
               delay: float | None = None) -> None:
    """Look at the object again when ``next_delay`` (given its latest copy) expects a change; None: nothing to
    expect (it finished). Replaces per-object timers, which tick forever and need a finalizer on every object."""
    meta = body["metadata"]
    if delay is None:
        delay = next_delay(body)
    if delay is None:
        return
    SCHEDULER.after((kind.kind, meta["uid"]), delay, lambda: _look_again(
        kind, meta["namespace"], meta["name"], meta["uid"], reconcile, next_delay, done_condition))


def _look_again(kind: KindInfo, namespace: str, name: str, uid: str, reconcile: Callable[[dict[str, Any]], None],
                next_delay: Callable[[Any], float | None], done_condition: str) -> None:
    key = (kind.kind, uid)
    fresh = resources.read(kind, namespace, name)
    if fresh is None or fresh["metadata"].get("uid") != uid or fresh["metadata"].get("deletionTimestamp"):
        _failures.pop(key, None)
        return
    retry = _failures.get(key, 0)
    try:
        reconcile_guard(kind, fresh, retry, lambda: reconcile(fresh), done_condition)
    except kopf.TemporaryError as exc:
        _failures[key] = retry + 1
        watch_over(kind, fresh, reconcile, next_delay, done_condition,
                   delay=exc.delay if exc.delay is not None else backoff_delay(retry))
        return
    except kopf.PermanentError:
        _failures.pop(key, None)
        return
    _failures.pop(key, None)
    latest = resources.read(kind, namespace, name)
    if latest is not None and latest["metadata"].get("uid") == uid:
        watch_over(kind, latest, reconcile, next_delay, done_condition)
