"""Kubernetes ``Status`` failures, shaped as kube-apiserver answers them (kubectl prints them from the details)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import kmock


class ApiError(kmock.KubernetesError):
    """A Kubernetes ``Status`` failure with a reason a client understands."""


def error(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> ApiError:
    return ApiError(status=code, reason=reason, message=message, details=details or {"causes": []})


@dataclass(frozen=True)
class Cause:
    """One field error, as in ``field.Error``: ``spec.x: Invalid value: 0: ...``."""

    field: str
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, FieldValueTooLong, ...
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def show_value(value: Any) -> str:
    """A value inside a field error, as Go's field errors print it."""
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def invalid_value(field: str, value: Any, detail: str) -> Cause:
    return Cause(field, "FieldValueInvalid", f"Invalid value: {show_value(value)}: {detail}")


def required(field: str) -> Cause:
    return Cause(field, "FieldValueRequired", "Required value")


def too_long(field: str, limit: int) -> Cause:
    return Cause(field, "FieldValueTooLong", f"Too long: may not be more than {limit} bytes")


def not_supported(field: str, value: Any, allowed: list[Any]) -> Cause:
    listed = ", ".join(json.dumps(a) for a in allowed)
    return Cause(field, "FieldValueNotSupported", f"Unsupported value: {show_value(value)}: supported values: {listed}")


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> ApiError:
    """422 Invalid: ``Kind.group "name" is invalid: [a: ..., b: ...]`` with the causes in the details."""
    qualified = f"{kind}.{group}" if group else kind
    listed = str(causes[0]) if len(causes) == 1 else "[" + ", ".join(str(c) for c in causes) + "]"
    details: dict[str, Any] = {"name": name, "kind": kind,
                               "causes": [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes]}
    if group:
        details["group"] = group
    return error(422, "Invalid", f'{qualified} "{name}" is invalid: {listed}', details)
