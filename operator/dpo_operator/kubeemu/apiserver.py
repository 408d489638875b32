"""An in-process Kubernetes API server: kmock's KubernetesEmulator plus the semantics a real operator needs.

kmock serves discovery and stores objects; this subclass adds what kopf and the kubernetes client rely on
(see ``shared/reference/kmock-harness.md``): uid/resourceVersion/generation/creationTimestamp, namespaces from
the URL, 201 on create, 409 on conflicts, JSON-patch (422 on a failed ``test``), merge patches, PUT, the status
subresource kept apart from the main resource, label/field selectors, lists with a real resourceVersion,
watches that honour ``?resourceVersion=`` (410 when too old) and ``timeoutSeconds``, finalizers, garbage
collection through ownerReferences, and CRDs that become served resources with schema validation.

Not emulated: controllers (no Job ever creates a Pod), RBAC, admission webhooks, server-side apply.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import json
import secrets
import uuid
from collections.abc import Iterable
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import apps, parsing, rendering

from dpo_operator.kubeemu.schema_validation import InvalidObject, ResourceSchema
from dpo_operator.kubeemu.selectors import field_selector, label_selector

CRD_RESOURCE = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACES = kmock.resource("", "v1", "namespaces")

# (group, version, plural, kind, namespaced, has status subresource)
BUILTIN_RESOURCES: tuple[tuple[str, str, str, str, bool, bool], ...] = (
    ("", "v1", "namespaces", "Namespace", False, True),
    ("", "v1", "events", "Event", True, False),
    ("", "v1", "pods", "Pod", True, True),
    ("", "v1", "services", "Service", True, True),
    ("", "v1", "configmaps", "ConfigMap", True, False),
    ("", "v1", "secrets", "Secret", True, False),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, True),
    ("", "v1", "serviceaccounts", "ServiceAccount", True, False),
    ("events.k8s.io", "v1", "events", "Event", True, False),
    ("batch", "v1", "jobs", "Job", True, True),
    ("apps", "v1", "deployments", "Deployment", True, True),
    ("coordination.k8s.io", "v1", "leases", "Lease", True, False),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, True),
)

ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
EVENT_HISTORY = 20000  # watch events kept per resource; older resourceVersions answer 410 Gone


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock's URL parser, plus the ``namespaces`` resource itself (``/api/v1/namespaces[/name[/status]]``),
    which kmock reads as a namespace prefix of some other resource."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "api" and parts[2] == "namespaces" and len(parts) <= 5:
        if len(parts) <= 4 or parts[4] in ("status", "finalize"):
            return parsing.ParsedPath(group="", version=parts[1], plural="namespaces",
                                      name=parts[3] if len(parts) > 3 else None,
                                      subresource=parts[4] if len(parts) > 4 else None)
    return _kmock_parse_path(path)


_kmock_parse_path = parsing.parse_path
parsing.parse_path = _parse_path


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also used for strategic-merge and apply patches: lists are replaced)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything that bumps ``metadata.generation`` when it changes."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


@attrs.define
class _Served:
    """One resource the server serves."""

    kind: str
    namespaced: bool
    status_subresource: bool
    schema: ResourceSchema | None = None


class ApiError(kmock.KubernetesError):
    """A Kubernetes ``Status`` failure with a reason a client understands."""


def _error(code: int, reason: str, message: str) -> ApiError:
    return ApiError(status=code, reason=reason, message=message, details={"causes": []})


@attrs.define(kw_only=True)
class EmulatedKubernetes(kmock.KubernetesEmulator):
    """A KubernetesEmulator that behaves enough like kube-apiserver for kopf and the kubernetes client."""

    _served: dict[Any, _Served] = attrs.field(factory=dict, init=False)
    _revision: int = attrs.field(default=0, init=False)
    _events: dict[Any, collections.deque[tuple[int, dict[str, Any]]]] = attrs.field(
        factory=lambda: collections.defaultdict(lambda: collections.deque(maxlen=EVENT_HISTORY)), init=False
    )
    _changed: asyncio.Condition | None = attrs.field(default=None, init=False)
    _closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for group, version, plural, kind, namespaced, status in BUILTIN_RESOURCES:
            self.serve(kmock.resource(group, version, plural), kind, namespaced=namespaced, status_subresource=status)
        self._store(NAMESPACES, None, "default", self._new_metadata({"metadata": {"name": "default"}}, None))

    # ---------------------------------------------------------------- resource registry

    def serve(self, res: Any, kind: str, *, namespaced: bool, status_subresource: bool,
              schema: dict[str, Any] | None = None, short_names: Iterable[str] = (),
              categories: Iterable[str] = ()) -> None:
        self._served[res] = _Served(kind, namespaced, status_subresource, ResourceSchema(schema) if schema else None)
        self.resources[res] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, verbs=ALL_VERBS, shortnames=set(short_names),
            categories=set(categories), subresources={"status"} if status_subresource else set(),
        )

    def _serve_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            self.serve(
                kmock.resource(spec["group"], version["name"], spec["names"]["plural"]),
                spec["names"]["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                status_subresource="status" in (version.get("subresources") or {}),
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                short_names=spec["names"].get("shortNames", ()),
                categories=spec["names"].get("categories", ()),
            )

    # ---------------------------------------------------------------- storage and events

    def _current(self, res: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (res, namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def _store(self, res: Any, namespace: str | None, name: str, obj: dict[str, Any]) -> None:
        key = (res, namespace, name)
        if key in self._objects:
            self._objects[key].create(obj)
        else:
            self._objects[key] = obj

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    async def _emit(self, res: Any, event_type: str, obj: dict[str, Any]) -> None:
        revision = int(obj["metadata"]["resourceVersion"])
        self._events[res].append((revision, {"type": event_type, "object": copy.deepcopy(obj)}))
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            self._changed.notify_all()

    def _new_metadata(self, body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if namespace is not None:
            meta["namespace"] = namespace
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        meta["resourceVersion"] = self._next_revision()
        meta.pop("deletionTimestamp", None)
        return obj

    # ---------------------------------------------------------------- request dispatch

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        if res is None or res.plural is None or res not in self._served:
            if res is not None and res.plural is not None and request.action is not None:
                raise _error(404, "NotFound", f"the server could not find the requested resource ({res.plural})")
            return await apps.RawHandler._handle(self, request)  # discovery and user-defined reactions
        served = self._served[res]
        namespace = request.namespace if served.namespaced else None
        method = request.method.value.upper() if hasattr(request.method, "value") else str(request.method).upper()
        if request.subresource and request.subresource != "status":
            raise _error(404, "NotFound", f"subresource {request.subresource!r} is not served")
        if request.subresource == "status" and not served.status_subresource:
            raise _error(404, "NotFound", f"{res.plural} has no status subresource")

        if method == "GET" and request.params.get("watch") in ("true", "1"):
            return await self._watch(request, res, namespace)
        if method == "GET" and request.name is None:
            return aiohttp.web.json_response(self._list(request, res, served, namespace))
        if method == "GET":
            return aiohttp.web.json_response(self._get(res, served, namespace, request.name))
        if method == "POST" and request.name is None:
            return aiohttp.web.json_response(await self._create(request, res, served, namespace), status=201)
        if method in ("PATCH", "PUT") and request.name is not None:
            obj = await self._update(request, res, served, namespace, request.name, replace=method == "PUT")
            return aiohttp.web.json_response(obj)
        if method == "DELETE" and request.name is not None:
            return aiohttp.web.json_response(await self._delete(res, served, namespace, request.name))
        if method == "DELETE":
            items = self._list(request, res, served, namespace)["items"]
            for item in items:
                await self._delete(res, served, item["metadata"].get("namespace"), item["metadata"]["name"])
            return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        raise _error(405, "MethodNotAllowed", f"{method} is not supported on this URL")

    # ---------------------------------------------------------------- verbs

    def _get(self, res: Any, served: _Served, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._current(res, namespace, name)
        if obj is None:
            raise _error(404, "NotFound", f'{res.plural} "{name}" not found')
        return obj

    def _matching(self, request: rendering.Request, res: Any, namespace: str | None) -> list[dict[str, Any]]:
        by_labels = label_selector(request.params.get("labelSelector"))
        by_fields = field_selector(request.params.get("fieldSelector"))
        found = []
        for (obj_res, obj_ns, _), stored in self._objects.items():
            if obj_res != res or stored.deleted or (namespace is not None and obj_ns != namespace):
                continue
            obj = stored.raw
            if by_labels(obj) and by_fields(obj):
                found.append(obj)
        return found

    def _list(self, request: rendering.Request, res: Any, served: _Served, namespace: str | None) -> dict[str, Any]:
        return {
            "apiVersion": f"{res.group}/{res.version}".lstrip("/"),
            "kind": f"{served.kind}List",
            "metadata": {"resourceVersion": str(self._revision)},
            "items": self._matching(request, res, namespace),
        }

    def _admit(self, res: Any, served: _Served, obj: dict[str, Any], old: dict[str, Any] | None,
               request: rendering.Request) -> dict[str, Any]:
        if served.schema is None:
            return obj
        strict = request.params.get("fieldValidation") == "Strict"
        try:
            return served.schema.admit(obj, old, strict=strict)
        except InvalidObject as exc:
            name = (obj.get("metadata") or {}).get("name", "")
            raise _error(422, "Invalid", f'{served.kind}.{res.group} "{name}" is invalid: {exc}') from None

    async def _create(self, request: rendering.Request, res: Any, served: _Served,
                      namespace: str | None) -> dict[str, Any]:
        body = request.data
        if not isinstance(body, dict):
            raise _error(400, "BadRequest", "the request body is not a JSON object")
        body_ns = (body.get("metadata") or {}).get("namespace")
        if served.namespaced and body_ns and namespace and body_ns != namespace:
            raise _error(400, "BadRequest", "the namespace of the object does not match the namespace of the URL")
        if served.namespaced and namespace is None:
            raise _error(405, "MethodNotAllowed", "a namespaced object must be created in a namespace URL")
        meta = body.get("metadata") or {}
        if not meta.get("name") and not meta.get("generateName"):
            raise _error(422, "Invalid", "metadata.name or metadata.generateName is required")
        if meta.get("name") and self._current(res, namespace, meta["name"]) is not None:
            raise _error(409, "AlreadyExists", f'{res.plural} "{meta["name"]}" already exists')
        obj = self._new_metadata(body, namespace)
        name = obj["metadata"]["name"]
        if served.status_subresource and res != CRD_RESOURCE:
            obj.pop("status", None)
        obj = self._admit(res, served, obj, None, request)
        if res == CRD_RESOURCE:
            self._serve_crd(obj)
            obj["status"] = {"conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                                             "lastTransitionTime": _now(), "message": ""}],
                             "acceptedNames": obj["spec"]["names"]}
        self._store(res, namespace, name, obj)
        await self._emit(res, "ADDED", obj)
        return obj

    async def _update(self, request: rendering.Request, res: Any, served: _Served, namespace: str | None,
                      name: str, *, replace: bool) -> dict[str, Any]:
        old = self._get(res, served, namespace, name)
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if replace:
            patched = copy.deepcopy(request.data)
            wanted_rv = (patched.get("metadata") or {}).get("resourceVersion")
        elif content_type == "application/json-patch+json":
            try:
                patched = jsonpatch.apply_patch(copy.deepcopy(old), request.data)
            except jsonpatch.JsonPatchTestFailed as exc:
                raise _error(422, "Invalid", f"the JSON patch test failed: {exc}") from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise _error(422, "Invalid", f"the JSON patch could not be applied: {exc}") from None
            wanted_rv = None
        else:  # merge, strategic merge and apply patches are all applied as JSON merge patches
            if not isinstance(request.data, dict):
                raise _error(400, "BadRequest", f"a {content_type or 'merge'} patch must be a JSON object")
            patched = _merge_patch(old, request.data)
            wanted_rv = (request.data.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise _error(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} "{name}": '
                                          "the object has been modified; please apply your changes to the latest version")
        new = self._combine(served, old, patched, status_only=request.subresource == "status")
        if new == old:
            return old
        if request.subresource != "status":
            new = self._admit(res, served, new, old, request)
        if _spec_part(new) != _spec_part(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        new["metadata"]["resourceVersion"] = self._next_revision()
        if res == CRD_RESOURCE:
            self._serve_crd(new)
        self._store(res, namespace, name, new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return await self._remove(res, served, namespace, name, new)
        await self._emit(res, "MODIFIED", new)
        return new

    @staticmethod
    def _combine(served: _Served, old: dict[str, Any], patched: dict[str, Any], *, status_only: bool) -> dict[str, Any]:
        """Keep what a client may not change: identity metadata; status (or everything else) by subresource."""
        if status_only:
            new = copy.deepcopy(old)
            if "status" in patched:
                new["status"] = patched["status"]
            else:
                new.pop("status", None)
            return new
        new = copy.deepcopy(patched)
        meta = new.setdefault("metadata", {})
        for key in ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp", "resourceVersion"):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        if served.status_subresource:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        return new

    async def _delete(self, res: Any, served: _Served, namespace: str | None, name: str) -> dict[str, Any]:
        obj = copy.deepcopy(self._get(res, served, namespace, name))
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["resourceVersion"] = self._next_revision()
                self._store(res, namespace, name, obj)
                await self._emit(res, "MODIFIED", obj)
            return obj
        return await self._remove(res, served, namespace, name, obj)

    async def _remove(self, res: Any, served: _Served, namespace: str | None, name: str,
                      obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_revision()
        self._objects[(res, namespace, name)].delete()
        await self._emit(res, "DELETED", obj)
        if res == CRD_RESOURCE:
            for version in obj["spec"]["versions"]:
                gone = kmock.resource(obj["spec"]["group"], version["name"], obj["spec"]["names"]["plural"])
                self._served.pop(gone, None)
        await self._collect_garbage(obj["metadata"]["uid"])
        return obj

    async def _collect_garbage(self, owner_uid: str) -> None:
        """Background-propagation garbage collection: delete every object the removed one owned."""
        dependents = [
            (key, stored.raw) for key, stored in list(self._objects.items())
            if not stored.deleted
            and any(ref.get("uid") == owner_uid for ref in stored.raw.get("metadata", {}).get("ownerReferences") or [])
        ]
        for (res, namespace, name), _ in dependents:
            if res in self._served and self._current(res, namespace, name) is not None:
                await self._delete(res, self._served[res], namespace, name)

    # ---------------------------------------------------------------- watch

    async def _watch(self, request: rendering.Request, res: Any, namespace: str | None) -> aiohttp.web.StreamResponse:
        raw_request = request._raw_request
        assert raw_request is not None
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(raw_request)
        by_labels = label_selector(request.params.get("labelSelector"))
        by_fields = field_selector(request.params.get("fieldSelector"))
        name = request.name or None

        def wanted(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            return ((namespace is None or meta.get("namespace") == namespace)
                    and (name is None or meta.get("name") == name) and by_labels(obj) and by_fields(obj))

        async def send(event: dict[str, Any]) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        since = request.params.get("resourceVersion") or "0"
        position = self._revision
        if since == "0":
            for obj in self._matching(request, res, namespace):
                if wanted(obj):
                    await send({"type": "ADDED", "object": obj})
        else:
            position = int(since)
            history = self._events[res]
            oldest_kept = history[0][0] if len(history) == history.maxlen else 0
            if position < oldest_kept - 1:
                await send({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired",
                    "message": f"too old resource version: {position} ({oldest_kept})"}})
                return response

        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        deadline = asyncio.get_running_loop().time() + timeout if timeout else None
        if self._changed is None:
            self._changed = asyncio.Condition()
        try:
            while not self._closing:
                for revision, event in list(self._events[res]):
                    if revision > position:
                        position = revision
                        if wanted(event["object"]):
                            await send(event)
                remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if remaining is not None and remaining <= 0:
                    break
                async with self._changed:
                    try:
                        await asyncio.wait_for(self._changed.wait(), timeout=min(remaining or 1.0, 1.0))
                    except TimeoutError:
                        pass
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        return response

    async def __aexit__(self, *exc: Any) -> None:
        self._closing = True
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()
        await super().__aexit__(*exc)
