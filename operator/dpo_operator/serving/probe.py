"""Is a NIM endpoint ready? ``GET /v1/health/ready`` answers 200 AND ``GET /v1/models`` lists the model.

Answers what is not ready in words (for the status message and the ReadinessTimeout failure). The check as a
whole has a total deadline: httpx's timeouts are per read, so an endpoint that sends one byte a second would
otherwise hold the caller for as long as it likes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from dpo_operator.runtime.metrics import remote_call

TIMEOUT = httpx.Timeout(3.0, connect=2.0)  # short: a hanging endpoint is "not ready", soon
DEADLINE = 5.0  # seconds for the whole check (both requests)


@dataclass(frozen=True)
class EndpointCheck:
    ready: bool
    detail: str
    outcome: str = "not_ready"  # the metrics label: ok, not_ready, timeout, network


def check_endpoint(base_url: str, model: str, timeout: httpx.Timeout = TIMEOUT,
                   deadline: float = DEADLINE) -> EndpointCheck:
    base = base_url.rstrip("/")
    started = time.monotonic()
    try:
        check = asyncio.run(asyncio.wait_for(_check(base, model, timeout), deadline))
    except TimeoutError:
        check = EndpointCheck(False, f"{base} did not answer within {deadline:.0f}s", "timeout")
    remote_call("nim-probe", check.outcome, time.monotonic() - started)
    return check


async def _check(base: str, model: str, timeout: httpx.Timeout) -> EndpointCheck:
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            health = await http.get(f"{base}/v1/health/ready")
            if health.status_code != 200:
                return EndpointCheck(False, f"{base}/v1/health/ready answered {health.status_code}")
            models = await http.get(f"{base}/v1/models")
    except httpx.HTTPError as exc:
        return EndpointCheck(False, f"{base} is not reachable ({type(exc).__name__}: {exc})", "network")
    if models.status_code != 200:
        return EndpointCheck(False, f"{base}/v1/models answered {models.status_code}")
    try:
        listed = [str(item.get("id")) for item in models.json().get("data") or [] if isinstance(item, dict)]
    except (ValueError, AttributeError):
        return EndpointCheck(False, f"{base}/v1/models did not answer a model list")
    if model not in listed:
        return EndpointCheck(False, f"model {model!r} is not listed by {base}/v1/models (listed: {', '.join(listed) or 'none'})")
    return EndpointCheck(True, f"{base} serves {model!r}", "ok")
