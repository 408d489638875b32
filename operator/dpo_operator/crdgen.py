"""Generate the CustomResourceDefinitions from the pydantic API models (the single source of truth).

pydantic emits JSON Schema (2020-12) with ``$ref``s; a CRD needs a *structural* OpenAPI v3.0 schema:
every node typed, no references, ``nullable`` instead of ``null`` types, boolean ``exclusiveMinimum``,
and no ``additionalProperties: false`` (the API server prunes unknown fields instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dpo_operator.api import ALL_KINDS, GROUP, VERSION, KindInfo

_DROPPED_KEYS = {"title", "$defs"}
_KEPT_KEYS = {
    "type", "format", "description", "default", "enum", "pattern", "minLength", "maxLength",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems",
    "properties", "required", "items", "additionalProperties",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "x-kubernetes-validations",
    "x-kubernetes-list-type", "x-kubernetes-map-type",
}


class SchemaConversionError(ValueError):
    """The model uses a construct that has no structural-schema equivalent."""


VALIDATIONS = "x-kubernetes-validations"


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            rules = [*target.get(VALIDATIONS, []), *node.get(VALIDATIONS, [])]  # the model's and the field's
            if rules:
                merged[VALIDATIONS] = rules
            return _resolve(merged, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _collapse_optional(node: dict[str, Any], path: str) -> dict[str, Any]:
    """``anyOf: [X, {type: null}]`` (an Optional field) becomes X with the outer annotations."""
    variants = node.get("anyOf")
    if variants is None:
        return node
    non_null = [v for v in variants if v.get("type") != "null"]
    if len(non_null) != 1:
        raise SchemaConversionError(f"{path}: unions of several types are not structural: {variants}")
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    return {**non_null[0], **outer}


def to_structural(node: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Convert one pydantic JSON-schema node (refs already resolved) into a structural OpenAPI node."""
    node = _collapse_optional(node, path)
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
    unknown = set(node) - _KEPT_KEYS - _DROPPED_KEYS
    if unknown:
        raise SchemaConversionError(f"{path}: unsupported schema keywords {sorted(unknown)}")

    out: dict[str, Any] = {}
    for key in ("type", "format", "description", "enum", "pattern", "minLength", "maxLength",
                "minimum", "maximum", "minItems", "maxItems"):
        if key in node:
            out[key] = node[key]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:  # JSON Schema 2020 number -> OpenAPI 3.0 boolean flag
            out[plain] = node[bound]
            out[bound] = True
    if node.get("default") is not None:
        out["default"] = node["default"]

    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["x-kubernetes-int-or-string"] = True
    if node.get("x-kubernetes-preserve-unknown-fields"):
        out["type"] = node.get("type", "object")
        out["x-kubernetes-preserve-unknown-fields"] = True

    if "properties" in node:
        out["type"] = "object"
        out["properties"] = {name: to_structural(child, f"{path}.{name}") for name, child in node["properties"].items()}
        if node.get("required"):
            out["required"] = list(node["required"])
    elif isinstance(node.get("additionalProperties"), dict):
        out["type"] = "object"
        out["additionalProperties"] = to_structural(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        out["items"] = to_structural(node["items"], f"{path}[]")
    for key in ("x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-map-type"):
        if key in node:
            out[key] = node[key]

    if "type" not in out and not out.get("x-kubernetes-int-or-string"):
        raise SchemaConversionError(f"{path}: every node of a structural schema needs a type ({node})")
    return out


def model_schema(model: Any) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return to_structural(_resolve(raw, raw.get("$defs", {})), model.__name__)


def crd_for(kind: KindInfo) -> dict[str, Any]:
    spec_schema = model_schema(kind.spec_model)
    status_schema = model_schema(kind.status_model)
    open_api = {
        "type": "object",
        "description": (kind.spec_model.__doc__ or kind.kind).strip().splitlines()[0],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "required": ["spec"],
    }
    # AGE ends the default view and the wide columns follow it, as in kubectl's tables of built-in kinds
    columns = [c.to_crd() for c in kind.printer_columns if not c.priority]
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    columns += [c.to_crd() for c in kind.printer_columns if c.priority]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/name": "dpo-operator", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(kind.categories),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": open_api},
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd_for(kind) for kind in ALL_KINDS]


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `dpo-operator crds` from the pydantic models in operator/dpo_operator/api. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=120)


def crd_filename(crd: dict[str, Any]) -> str:
    return f"{crd['metadata']['name']}.yaml"


def write_crds(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for crd in all_crds():
        path = directory / crd_filename(crd)
        path.write_text(render(crd))
        written.append(path)
    return written
