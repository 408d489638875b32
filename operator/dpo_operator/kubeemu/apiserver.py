"""An in-process Kubernetes API server: kmock's KubernetesEmulator plus what kube-apiserver does for its clients.

kmock parses URLs and serves HTTP; this subclass adds what kopf, the kubernetes client and kubectl rely on (see
``shared/reference/kmock-harness.md``): uid/resourceVersion/generation/creationTimestamp, namespaces from the URL,
201 on create, 409 on conflicts, JSON/merge/strategic-merge patches, server-side apply with managed fields, PUT,
the status subresource kept apart from the main resource, label selectors and field selectors checked per kind,
lists with a real resourceVersion and ``limit``/``continue``, watches that honour ``?resourceVersion=`` (410 when
too old) and ``timeoutSeconds``, finalizers, namespace and ownerReference garbage collection (orphan, background
and foreground), CRDs that become served resources with schema validation and defaulting, defaulting and
validation of built-in kinds, the scale and pods/log subresources, discovery (legacy and aggregated), OpenAPI
v2/v3, Table responses and the protobuf bodies kubectl sends for built-in kinds.

Not emulated: controllers (no Job ever creates a Pod), RBAC enforcement (RBAC objects are stored and served;
access reviews answer as a server without an authorizer), admission webhooks (a test may register functions that
play a mutating one: :mod:`dpo_operator.kubeemu.admission`).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import json
import logging
import secrets
import uuid
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import parsing, rendering

from dpo_operator.kubeemu import (
    admission,
    builtin_schemas,
    defaults,
    discovery,
    events,
    openapi,
    openapi_proto,
    limits,
    pagination,
    protobuf,
    rbac,
    reviews,
    subresources,
    tables,
)
from dpo_operator.kubeemu.errors import ApiError, error, invalid, invalid_value, not_supported, required
from dpo_operator.kubeemu.names import object_causes
from dpo_operator.kubeemu.patching import ApplyConflict, record_update, server_side_apply, strategic_merge
from dpo_operator.kubeemu.registry import Served, builtin_resources, from_crd
from dpo_operator.kubeemu.schema_validation import InvalidObject, UnknownFields
from dpo_operator.kubeemu.selectors import UnsupportedField, field_selector, label_selector, selectable_fields

__all__ = ["ApiError", "EmulatedKubernetes"]
log = logging.getLogger(__name__)

CRD_RESOURCE = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACES = kmock.resource("", "v1", "namespaces")
EVENT_HISTORY = 20000  # watch events kept per resource; older resourceVersions answer 410 Gone
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json",
               "application/apply-patch+yaml")


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


async def _parse_request(raw_request: aiohttp.web.BaseRequest) -> rendering.Request:
    raw_request._client_max_size = limits.MAX_REQUEST_BYTES  # aiohttp's 1 MiB default: kube-apiserver's 3 MiB
    try:
        body = await raw_request.read()
    except aiohttp.web.HTTPRequestEntityTooLarge:
        raise limits.request_too_large() from None
    text = body.decode("utf-8", errors="replace")
    data = None
    if body.lstrip()[:1] in (b"{", b"["):
        try:
            data = limits.loads(body)
        except ValueError:
            data = None
    k8s = parsing.parse_path(raw_request.path)
    resource = None if k8s is None or k8s.group is None else kmock.resource(k8s.group, k8s.version, k8s.plural)
    return rendering.Request(
        raw_request=raw_request, url=raw_request.url, method=raw_request.method, params=dict(raw_request.query),
        headers=dict(raw_request.headers), cookies=dict(raw_request.cookies), data=data, body=body, text=text,
        action=parsing.guess_k8s(k8s, kmock.method(raw_request.method), dict(raw_request.query)), resource=resource,
        namespace=k8s.namespace, name=k8s.name, subresource=k8s.subresource)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
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


def _resolve(schema: dict[str, Any] | None) -> dict[str, Any]:
    return builtin_schemas.resolved(schema)


def _fields_of(request: rendering.Request, served: Served) -> Any:
    """The request's field selector as a predicate; 400 for a field the kind cannot be selected by."""
    fields = selectable_fields(served.group, served.kind, namespaced=served.namespaced, custom_fields=served.selectable)
    try:
        return field_selector(request.params.get("fieldSelector"), fields)
    except UnsupportedField as exc:
        raise error(400, "BadRequest", str(exc)) from None


def _field_manager(request: rendering.Request) -> str:
    """The ``fieldManager`` parameter, or like kube-apiserver the client's user agent up to the first '/'."""
    return request.params.get("fieldManager") or (request.headers.get("User-Agent") or "unknown").split("/")[0]


def _key(res: Any) -> tuple[str | None, str | None, str | None]:
    """A resource's identity as a plain tuple (group, version, plural)."""
    return res.group, res.version, res.plural


def _json(payload: Any, status: int = 200, content_type: str = "application/json",
          warning: str | None = None) -> aiohttp.web.Response:
    headers = {"Content-Type": content_type}
    if warning:
        headers["Warning"] = f'299 - "{warning}"'
    return aiohttp.web.Response(body=json.dumps(payload).encode(), status=status, headers=headers)


