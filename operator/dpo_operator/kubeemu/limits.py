"""Size and encoding limits kube-apiserver (and etcd behind it) enforce on every object.

- a request body that is not valid JSON for Go's decoder (``NaN``, ``Infinity``) is a 400 BadRequest;
- a request body over 3 MiB is a 413 (``Request entity too large: limit is 3145728``);
- ``metadata.annotations`` may hold 256 KiB in all (keys and values): 422 Invalid, as apimachinery's
  ``ValidateAnnotationsSize``;
- an object etcd would store over 1.5 MiB (its default ``--max-request-bytes``) is a 413 ``etcdserver: request
  is too large`` (kube-apiserver maps etcd's error to 413 since 1.11).
"""

from __future__ import annotations

import json
from typing import Any

from dpo_operator.kubeemu.errors import ApiError, Cause, error, invalid

MAX_REQUEST_BYTES = 3 * 1024 * 1024
MAX_OBJECT_BYTES = 1536 * 1024
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def loads(text: str | bytes) -> Any:
    """JSON as Go's encoding/json reads it: ``NaN``/``Infinity`` are not JSON (ValueError)."""
    return json.loads(text, parse_constant=_no_constant)


def request_too_large() -> ApiError:
    return error(413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_REQUEST_BYTES}")


def check_request(body: bytes) -> None:
    if len(body) > MAX_REQUEST_BYTES:
        raise request_too_large()


def annotation_causes(obj: dict[str, Any]) -> list[Cause]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    total = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in annotations.items())
    if total <= TOTAL_ANNOTATION_SIZE_LIMIT:
        return []
    return [Cause("metadata.annotations", "FieldValueTooLong",
                  f"Too long: may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes")]


def check_annotations(kind: str, group: str, obj: dict[str, Any]) -> None:
    if causes := annotation_causes(obj):
        raise invalid(kind, group, (obj.get("metadata") or {}).get("name", ""), causes)


def check_stored_size(obj: dict[str, Any]) -> None:
    """What etcd refuses to store (the JSON size stands in for the protobuf one: a little stricter)."""
    if len(json.dumps(obj, separators=(",", ":")).encode()) > MAX_OBJECT_BYTES:
        raise error(413, "RequestEntityTooLarge", "etcdserver: request is too large")


__all__ = ["ApiError", "annotation_causes", "check_annotations", "check_request", "request_too_large", "check_stored_size", "loads"]
