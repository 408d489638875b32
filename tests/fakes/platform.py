"""The strict core of an in-process NeMo platform (v2) fake: one port, workspace routing, NVIDIA's definitions.

Every request is matched to an operation of the vendored definitions (tests/fakes/platform_schema.py) and validated
there: path, every query parameter and the JSON body (strictly: a field the platform would ignore is refused too).
An invalid request is answered with the platform's 422 (FastAPI's ``{"detail": [{loc, msg, type}]}``) and kept in
``rejected``; every answer is validated before it is sent, and one that fails is *not* sent (500 instead) and kept
in ``violations``. Leaving the ``with`` block raises if either list is not empty, so a test that means to send an
invalid request takes it out with :meth:`take_rejected`.

Route handlers are methods marked with :func:`route` on a subclass or mixin; a request for an operation the
definitions have but no handler implements is a violation (the fake does not pretend). Workspaces: a path with
``{workspace}`` needs one in ``workspaces`` (404 otherwise, as the entity store answers). ``api_key``: when set,
each request needs ``Authorization: Bearer <key>`` (401 otherwise). Failures are injected per route name via
``fail`` (statuses answered first, in order); every request is recorded in ``calls`` as (route name, method, path).
"""

from __future__ import annotations

import datetime
import inspect
import itertools
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dpo_operator.embedded.http_thread import AppThread
from tests.fakes.platform_schema import PlatformSchema, platform_schema


class PlatformViolation(AssertionError):
    pass


def timestamp() -> str:
    return datetime.datetime.now(tz=datetime.UTC).isoformat()


@dataclass
class Call:
    """One validated request as a handler sees it."""

    name: str
    workspace: str | None
    params: dict[str, str]
    query: dict[str, str]
    body: Any  # decoded JSON, or the raw bytes of a binary body
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Answer:
    status: int
    payload: Any = None
    raw: bytes | None = None  # a file's content: sent as is (the definitions give no schema for it)


def error(status: int, detail: str) -> Answer:
    return Answer(status, {"detail": detail})


Handler = Callable[[Any, Call], Awaitable[Answer]]


def route(method: str, template: str, name: str) -> Callable[[Handler], Handler]:
    """Mark a handler for the operation (method, path template as in the definitions); ``name`` keys ``fail``."""
    def mark(func: Handler) -> Handler:
        func.platform_route = (method.upper(), template, name)  # type: ignore[attr-defined]
        return func
    return mark


class FakePlatformCore(AppThread):
    """The validator, dispatcher and shared state; handlers live in mixins (platform_training.py...)."""

    def __init__(self, api_key: str | None = None, workspaces: tuple[str, ...] = ("default",)) -> None:
        super().__init__()
        self.schema: PlatformSchema = platform_schema()
        self.api_key = api_key
        self.workspaces: set[str] = set(workspaces)
        self.fail: dict[str, list[int]] = defaultdict(list)
        self.calls: list[tuple[str, str, str]] = []
        self.rejected: list[str] = []
        self.violations: list[str] = []
        self.ids = itertools.count(1)
        # shared state of the services: filesets (files), model entities (models), by (workspace, name)
        self.filesets: dict[tuple[str, str], dict[str, Any]] = {}
        self.files: dict[tuple[str, str], dict[str, bytes]] = {}
        self.models: dict[tuple[str, str], dict[str, Any]] = {}
        self._handlers: dict[tuple[str, str], tuple[str, Handler]] = {}
        for _, member in inspect.getmembers(type(self), inspect.isfunction):
            if hasattr(member, "platform_route"):
                method, template, name = member.platform_route
                found = self.schema.match(method, _sample(template))
                if found is None or found[0].template != template:
                    raise PlatformViolation(f"handler {name}: {method} {template} is not in NVIDIA's definitions")
                self._handlers[(method, template)] = (name, member)

    @property
    def url(self) -> str:
        return self.root_url

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids):06d}"

    def add_model(self, ref: str, **fields: Any) -> dict[str, Any]:
        """A model entity ``workspace/name`` (as the platform's ModelEntity), e.g. a base model a job trains."""
        workspace, _, name = ref.rpartition("/")
        entity = {"id": self.new_id("model"), "name": name, "workspace": workspace or "default",
                  "created_at": timestamp(), "updated_at": timestamp(), **fields}
        self.models[(entity["workspace"], name)] = entity
        return entity

    def calls_to(self, name: str) -> int:
        return sum(1 for called, _, _ in self.calls if called == name)

    def take_rejected(self) -> list[str]:
        """The requests refused as invalid so far (a test that sends them on purpose), cleared."""
        taken, self.rejected = self.rejected, []
        return taken

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        if exc[0] is None and (self.violations or self.rejected):
            raise PlatformViolation("the NeMo platform fake was asked or answered what NVIDIA's definitions do not "
                                    "allow:\n" + "\n".join(self.violations + self.rejected))

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._dispatch)

    # ------------------------------------------------------------------ dispatch

    async def _dispatch(self, request: web.Request) -> web.Response:
        found = self.schema.match(request.method, request.path)
        if found is None:
            self.violations.append(f"{request.method} {request.path}: no such operation on the NeMo platform")
            self.calls.append(("unknown", request.method, request.path))
            return web.json_response({"detail": "Not Found"}, status=404)
        op, params = found
        name, handler = self._handlers.get((op.method, op.template), (op.name, None))
        self.calls.append((name, request.method, request.path))
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"detail": "Not authenticated"}, status=401)
        problems, body = self.schema.check_request(op, params, list(request.query.items()), await request.read(),
                                                   request.content_type)
        if problems:
            self.rejected.append(f"{request.method} {request.path}: {json.dumps(problems)}")
            return web.json_response({"detail": problems}, status=422)
        if handler is None:
            self.violations.append(f"{request.method} {op.template}: the fake does not implement this operation")
            return web.json_response({"detail": "not implemented by the fake"}, status=501)
        if self.fail[name]:
            status = self.fail[name].pop(0)
            return web.json_response({"detail": f"injected failure {status}"}, status=status)
        workspace = params.get("workspace")
        if workspace is not None and workspace not in self.workspaces:
            return web.json_response({"detail": f"Workspace '{workspace}' not found"}, status=404)
        answer = await handler(self, Call(name, workspace, params, dict(request.query), body,
                                          dict(request.headers)))
        if answer.raw is not None:
            return web.Response(body=answer.raw, status=answer.status, content_type="application/octet-stream")
        wrong = self.schema.check_answer(op, answer.status, answer.payload)
        if wrong:
            self.violations.append(f"answer {answer.status} to {op.method} {op.template}: {'; '.join(wrong)}")
            return web.json_response({"detail": f"fake answer violates NVIDIA's definitions: {wrong}"}, status=500)
        if answer.payload is None:
            return web.Response(status=answer.status)
        return web.json_response(answer.payload, status=answer.status)


def _sample(template: str) -> str:
    """A concrete path for a template (to check a handler's route exists)."""
    out = template
    while "{" in out:
        start = out.index("{")
        out = out[:start] + "x1" + out[out.index("}", start) + 1:]
    return out


def page(items: list[dict[str, Any]], call: Call) -> dict[str, Any]:
    """The platform's offset page (``data`` + ``pagination``) of ``items`` for the call's page/page_size."""
    number, size = int(call.query.get("page", 1)), int(call.query.get("page_size", 10))
    data = items[(number - 1) * size: number * size]
    return {"data": data, "pagination": {"page": number, "page_size": size, "current_page_size": len(data),
                                         "total_pages": max(1, -(-len(items) // size)),
                                         "total_results": len(items)}}