JOB_ORPHAN_WARNING = ("child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to "
                      "remove them or set propagationPolicy=Orphan to suppress this warning")


def _propagation(request: rendering.Request, served: Served, body: Any) -> tuple[str, str | None]:
    """The DeleteOptions' propagation policy (body or query), and the warning kube-apiserver gives with it.

    Without one, batch/v1 Jobs orphan their pods (the Job strategy's DefaultGarbageCollectionPolicy, kept for
    compatibility, with a warning); every other kind deletes its dependents in the background."""
    options = body if isinstance(body, dict) else {}
    policy = options.get("propagationPolicy") or request.params.get("propagationPolicy")
    orphan = options.get("orphanDependents", request.params.get("orphanDependents"))
    if policy is None and orphan is not None:
        policy = "Orphan" if orphan in (True, "true") else "Background"
    if policy not in (None, "Orphan", "Background", "Foreground"):
        raise invalid("DeleteOptions", "meta.k8s.io", "", [
            not_supported("propagationPolicy", policy, ["Foreground", "Background", "Orphan"])])
    if policy is None and (served.group, served.kind) == ("batch", "Job"):
        return "Orphan", JOB_ORPHAN_WARNING
    return policy or "Background", None


class Changes:
    """Wakes every waiting watch when an event is stored.

    One future per round, resolved and replaced on each change; a watch waits on it with ``asyncio.wait``, which
    leaves the future alone when the wait times out or the watch is cancelled. No lock: the ``asyncio.Condition``
    this replaces was waited on through ``asyncio.wait_for``, which runs ``Condition.wait`` (and its re-acquiring
    of the lock) in a task of its own; a watch ended while that task still re-acquired released a lock it no longer
    held (``RuntimeError: Lock is not acquired``) or left it held for good, and then every writer blocked in
    ``notify_all``."""

    def __init__(self) -> None:
        self._next: asyncio.Future[None] | None = None

    def notify(self) -> None:
        if self._next is not None and not self._next.done():
            self._next.set_result(None)
        self._next = None

    async def wait(self, timeout: float) -> None:
        """Until the next change, or ``timeout`` seconds."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        await asyncio.wait([self._next], timeout=timeout)


def events_after(history: collections.deque[tuple[int, dict[str, Any]]], position: int
                 ) -> list[tuple[int, dict[str, Any]]]:
    """The stored events newer than ``position``, oldest first. Read from the newest end, so that a watch costs
    what it is sent, not the length of the history (20,000 events, read on every wake of every watch before)."""
    newer: list[tuple[int, dict[str, Any]]] = []
    for revision, event in reversed(history):
        if revision <= position:
            break
        newer.append((revision, event))
    newer.reverse()
    return newer


@attrs.define(kw_only=True)
class EmulatedKubernetes(kmock.KubernetesEmulator):
    """A KubernetesEmulator that behaves like kube-apiserver for kopf, the kubernetes client and kubectl."""

    _served: dict[Any, Served] = attrs.field(factory=dict, init=False)
    _revision: int = attrs.field(default=0, init=False)
    _events: dict[Any, collections.deque[tuple[int, dict[str, Any]]]] = attrs.field(
        factory=lambda: collections.defaultdict(lambda: collections.deque(maxlen=EVENT_HISTORY)), init=False
    )
    _dropped: dict[Any, int] = attrs.field(factory=dict, init=False)  # newest revision evicted from each history
    _changes: Changes = attrs.field(factory=Changes, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _openapi_cache: dict[str, Any] = attrs.field(factory=dict, init=False)
    log_root: Path | None = None  # <namespace>/<pod>/output.log: the pod logs the local executor writes
    _foreground: set[str] = attrs.field(factory=set, init=False)  # uids of owners held by foregroundDeletion
    # the stored objects of each resource (group, version, plural) by (namespace, name): a list reads its own
    # resource's objects, not every object of every kind (each Object keeps its versions, deletions included)
    _by_resource: dict[tuple[str | None, str | None, str | None], dict[tuple[str | None, str], Any]] = attrs.field(
        factory=lambda: collections.defaultdict(dict), init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for served in builtin_resources():
            self.serve(served)
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            obj = self._new_metadata({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                                      "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}, None)
            obj["metadata"].pop("generation")
            obj["metadata"]["labels"] = {"kubernetes.io/metadata.name": name}
            self._store(NAMESPACES, None, name, obj)

    # ---------------------------------------------------------------- resource registry

    def serve(self, served: Served) -> None:
        res = kmock.resource(served.group, served.version, served.plural)
        self._served[res] = served
        self._openapi_cache.clear()

    def _serve_crd(self, crd: dict[str, Any]) -> None:
        self._unserve_crd(crd)
        for served in from_crd(crd):
            self.serve(served)

    def _unserve_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        for res in [r for r, s in self._served.items() if s.group == spec["group"] and s.plural == spec["names"]["plural"]]:
            self._served.pop(res, None)
        self._openapi_cache.clear()

    def _schema(self, served: Served) -> dict[str, Any]:
        """The kind's OpenAPI schema (refs in ``#/definitions/`` form) for patches and managed fields."""
        if served.schema is not None:
            return served.schema.open_api
        return builtin_schemas.kind_schema(served.group, served.version, served.kind) or {}

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
            self._by_resource[_key(res)][(namespace, name)] = self._objects[key]

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    async def _emit(self, res: Any, event_type: str, obj: dict[str, Any]) -> None:
        revision = int(obj["metadata"]["resourceVersion"])
        history = self._events[res]
        if len(history) == history.maxlen:
            self._dropped[res] = history[0][0]
        history.append((revision, {"type": event_type, "object": copy.deepcopy(obj)}))
        self._changes.notify()

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

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock's entry point, minus its request history (a long-running server would keep every request) and
        with binary bodies (protobuf) left undecoded instead of failing as text."""
        try:
            request = await _parse_request(raw_request)
            try:
                return await self._handle(request)
            except rendering.StreamingError as exc:
                raise exc.__cause__ or exc from None
        except ApiError as exc:
            return await self._render_error(exc)
        except Exception as exc:  # noqa: BLE001  (a bug here: answer 500 as kube-apiserver would, and log it)
            if not self._closing:  # at shutdown, open watches end with whatever cancellation leaves behind
                log.exception("the emulated API server failed on %s %s", raw_request.method, raw_request.path_qs)
            return await self._render_error(exc)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path.rstrip("/") or "/"
        method = request.method.value.upper() if hasattr(request.method, "value") else str(request.method).upper()
        if method == "GET" and (response := self._serve_meta(request, path)) is not None:
            return response
        res = request.resource
        if res is None or res.plural is None or res not in self._served:
            raise error(404, "NotFound", "the server could not find the requested resource")
        served = self._served[res]
        namespace = request.namespace if served.namespaced else None
        if request.subresource in ("scale", "log", *subresources.STREAMED) and request.name is not None:
            return await self._subresource(request, method, res, served, namespace, request.name)
        if request.subresource and request.subresource != "status":
            raise error(404, "NotFound", "the server could not find the requested resource")
        if request.subresource == "status" and not served.status_subresource:
            raise error(404, "NotFound", "the server could not find the requested resource")
        if served.group == reviews.GROUP:  # create-only, answered without an authorizer, never stored
            return _json(reviews.answer(method, served.kind, namespace, self._body(request)), status=201)
        table = tables.wants_table(request.headers.get("Accept") or "")

        if method == "GET" and request.params.get("watch") in ("true", "1"):
            return await self._watch(request, res, served, namespace, table)
        if method == "GET" and request.name is None:
            listed = self._list(request, res, served, namespace)
            if table:
                printed = self._table(request, served, listed["items"], table, listed["metadata"]["resourceVersion"])
                printed["metadata"].update({k: v for k, v in listed["metadata"].items() if k != "resourceVersion"})
                return _json(printed)
            return _json(listed)
        if method == "GET" and request.name is not None:
            obj = self._get(res, served, namespace, request.name)
            return _json(self._table(request, served, [obj], table) if table else obj)
        if method == "POST" and request.name is None:
            return _json(await self._create(request, res, served, namespace, self._body(request)), status=201)
        if method in ("PATCH", "PUT") and request.name is not None:
            obj, created = await self._update(request, res, served, namespace, request.name, replace=method == "PUT")
            return _json(obj, status=201 if created else 200)
        if method == "DELETE":
            policy, warning = _propagation(request, served, request.data)
            if request.name is not None:
                return _json(await self._delete(res, served, namespace, request.name, policy), warning=warning)
            items = self._list(request, res, served, namespace)["items"]
            for item in items:
                await self._delete(res, served, item["metadata"].get("namespace"), item["metadata"]["name"], policy)
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}, warning=warning)
        raise error(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    async def _subresource(self, request: rendering.Request, method: str, res: Any, served: Served,
                           namespace: str | None, name: str) -> aiohttp.web.StreamResponse:
        """``scale`` on Deployments/StatefulSets/ReplicaSets, ``log`` on pods, a plain refusal for streaming."""
        pod = (served.group, served.kind) == ("", "Pod")
        if request.subresource == "scale" and served.scale and method == "GET":
            return _json(subresources.scale_of(self._get(res, served, namespace, name)))
        if request.subresource == "scale" and served.scale and method in ("PUT", "PATCH"):
            return _json(await self._scale(request, method, res, served, namespace, name))
        if request.subresource == "log" and pod and method == "GET":
            return await self._pod_log(request, res, served, namespace, name)
        if request.subresource in subresources.STREAMED and (pod or served.kind in ("Service", "Node")):
            raise subresources.refuse_streaming(request.subresource, self._get(res, served, namespace, name),
                                                self.log_root)
        raise error(404, "NotFound", "the server could not find the requested resource")

    async def _scale(self, request: rendering.Request, method: str, res: Any, served: Served, namespace: str | None,
                     name: str) -> dict[str, Any]:
        """A write to the scale subresource: the workload's ``spec.replicas``, nothing else."""
        old = self._get(res, served, namespace, name)
        current = subresources.scale_of(old)
        body = self._body(request)
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if method == "PUT":
            wanted = body if isinstance(body, dict) else {}
        elif content_type == "application/json-patch+json" and isinstance(body, list):
            try:
                wanted = jsonpatch.apply_patch(current, body)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise error(422, "Invalid", f"the JSON patch could not be applied: {exc}") from None
        else:
            wanted = _merge_patch(current, body)
        replicas = (wanted.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid("Scale", "autoscaling", name, [invalid_value("spec.replicas", replicas,
                                                                       "must be greater than or equal to 0")])
        wanted_rv = (wanted.get("metadata") or {}).get("resourceVersion")
        if method == "PUT" and wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise error(409, "Conflict", f'Operation cannot be fulfilled on {res.plural}.{served.group} "{name}": the '
                                         "object has been modified; please apply your changes to the latest version")
        new = copy.deepcopy(old)
        new.setdefault("spec", {})["replicas"] = replicas
        new = self._admit(res, served, new, old, request)
        record_update(old, new, self._schema(served), _resolve, _field_manager(request), served.group_version, "scale")
        return subresources.scale_of(await self._commit(request, res, served, namespace, name, old, new))

    async def _pod_log(self, request: rendering.Request, res: Any, served: Served, namespace: str | None,
                       name: str) -> aiohttp.web.StreamResponse:
        """``pods/<name>/log``: the output the local executor recorded; ``follow`` streams it until the pod ends."""
        pod = self._get(res, served, namespace, name)
        data, position = subresources.pod_log(self.log_root, pod, request.params)
        if request.params.get("follow") not in ("true", "1"):
            return aiohttp.web.Response(body=data, headers={"Content-Type": "text/plain"})
        raw_request = request._raw_request
        assert raw_request is not None and self.log_root is not None and namespace is not None
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        path = self.log_root / namespace / name / "output.log"
        try:
            await response.prepare(raw_request)
            await response.write(data)
            while not self._closing:
                current = self._current(res, namespace, name)
                with path.open("rb") as handle:
                    handle.seek(position)
                    fresh = handle.read()
                if fresh:
                    position += len(fresh)
                    await response.write(fresh)
                elif current is None or (current.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    break
                else:
                    await asyncio.sleep(0.2)  # a file has no change notification here; poll it as kubelet's tail does
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        return response

    def _serve_meta(self, request: rendering.Request, path: str) -> aiohttp.web.Response | None:
        """Discovery, OpenAPI and /version: the paths that are not resources."""
        served = list(self._served.values())
        accept = request.headers.get("Accept") or ""
        parts = path.strip("/").split("/")
        if path == "/version":
            return _json({"major": "1", "minor": "32", "gitVersion": builtin_schemas.KUBERNETES_VERSION + "-dpo-emulated",
                          "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "",
                          "compiler": "python", "platform": "linux/amd64"})
        if path in ("/api", "/apis") and (version := discovery.wants_aggregated(accept)):
            return _json(discovery.aggregated(served, legacy=path == "/api", version=version),
                         content_type=discovery.AGGREGATED.format(version=version))
        if path == "/api":
            return _json(discovery.api_versions())
        if path == "/apis":
            return _json(discovery.api_group_list(served))
        if parts[0] == "api" and len(parts) == 2:
            doc = discovery.api_resource_list(served, "", parts[1])
        elif parts[0] == "apis" and len(parts) == 2:
            doc = discovery.api_group(served, parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            doc = discovery.api_resource_list(served, parts[1], parts[2])
        elif path == "/openapi/v2":
            doc = self._openapi("v2", lambda: openapi.v2(served))
            if "protobuf" in accept and "json" not in accept:
                encoded = self._openapi("v2.pb", lambda: openapi_proto.document(doc))
                return aiohttp.web.Response(body=encoded, headers={"Content-Type": openapi_proto.MEDIA_TYPE})
        elif path == "/openapi/v3":
            keys = sorted({openapi.v3_key(s) for s in served})
            doc = {"paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash="
                                   + openapi.digest(self._openapi(key, lambda k=key: openapi.v3(served, k)))}
                             for key in keys}}
        elif path.startswith("/openapi/v3/"):
            key = path[len("/openapi/v3/"):]
            doc = self._openapi(key, lambda: openapi.v3(served, key))
        elif path == "/":
            return _json({"paths": sorted({"/api", "/api/v1", "/apis", "/openapi/v2", "/openapi/v3", "/version"}
                                          | {f"/apis/{s.group}" for s in served if s.group}
                                          | {f"/apis/{s.group}/{s.version}" for s in served if s.group})})
        else:
            return None
        if doc is None:
            raise error(404, "NotFound", "the server could not find the requested resource")
        return _json(doc)

    def _openapi(self, key: str, build: Any) -> Any:
        if key not in self._openapi_cache:
            self._openapi_cache[key] = build()
        return self._openapi_cache[key]

    def _body(self, request: rendering.Request) -> Any:
        """The request body as JSON, whatever the client wrote it in (JSON, YAML for apply, kubectl's protobuf)."""
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type == "application/vnd.kubernetes.protobuf":
            try:
                return protobuf.decode(request.body)
            except protobuf.Undecodable as exc:
                raise error(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {exc}") from None
        if content_type.endswith("yaml"):
            try:
                return yaml.safe_load(request.text)
            except yaml.YAMLError as exc:
                raise error(400, "BadRequest", f"error decoding YAML: {exc}") from None
        limits.check_request(request.body)
        if request.data is not None or not request.body:
            return request.data
        try:
            return limits.loads(request.text)
        except ValueError as exc:
            raise error(400, "BadRequest", f"the request body could not be decoded: {exc}") from None

    def _table(self, request: rendering.Request, served: Served, objects: list[dict[str, Any]], version: str,
               resource_version: str | None = None) -> dict[str, Any]:
        include = request.params.get("includeObject") or "Metadata"
        return tables.table(served, objects, include_object=include, version=version, resource_version=resource_version)

    # ---------------------------------------------------------------- verbs

    def _get(self, res: Any, served: Served, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._current(res, namespace, name)
        twin = events.other(res)
        if obj is None and twin is not None and (written := self._current(twin, namespace, name)) is not None:
            obj = events.convert(written, res)
        if obj is None:
            qualified = f"{res.plural}.{served.group}" if served.group else res.plural
            raise error(404, "NotFound", f'{qualified} "{name}" not found',
                        {"name": name, "group": served.group, "kind": res.plural})
        return obj

    def _matching(self, request: rendering.Request, res: Any, namespace: str | None) -> list[dict[str, Any]]:
        by_labels = label_selector(request.params.get("labelSelector"))
        by_fields = _fields_of(request, self._served[res])
        found = []
        twin = events.other(res)  # Events written through the other group-version are listed here too
        # read from the resource's own index (:attr:`_by_resource`), keyed by plain tuples: kmock's resource ==
        # checks a runtime Protocol, and a scan of every stored object made each list cost what the whole store
        # holds (every Event, Job and collection for a list of DPOEvaluations)
        own = _key(res)
        for obj_key in (own, _key(twin)) if twin is not None else (own,):
            for (obj_ns, _), stored in self._by_resource.get(obj_key, {}).items():
                if (namespace is not None and obj_ns != namespace) or stored.deleted:
                    continue
                obj = stored.raw if obj_key == own else events.convert(stored.raw, res)
                if by_labels(obj) and by_fields(obj):
                    found.append(obj)
        return found

    def _list(self, request: rendering.Request, res: Any, served: Served, namespace: str | None) -> dict[str, Any]:
        filtered = bool(request.params.get("labelSelector") or request.params.get("fieldSelector"))
        items, meta = pagination.page(self._matching(request, res, namespace), request.params, str(self._revision),
                                      filtered=filtered)
        return {"apiVersion": served.group_version, "kind": f"{served.kind}List", "metadata": meta, "items": items}

    def _admit(self, res: Any, served: Served, obj: dict[str, Any], old: dict[str, Any] | None,
               request: rendering.Request) -> dict[str, Any]:
        """Validation (and, for custom resources, defaulting and pruning) before anything is stored."""
        name = (obj.get("metadata") or {}).get("name", "")
        defaults.apply(served, obj, creating=old is None)
        causes = object_causes(served.kind, obj) if res != CRD_RESOURCE else []
        if old is not None:
            causes = [c for c in causes if c.field != "metadata.name"]  # the name cannot change anyway
        if served.group == rbac.GROUP:  # stored and served, not enforced
            rbac.default(obj)
            causes += rbac.causes(served.kind, obj, old)
        causes += limits.annotation_causes(obj)
        if causes:
            raise invalid(served.kind, served.group, name, causes)
        if served.schema is None:
            return obj
        strict = request.params.get("fieldValidation") == "Strict"
        try:
            return served.schema.admit(obj, old, strict=strict)
        except UnknownFields as exc:
            raise error(400, "BadRequest", f'{served.kind} in version "{served.version}" cannot be handled as a '
                                           f"{served.kind}: {exc}") from None
        except InvalidObject as exc:
            raise invalid(served.kind, served.group, name, exc.causes) from None

    def _check_namespace(self, namespace: str | None) -> None:
        if namespace is None:
            return
        ns = self._current(NAMESPACES, None, namespace)
        if ns is None:
            raise error(404, "NotFound", f'namespaces "{namespace}" not found',
                        {"name": namespace, "kind": "namespaces"})
        if ns["metadata"].get("deletionTimestamp"):
            raise error(403, "Forbidden", f"unable to create new content in namespace {namespace} because it is "
                                          "being terminated", {"name": namespace, "kind": "namespaces"})

    async def _create(self, request: rendering.Request, res: Any, served: Served, namespace: str | None,
                      body: Any, *, manager_operation: str = "Update") -> dict[str, Any]:
        if not isinstance(body, dict):
            raise error(400, "BadRequest", "the request body is not a JSON object")
        body_ns = (body.get("metadata") or {}).get("namespace")
        if served.namespaced and body_ns and namespace and body_ns != namespace:
            raise error(400, "BadRequest", "the namespace of the provided object does not match the namespace sent "
                                           "on the request")
        if served.namespaced and namespace is None:
            raise error(405, "MethodNotAllowed", "a namespaced object must be created in a namespace URL")
        meta = body.get("metadata") or {}
        if not meta.get("name") and not meta.get("generateName"):
            raise invalid(served.kind, served.group, "", [required("metadata.name")])
        if meta.get("name") and self._current(res, namespace, meta["name"]) is not None:
            qualified = f"{res.plural}.{served.group}" if served.group else res.plural
            raise error(409, "AlreadyExists", f'{qualified} "{meta["name"]}" already exists',
                        {"name": meta["name"], "group": served.group, "kind": res.plural})
        self._check_namespace(namespace)
        obj = self._new_metadata(body, namespace)
        if not defaults.has_generation(served):
            obj["metadata"].pop("generation")
        obj.setdefault("apiVersion", served.group_version)
        obj.setdefault("kind", served.kind)
        name = obj["metadata"]["name"]
        if served.status_subresource and res != CRD_RESOURCE:
            obj.pop("status", None)
        if res == NAMESPACES:
            obj["spec"] = {"finalizers": ["kubernetes"], **(obj.get("spec") or {})}
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        if served.kind == "Service" and not served.group:
            self._allocate_cluster_ip(obj)
        admission.mutate(served.group, served.kind, obj)  # emulated mutating webhooks (tests register them)
        obj = self._admit(res, served, obj, None, request)
        if manager_operation == "Update":
            record_update(None, obj, self._schema(served), _resolve, _field_manager(request), served.group_version)
        limits.check_stored_size(obj)
        if request.params.get("dryRun"):
            return obj
        if res == CRD_RESOURCE:
            self._serve_crd(obj)
            obj["status"] = {"conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": _now(),
                 "message": "no conflicts found"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "lastTransitionTime": _now(), "message": "the initial names have been accepted"}],
                "acceptedNames": obj["spec"]["names"], "storedVersions": [
                    v["name"] for v in obj["spec"]["versions"] if v.get("storage")]}
        self._store(res, namespace, name, obj)
        await self._emit(res, "ADDED", obj)
        return obj

    def _allocate_cluster_ip(self, service: dict[str, Any]) -> None:
        """What the Service registry does on create: defaults, and a cluster IP from the service range."""
        spec = service.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            taken = {s.raw.get("spec", {}).get("clusterIP") for (r, _, _), s in self._objects.items()
                     if r.plural == "services" and not s.deleted}
            index = next(i for i in range(1, 65535) if f"10.96.{i // 256}.{i % 256}" not in taken)
            spec["clusterIP"] = f"10.96.{index // 256}.{index % 256}"
        if spec.get("clusterIP"):
            spec.setdefault("clusterIPs", [spec["clusterIP"]])

    def _patched(self, request: rendering.Request, served: Served, old: dict[str, Any], body: Any,
                 content_type: str) -> tuple[dict[str, Any], str | None]:
        """The object a PATCH asks for, and the resourceVersion it was made against (if it says)."""
        if content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise error(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
            try:
                return jsonpatch.apply_patch(copy.deepcopy(old), body), None
            except jsonpatch.JsonPatchTestFailed as exc:
                raise error(422, "Invalid", f"the server rejected our request due to an error in our request: {exc}") from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise error(422, "Invalid", f"the JSON patch could not be applied: {exc}") from None
        if not isinstance(body, dict):
            raise error(400, "BadRequest", f"a {content_type} patch must be a JSON object")
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if content_type == "application/strategic-merge-patch+json":
            if served.custom:
                raise error(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted "
                            "media types include: application/json-patch+json, application/merge-patch+json, "
                            "application/apply-patch+yaml")
            return strategic_merge(old, body, self._schema(served), _resolve), wanted_rv
        if content_type in ("application/merge-patch+json", ""):
            return _merge_patch(old, body), wanted_rv
        raise error(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media "
                    "types include: " + ", ".join(PATCH_TYPES))

    async def _update(self, request: rendering.Request, res: Any, served: Served, namespace: str | None,
                      name: str, *, replace: bool) -> tuple[dict[str, Any], bool]:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        body = self._body(request)
        status_only = request.subresource == "status"
        if content_type == "application/apply-patch+yaml" and not replace:
            return await self._apply(request, res, served, namespace, name, body)
        old = self._get(res, served, namespace, name)
        if replace:
            if not isinstance(body, dict):
                raise error(400, "BadRequest", "the request body is not a JSON object")
            patched, wanted_rv = copy.deepcopy(body), (body.get("metadata") or {}).get("resourceVersion")
        else:
            patched, wanted_rv = self._patched(request, served, old, body, content_type)
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            qualified = f"{res.plural}.{served.group}" if served.group else res.plural
            raise error(409, "Conflict", f'Operation cannot be fulfilled on {qualified} "{name}": '
                                         "the object has been modified; please apply your changes to the latest version")
        new = self._combine(served, old, patched, status_only=status_only)
        if not status_only:
            new = self._admit(res, served, new, old, request)
        record_update(old, new, self._schema(served), _resolve, _field_manager(request), served.group_version,
                      request.subresource or "")
        return await self._commit(request, res, served, namespace, name, old, new), False

    async def _apply(self, request: rendering.Request, res: Any, served: Served, namespace: str | None, name: str,
                     body: Any) -> tuple[dict[str, Any], bool]:
        """Server-side apply (``application/apply-patch+yaml``): create or merge with field ownership."""
        if not request.params.get("fieldManager"):
            raise invalid("PatchOptions", "meta.k8s.io", "", [required("fieldManager")])
        if not isinstance(body, dict):
            raise error(400, "BadRequest", "the applied configuration is not an object")
        meta = body.get("metadata") or {}
        if meta.get("name", name) != name:
            raise error(400, "BadRequest", "the name of the object does not match the name on the URL")
        old = self._current(res, namespace, name)
        status_only = request.subresource == "status"
        force = request.params.get("force") in ("true", "1")
        try:
            applied = server_side_apply(old, body, self._schema(served), _resolve, request.params["fieldManager"],
                                        served.group_version, force=force, subresource=request.subresource or "")
        except ApplyConflict as exc:
            raise error(409, "Conflict", str(exc), {"name": name, "group": served.group, "kind": res.plural,
                                                    "causes": [{"reason": "FieldManagerConflict", "message":
                                                                f'conflict with "{m}"', "field": f}
                                                               for m, f in exc.conflicts]}) from None
        if old is None:
            applied.setdefault("metadata", {})["name"] = name
            return await self._create(request, res, served, namespace, applied, manager_operation="Apply"), True
        new = self._combine(served, old, applied, status_only=status_only)
        new["metadata"]["managedFields"] = applied["metadata"]["managedFields"]
        if not status_only:
            new = self._admit(res, served, new, old, request)
        return await self._commit(request, res, served, namespace, name, old, new), False

    async def _commit(self, request: rendering.Request, res: Any, served: Served, namespace: str | None, name: str,
                      old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        if new == old or request.params.get("dryRun"):
            return new
        limits.check_stored_size(new)
        if "generation" in old["metadata"] and _spec_part(new) != _spec_part(old):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        new["metadata"]["resourceVersion"] = self._next_revision()
        if res == CRD_RESOURCE:
            self._serve_crd(new)
        self._store(res, namespace, name, new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return await self._remove(res, served, namespace, name, new)
        await self._emit(res, "MODIFIED", new)
        return new

    @staticmethod
    def _combine(served: Served, old: dict[str, Any], patched: dict[str, Any], *, status_only: bool) -> dict[str, Any]:
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
        for key in ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp", "resourceVersion",
                    "managedFields"):
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

    async def _delete(self, res: Any, served: Served, namespace: str | None, name: str,
                      policy: str = "Background") -> dict[str, Any]:
        """Delete with the garbage collector's propagation: Orphan strips the owner's ownerReferences from its
        dependents first; Foreground holds the owner (``foregroundDeletion`` finalizer) until its dependents are
        gone; Background removes the owner, then its dependents."""
        obj = copy.deepcopy(self._get(res, served, namespace, name))
        if res == NAMESPACES:
            return await self._delete_namespace(obj)
        uid = obj["metadata"]["uid"]
        if policy == "Orphan":
            await self._orphan(uid)
        elif policy == "Foreground" and self._dependents(uid):
            finalizers = obj["metadata"].get("finalizers") or []
            if "foregroundDeletion" not in finalizers:
                obj["metadata"]["finalizers"] = [*finalizers, "foregroundDeletion"]
            self._foreground.add(uid)
            obj["metadata"].setdefault("deletionTimestamp", _now())
            obj["metadata"]["resourceVersion"] = self._next_revision()
            self._store(res, namespace, name, obj)
            await self._emit(res, "MODIFIED", obj)
            for (dep_res, dep_ns, dep_name), _ in self._dependents(uid):
                if self._current(dep_res, dep_ns, dep_name) is not None:
                    await self._delete(dep_res, self._served[dep_res], dep_ns, dep_name, "Foreground")
            return self._current(res, namespace, name) or obj
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["resourceVersion"] = self._next_revision()
                self._store(res, namespace, name, obj)
                await self._emit(res, "MODIFIED", obj)
            return obj
        return await self._remove(res, served, namespace, name, obj)

    async def _delete_namespace(self, ns: dict[str, Any]) -> dict[str, Any]:
        """What the namespace controller does: Terminating, delete every object in it, then remove it."""
        name = ns["metadata"]["name"]
        if not ns["metadata"].get("deletionTimestamp"):
            ns["metadata"]["deletionTimestamp"] = _now()
            ns["status"] = {"phase": "Terminating"}
            ns["metadata"]["resourceVersion"] = self._next_revision()
            self._store(NAMESPACES, None, name, ns)
            await self._emit(NAMESPACES, "MODIFIED", ns)
        for (res, obj_ns, obj_name), stored in list(self._objects.items()):
            if obj_ns == name and not stored.deleted and res in self._served \
                    and not stored.raw["metadata"].get("deletionTimestamp"):
                await self._delete(res, self._served[res], obj_ns, obj_name)
        return await self._finish_namespace(name) or ns

    async def _finish_namespace(self, name: str) -> dict[str, Any] | None:
        ns = self._current(NAMESPACES, None, name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return None
        if any(obj_ns == name and not stored.deleted for (_, obj_ns, _), stored in self._objects.items()):
            return None
        return await self._remove(NAMESPACES, self._served[NAMESPACES], None, name, ns)

    async def _remove(self, res: Any, served: Served, namespace: str | None, name: str,
                      obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_revision()
        self._objects[(res, namespace, name)].delete()
        await self._emit(res, "DELETED", obj)
        if res == CRD_RESOURCE:
            self._unserve_crd(obj)
        await self._collect_garbage(obj["metadata"]["uid"])
        await self._release_foreground(obj)
        if namespace is not None:
            await self._finish_namespace(namespace)
        return obj

    def _dependents(self, owner_uid: str) -> list[tuple[Any, dict[str, Any]]]:
        """The served objects with an ownerReference to ``owner_uid``."""
        return [(key, stored.raw) for key, stored in list(self._objects.items())
                if not stored.deleted and key[0] in self._served
                and any(ref.get("uid") == owner_uid for ref in stored.raw.get("metadata", {}).get("ownerReferences") or [])]

    async def _collect_garbage(self, owner_uid: str) -> None:
        """Background-propagation garbage collection: delete every object the removed one owned."""
        for (res, namespace, name), _ in self._dependents(owner_uid):
            if self._current(res, namespace, name) is not None:
                await self._delete(res, self._served[res], namespace, name)

    async def _orphan(self, owner_uid: str) -> None:
        """Orphan propagation: the garbage collector removes the owner's references from its dependents."""
        for (res, namespace, name), raw in self._dependents(owner_uid):
            dependent = copy.deepcopy(raw)
            refs = [r for r in dependent["metadata"]["ownerReferences"] if r.get("uid") != owner_uid]
            if refs:
                dependent["metadata"]["ownerReferences"] = refs
            else:
                dependent["metadata"].pop("ownerReferences")
            dependent["metadata"]["resourceVersion"] = self._next_revision()
            self._store(res, namespace, name, dependent)
            await self._emit(res, "MODIFIED", dependent)

    async def _release_foreground(self, removed: dict[str, Any]) -> None:
        """When a dependent goes, an owner deleted in the foreground that has no dependents left goes too."""
        for ref in removed["metadata"].get("ownerReferences") or []:
            if ref.get("uid") not in self._foreground or self._dependents(ref.get("uid", "")):
                continue
            self._foreground.discard(ref.get("uid"))
            for (res, namespace, name), stored in list(self._objects.items()):
                meta = stored.raw.get("metadata", {}) if not stored.deleted else {}
                if meta.get("uid") == ref.get("uid") and "foregroundDeletion" in (meta.get("finalizers") or []):
                    owner = copy.deepcopy(stored.raw)
                    owner["metadata"]["finalizers"] = [f for f in meta["finalizers"] if f != "foregroundDeletion"]
                    if not owner["metadata"]["finalizers"]:
                        owner["metadata"].pop("finalizers")
                        await self._remove(res, self._served[res], namespace, name, owner)
                    else:
                        owner["metadata"]["resourceVersion"] = self._next_revision()
                        self._store(res, namespace, name, owner)
                        await self._emit(res, "MODIFIED", owner)

    # ---------------------------------------------------------------- watch

    async def _watch(self, request: rendering.Request, res: Any, served: Served, namespace: str | None,
                     table: str | None) -> aiohttp.web.StreamResponse:
        raw_request = request._raw_request
        assert raw_request is not None
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        by_labels = label_selector(request.params.get("labelSelector"))
        by_fields = _fields_of(request, served)
        name = request.name or None

        def wanted(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            return ((namespace is None or meta.get("namespace") == namespace)
                    and (name is None or meta.get("name") == name) and by_labels(obj) and by_fields(obj))

        async def send(event: dict[str, Any]) -> None:
            if table and event.get("type") != "ERROR":
                event = {"type": event["type"], "object": self._table(request, served, [event["object"]], table)}
            await response.write(json.dumps(event).encode() + b"\n")

        def expired(position: int) -> dict[str, Any] | None:
            """410 Gone when events after ``position`` were already evicted from the history, as kube-apiserver
            answers a watch that fell too far behind."""
            if position >= self._dropped.get(res, 0):
                return None
            return {"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired",
                "message": f"too old resource version: {position} ({self._dropped[res] + 1})"}}

        since = request.params.get("resourceVersion") or "0"
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        try:
            await response.prepare(raw_request)
            position = self._revision
            if since == "0":
                for obj in self._matching(request, res, namespace):
                    if wanted(obj):
                        await send({"type": "ADDED", "object": obj})
            else:
                position = int(since)
            while not self._closing:
                if (gone := expired(position)) is not None:
                    await send(gone)
                    break
                fresh = events_after(self._events[res], position)
                for revision, event in fresh:
                    position = revision
                    if wanted(event["object"]):
                        await send(event)
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                if not fresh:  # else look again first: what was stored while this watch was sending woke no one
                    await self._changes.wait(min(remaining or 1.0, 1.0))
        except (ConnectionResetError, asyncio.CancelledError):  # the client hung up (aiohttp's reset is one)
            return response
        return response

    async def __aexit__(self, *exc: Any) -> None:
        self._closing = True
        self._changes.notify()
        await super().__aexit__(*exc)
