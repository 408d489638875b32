"""One HTTP session to a NeMo microservice: base URL, optional bearer key, timeouts, and error classification.

Every non-2xx answer becomes a :class:`NemoError` that says whether retrying could help (408/425/429/5xx, network
errors and a passed deadline; a 409 is answered like a success only where the caller passes it in ``ok``) and
carries the service's own message, so a failed resource can say what went wrong. Each request has a total
deadline: httpx's timeouts are per read, so a service that sends one byte a second would otherwise hold the
caller for as long as it likes. Every request is counted by service and outcome (:mod:`runtime.metrics`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from dpo_operator.runtime.metrics import remote_call

TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DEFAULT_DEADLINE = 60.0  # seconds for one request, connect to last byte


def validation_message(detail: Any) -> str:
    """A FastAPI 422 ``detail`` list as one line (``body.spec.training: Extra inputs are not permitted; ...``);
    any other detail as its text."""
    if not isinstance(detail, list):
        return str(detail)
    parts = []
    for item in detail:
        if isinstance(item, dict) and "msg" in item:
            where = ".".join(str(p) for p in item.get("loc", []))
            parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
        else:
            parts.append(str(item))
    return "; ".join(parts)


class NemoError(Exception):
    def __init__(self, status: int, message: str, transient: bool) -> None:
        super().__init__(f"{status or 'network error'}: {message}" if status else f"network error: {message}")
        self.status = status
        self.detail = message
        self.transient = transient


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            if body.get(key):
                return validation_message(body[key])[:500]
    return str(body)[:500]


class NemoApi:
    """A thin session; ``request`` answers the decoded JSON body (or ``None`` for an empty one)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None, deadline: float = DEFAULT_DEADLINE,
                 service: str = "nemo") -> None:
        headers = {"Accept": "application/json"}
        if api_key:  # never send an empty bearer token
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key  # kept for capture_credentials (never logged: redact remembers it)
        self.deadline = deadline
        self.service = service  # the metrics label: entity-store, customizer, datastore, deployment-management
        self._options: dict[str, Any] = {"base_url": self.base_url, "headers": headers, "timeout": timeout,
                                         "transport": transport}

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(**self._options) as client:
            return await client.request(method, path, **kwargs)

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (), raw: bool = False, **kwargs: Any) -> Any:
        """Send; statuses in ``ok`` (e.g. 409 for "already exists") are answered like a success; ``raw``: answer
        the body's bytes (a file) instead of decoding it.

        An accepted answer that is not JSON (some services answer plain text) is answered as ``None``.
        ``path`` stays below the base URL (the host the key's Secret allows): an absolute or ``//host`` path, which
        would take the bearer token elsewhere, is refused."""
        if not path.startswith("/") or path.startswith("//") or httpx.URL(path).host:
            raise ValueError(f"refusing to send a request for {path!r} outside {self.base_url}")
        started, outcome = time.monotonic(), "ok"
        try:
            return self._request(method, path, ok, raw, **kwargs)
        except NemoError as exc:
            outcome = ("timeout" if "no complete answer" in exc.detail else "network") if exc.status == 0 \
                else "transient" if exc.transient else "error"
            raise
        finally:
            remote_call(self.service, outcome, time.monotonic() - started)

    def _request(self, method: str, path: str, ok: tuple[int, ...], raw: bool, **kwargs: Any) -> Any:
        try:
            response = asyncio.run(asyncio.wait_for(self._send(method, path, **kwargs), self.deadline))
        except TimeoutError:
            raise NemoError(0, f"{method} {self.base_url}{path}: no complete answer within {self.deadline:g}s",
                            transient=True) from None
        except httpx.TransportError as exc:
            raise NemoError(0, f"{method} {self.base_url}{path}: {exc}", transient=True) from exc
        if response.is_success or response.status_code in ok:
            if raw:
                return response.content
            try:
                return response.json() if response.content else None
            except ValueError:
                return None
        raise NemoError(response.status_code, f"{method} {path}: {_message(response)}",
                        transient=response.status_code in TRANSIENT_STATUS)

    def close(self) -> None:
        """Nothing stays open between requests (each has its own connection and deadline)."""

    def __enter__(self) -> "NemoApi":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
