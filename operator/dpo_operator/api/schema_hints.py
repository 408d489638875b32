"""Annotations that shape the generated OpenAPI schema where Kubernetes needs its own extensions."""

from __future__ import annotations

from typing import Any

from pydantic import WithJsonSchema


def int_or_string() -> WithJsonSchema:
    """A value that is an integer or a string (resource quantities, ports by name)."""
    return WithJsonSchema({"x-kubernetes-int-or-string": True})


def preserve_unknown(schema_type: str = "object") -> WithJsonSchema:
    """A free-form subtree that the API server stores without pruning."""
    schema: dict[str, Any] = {"type": schema_type, "x-kubernetes-preserve-unknown-fields": True}
    return WithJsonSchema(schema)


def immutable(message: str) -> dict[str, Any]:
    """``json_schema_extra`` for a field that may not change after creation (a CEL transition rule)."""
    return {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": message}]}


def nested(model: type, **schema_extra: Any) -> Any:
    """A sub-object that defaults to its model's defaults; ``default: {}`` lets the API server fill them in."""
    from pydantic import Field

    return Field(default_factory=model, json_schema_extra={"default": {}, **schema_extra})


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def no_server_default() -> Any:
    """``json_schema_extra`` for a field the API server must not default: the stored object then says whether the
    user set it (a NAT workflow's config supplies what the CR leaves out); the model's default still applies."""
    return _drop_default
