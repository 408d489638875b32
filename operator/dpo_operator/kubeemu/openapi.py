"""The OpenAPI v2 and v3 documents of what the server serves: built-in kinds plus each CRD's openAPIV3Schema.

kubectl reads them for ``explain``, for client-side and field validation support (a PATCH operation that takes
``fieldValidation``), and for strategic merge and server-side apply field management.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from dpo_operator.kubeemu import builtin_schemas
from dpo_operator.kubeemu.registry import Served

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"
STATUS = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
PATCH = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
_TYPE_DESCRIPTIONS = {
    "apiVersion": "APIVersion defines the versioned schema of this representation of an object. Servers should "
                  "convert recognized schemas to the latest internal value, and may reject unrecognized values.",
    "kind": "Kind is a string value representing the REST resource this object represents. Servers may infer "
            "this from the endpoint the client submits requests to. Cannot be updated. In CamelCase.",
}
_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")


def _ref(prefix: str, name: str, description: str | None = None) -> dict[str, Any]:
    if description is None:
        return {"$ref": prefix + name}
    return {"allOf": [{"$ref": prefix + name}], "description": description}


def _reversed_group(group: str) -> str:
    return ".".join(reversed(group.split("."))) if group else "core"


def schema_names(res: Served) -> tuple[str, str]:
    """Definition names of the kind and of its list."""
    if not res.custom:
        name = builtin_schemas.definition_name(res.group, res.version, res.kind) or f"io.k8s.api.{res.kind}"
        return name, name + "List"
    base = f"{_reversed_group(res.group)}.{res.version}.{res.kind}"
    return base, base + "List"


def _custom_schemas(res: Served, prefix: str) -> dict[str, dict[str, Any]]:
    assert res.schema is not None
    name, list_name = schema_names(res)
    gvk = [{"group": res.group, "version": res.version, "kind": res.kind}]
    schema = copy.deepcopy(res.schema.open_api)
    schema.setdefault("type", "object")
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "description": _TYPE_DESCRIPTIONS["apiVersion"]}
    props["kind"] = {"type": "string", "description": _TYPE_DESCRIPTIONS["kind"]}
    props["metadata"] = _ref(prefix, OBJECT_META, "Standard object's metadata.")
    schema["x-kubernetes-group-version-kind"] = gvk
    listed = {"type": "object", "required": ["items"], "description": f"{res.kind}List is a list of {res.kind}",
              "properties": {"apiVersion": props["apiVersion"], "kind": props["kind"],
                             "items": {"type": "array", "items": {"$ref": prefix + name}},
                             "metadata": _ref(prefix, LIST_META, "Standard list metadata.")},
              "x-kubernetes-group-version-kind": [{**gvk[0], "kind": res.kind + "List"}]}
    return {name: schema, list_name: listed}


def _schemas(resources: Iterable[Served], prefix: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    wanted = [OBJECT_META, LIST_META, STATUS, PATCH]
    for res in resources:
        if res.custom:
            found.update(_custom_schemas(res, prefix))
        else:
            wanted += list(schema_names(res))
    found.update(builtin_schemas.closure(wanted, prefix))
    return found


def _param(name: str, where: str = "query", kind: str = "string", *, v3: bool) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": where, "uniqueItems": True}
    if where == "path":
        param["required"] = True
    if v3:
        param["schema"] = {"type": kind}
    else:
        param["type"] = kind
    return param


def _operation(res: Served, action: str, verb: str, ref: str, *, v3: bool, body: bool, params: Iterable[str],
               subresource: str = "") -> dict[str, Any]:
    op_id = f"{verb}{'Namespaced' if res.namespaced else ''}{res.kind}{subresource.title()}"
    op: dict[str, Any] = {
        "operationId": op_id, "description": f"{verb} {res.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": res.group, "version": res.version, "kind": res.kind},
        "parameters": [_param(p, kind="boolean" if p == "force" else "string", v3=v3) for p in params],
    }
    body_types = (["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json",
                   "application/apply-patch+yaml"] if action == "patch" else ["application/json"])
    if v3:
        op["responses"] = {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ref}}}}}
        if body:
            schema = {"$ref": ref if action != "patch" else ref.rsplit("/", 1)[0] + "/" + PATCH}
            op["requestBody"] = {"content": {t: {"schema": schema} for t in body_types}, "required": True}
    else:
        op["responses"] = {"200": {"description": "OK", "schema": {"$ref": ref}}}
        op["consumes"], op["produces"] = body_types, ["application/json", "application/yaml"]
        if body:
            op["parameters"].append({"name": "body", "in": "body", "required": True, "schema": {"$ref": ref}})
    return op


def _paths(res: Served, prefix: str, *, v3: bool) -> dict[str, dict[str, Any]]:
    name, list_name = schema_names(res)
    ref, list_ref = prefix + name, prefix + list_name
    root = f"/api/{res.version}" if not res.group else f"/apis/{res.group}/{res.version}"
    base = f"{root}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{root}/{res.plural}"
    scope = [_param("namespace", "path", v3=v3)] if res.namespaced else []
    named = [*scope, _param("name", "path", v3=v3)]

    def op(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return _operation(res, *args, v3=v3, **kwargs)

    paths = {
        base: {"parameters": scope,
               "get": op("list", "list", list_ref, body=False, params=("labelSelector", "fieldSelector", "watch")),
               "post": op("post", "create", ref, body=True, params=_WRITE_PARAMS),
               "delete": op("deletecollection", "deletecollection", prefix + STATUS, body=False, params=())},
        f"{base}/{{name}}": {"parameters": named,
                            "get": op("get", "read", ref, body=False, params=()),
                            "put": op("put", "replace", ref, body=True, params=_WRITE_PARAMS),
                            "patch": op("patch", "patch", ref, body=True, params=(*_WRITE_PARAMS, "force")),
                            "delete": op("delete", "delete", prefix + STATUS, body=False, params=_WRITE_PARAMS[:1])},
    }
    if res.status_subresource:
        paths[f"{base}/{{name}}/status"] = {
            "parameters": named, "get": op("get", "read", ref, body=False, params=(), subresource="status"),
            "put": op("put", "replace", ref, body=True, params=_WRITE_PARAMS, subresource="status"),
            "patch": op("patch", "patch", ref, body=True, params=(*_WRITE_PARAMS, "force"), subresource="status")}
    return paths


def v2(resources: Iterable[Served]) -> dict[str, Any]:
    served = list(resources)
    paths: dict[str, Any] = {}
    for res in served:
        paths.update(_paths(res, "#/definitions/", v3=False))
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": builtin_schemas.KUBERNETES_VERSION},
            "paths": paths, "definitions": _schemas(served, "#/definitions/")}


def v3_key(res: Served) -> str:
    return f"api/{res.version}" if not res.group else f"apis/{res.group}/{res.version}"


def v3(resources: Iterable[Served], key: str) -> dict[str, Any] | None:
    """The OpenAPI 3.0 document of one group-version (``api/v1``, ``apis/dpo.ai/v1alpha1``)."""
    served = [r for r in resources if v3_key(r) == key]
    if not served:
        return None
    paths: dict[str, Any] = {}
    for res in served:
        paths.update(_paths(res, "#/components/schemas/", v3=True))
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": builtin_schemas.KUBERNETES_VERSION},
            "paths": paths, "components": {"schemas": _schemas(served, "#/components/schemas/")}}


def digest(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()
