"""A fake NIM endpoint: ``/v1/health/ready`` answers 503 until ``ready_after`` seconds have passed (never when
None), ``/v1/models`` lists ``models``. Stands in for a NIM pod behind its Service."""

from __future__ import annotations

import time

from aiohttp import web

from dpo_operator.embedded.http_thread import AppThread


class FakeNim(AppThread):
    def __init__(self, models: list[str], ready_after: float | None = 0.0) -> None:
        super().__init__()
        self.models = list(models)
        self.ready_after = ready_after
        self.started = time.monotonic()
        self.health_checks = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/health/ready", self._ready)
        app.router.add_get("/v1/health/live", self._live)
        app.router.add_get("/v1/models", self._models)

    def is_ready(self) -> bool:
        return self.ready_after is not None and time.monotonic() - self.started >= self.ready_after

    async def _ready(self, _: web.Request) -> web.Response:
        self.health_checks += 1
        if self.is_ready():
            return web.json_response({"object": "health.response", "message": "Service is ready."})
        return web.json_response({"object": "health.response", "message": "Service is not ready."}, status=503)

    async def _live(self, _: web.Request) -> web.Response:
        return web.json_response({"message": "Service is live."})

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model", "owned_by": "system"}
                                                              for m in self.models]})
