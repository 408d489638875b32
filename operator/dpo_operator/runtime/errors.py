"""How a reconcile's failure ends: the line between transient and permanent failures, in one place.

- A spec that fails the pydantic model (or a kind's own checks) ends in phase Failed, reason ``InvalidSpec``.
- API 409/429/5xx, NeMo 408/409/425/429/5xx, network errors and timeouts are transient: retried with backoff.
- Other API errors (400/403/404/422) are permanent for the resource: phase Failed with the API's message
  (reason ``ApiError`` for Kubernetes, ``RemoteApiError`` for NeMo services).
- Anything else is a defect or a remote answer we could not read: retried with backoff (logged with its
  traceback), never dropped.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import httpx
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from dpo_operator.kube.redact import remote_body
from dpo_operator.nemo.http import NemoError

SpecT = TypeVar("SpecT", bound=BaseModel)

TRANSIENT_HTTP = {409, 429, 500, 502, 503, 504}


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


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, NemoError):
        return exc.transient
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_HTTP or exc.status == 0
    return isinstance(exc, (urllib3.exceptions.HTTPError, httpx.TransportError, ConnectionError, TimeoutError))


def describe_failure(exc: BaseException) -> str:
    """A failure for logs and status: a Kubernetes API error as status, reason and the API's message (its ``str``
    lists every HTTP response header), anything else as its text with remote bodies shortened."""
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}: {api_message(exc)}"
    return remote_body(str(exc))


def api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message") or str(exc.reason)
    except (ValueError, AttributeError):
        return f"{exc.status} {exc.reason}"
