"""One session to the NeMo platform (v2): its root URL, a workspace, the bearer key, and paths by service.

Every platform service answers under ``/apis/<service>/v2/workspaces/{workspace}/...`` of one root URL (files,
jobs, customization, models, inference-gateway, entities, secrets). Errors are classified as for v1
(:mod:`dpo_operator.nemo.http`): 408/425/429/5xx and network errors are transient, any other 4xx is permanent and
carries the platform's message (FastAPI's ``detail``, a 422's list of ``{loc, msg}`` flattened by
:func:`~dpo_operator.nemo.http.validation_message`); a 409 ("already exists") is a success only where the caller
passes it in ``ok``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from dpo_operator.nemo.http import DEFAULT_DEADLINE, NemoApi, NemoError

API_VERSION = "v2"
HEALTH = "/apis/customization/v2/healthz"  # the customization router: present on a v2 platform only


class PlatformClient:
    """Requests to one workspace of a NeMo platform; ``request`` answers the decoded JSON body."""

    def __init__(self, base_url: str, workspace: str, api_key: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, deadline: float = DEFAULT_DEADLINE) -> None:
        self.base_url = base_url.rstrip("/")
        self.workspace = workspace
        self.api_key = api_key  # kept for capture_credentials (never logged)
        self._transport = transport
        self._deadline = deadline
        self._sessions: dict[str, NemoApi] = {}

    def path(self, service: str, *parts: str) -> str:
        """``/apis/<service>/v2/workspaces/<workspace>/<parts...>``, each part quoted (a file path keeps its /)."""
        quoted = [quote(p, safe="/" if i and parts[i - 1] == "-" else "") for i, p in enumerate(parts)]
        return "/".join([f"/apis/{service}/{API_VERSION}/workspaces/{quote(self.workspace, safe='')}", *quoted])

    def session(self, service: str) -> NemoApi:
        """The HTTP session for one service (the metrics label is ``platform-<service>``)."""
        if service not in self._sessions:
            self._sessions[service] = NemoApi(self.base_url, self.api_key, transport=self._transport,
                                              deadline=self._deadline, service=f"platform-{service}")
        return self._sessions[service]

    def request(self, method: str, service: str, *parts: str, ok: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """Send to ``path(service, *parts)``."""
        return self.session(service).request(method, self.path(service, *parts), ok=ok, **kwargs)

    def detect(self) -> str:
        """``v2`` when the root serves the platform's customization router, ``v1`` when it answers 404 there."""
        try:
            self.session("customization").request("GET", HEALTH)
        except NemoError as exc:
            if exc.status == 404:
                return "v1"
            raise
        return API_VERSION

