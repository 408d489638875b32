"""The OpenAPI definitions of the built-in kinds, from the Kubernetes schemas that ``kubernetes-validate`` ships.

kubernetes-validate carries the definitions of each Kubernetes release as JSON Schema (``"type": ["string",
"null"]``, ``$defs``); this turns them back into the OpenAPI form kube-apiserver serves, keeping the
``x-kubernetes-*`` extensions that strategic merge patch and server-side apply read (patch strategy, merge key,
list type and keys).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

KUBERNETES_VERSION = "v1.32.0"  # the release whose schemas are served; /version says the same
_FORMATS = {"io.k8s.apimachinery.pkg.util.intstr.IntOrString": "int-or-string"}


def _to_openapi(node: Any, ref_prefix: str) -> Any:
    if isinstance(node, list):
        return [_to_openapi(item, ref_prefix) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            out["type"] = kinds[0] if len(kinds) == 1 else kinds
        elif key == "$ref" and isinstance(value, str):
            out["$ref"] = ref_prefix + value.rsplit("/", 1)[-1]
        elif key == "oneOf" and all(isinstance(o, dict) and "type" in o for o in value):
            out["type"] = "string"  # int-or-string and Quantity: strings on the wire, numbers accepted
        else:
            out[key] = _to_openapi(value, ref_prefix)
    return out


@cache
def _raw_definitions() -> dict[str, Any]:
    path = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"{KUBERNETES_VERSION}-local" / "_definitions.json"
    definitions: dict[str, Any] = json.loads(path.read_text())["$defs"]
    return definitions


@cache
def definitions(ref_prefix: str) -> dict[str, dict[str, Any]]:
    """Every definition, ``$ref`` pointing at ``ref_prefix`` (``#/definitions/`` or ``#/components/schemas/``)."""
    out = {}
    for name, schema in _raw_definitions().items():
        converted = _to_openapi(schema, ref_prefix)
        if name in _FORMATS:
            converted["format"] = _FORMATS[name]
        for field in ("apiVersion", "kind"):  # the JSON Schema adds enums of the one right value; the API has none
            prop = (converted.get("properties") or {}).get(field)
            if prop is not None:
                prop.pop("enum", None)
        out[name] = converted
    return out


@cache
def _by_gvk() -> dict[tuple[str, str, str], str]:
    found: dict[tuple[str, str, str], str] = {}
    for name, schema in _raw_definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            found.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return found


def definition_name(group: str, version: str, kind: str) -> str | None:
    return _by_gvk().get((group, version, kind))


def closure(names: list[str], ref_prefix: str) -> dict[str, dict[str, Any]]:
    """The named definitions and every definition they reference, transitively."""
    defs = definitions(ref_prefix)
    found: dict[str, dict[str, Any]] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in found or name not in defs:
            continue
        found[name] = defs[name]
        pending += _refs(defs[name], ref_prefix)
    return found


def _refs(node: Any, ref_prefix: str) -> list[str]:
    if isinstance(node, list):
        return [r for item in node for r in _refs(item, ref_prefix)]
    if not isinstance(node, dict):
        return []
    found = [node["$ref"][len(ref_prefix):]] if isinstance(node.get("$ref"), str) else []
    return found + [r for key, value in node.items() if key != "$ref" for r in _refs(value, ref_prefix)]


def resolved(schema: dict[str, Any] | None) -> dict[str, Any]:
    """A schema node with its ``$ref`` followed (definitions in ``#/definitions/`` form)."""
    if not schema:
        return {}
    while "$ref" in schema:
        schema = definitions("#/definitions/").get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema


def kind_schema(group: str, version: str, kind: str) -> dict[str, Any] | None:
    name = definition_name(group, version, kind)
    return copy.deepcopy(definitions("#/definitions/")[name]) if name else None
