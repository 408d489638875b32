"""An OpenAI-compatible chat-completions client (a NIM or any compatible server) for candidate generation.

All candidates of a decision point are asked for in one request with ``n`` (one prefill of the prompt instead of
``n``) as long as the endpoint honours it; an endpoint that answers with fewer choices, or rejects ``n``, gets
separate seeded requests from then on. ``Retry-After`` on 429/503 is honoured.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx

from dpo_operator.api.exits import EndpointMisconfigured, exception_chain
from dpo_operator.collect.events import Message

log = logging.getLogger(__name__)
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_SECONDS = 120.0
# an endpoint that answers but lists other models for this long is misconfigured (a NIM lists its LoRA adapters
# soon after its base model), as is a URL that never answered: its name does not resolve, or (not a cluster
# Service, whose port refuses while its pods start) its port refused every connection
OTHER_MODELS_SECONDS = 30.0
NEVER_ANSWERED_SECONDS = 10.0


class LLMError(RuntimeError):
    """The endpoint failed for good (bad request, auth, unknown model) or after all retries."""


class ModelNotServed(LLMError, EndpointMisconfigured):
    """The endpoint answers, but does not serve the spec's model, or refuses its API key (exit code 4)."""


class NeverAnswered(LLMError, EndpointMisconfigured):
    """The endpoint's URL never answered: its name does not resolve, or its port refuses (exit code 4)."""


def _unreachable(exc: BaseException) -> str | None:
    """Why a connection failed, where the URL itself is wrong: the name does not resolve, the port refused."""
    for found in exception_chain(exc):
        if isinstance(found, socket.gaierror):
            return "its host name does not resolve"
        if isinstance(found, ConnectionRefusedError) or "connection refused" in str(found).lower():
            return "its port refused the connection"
    return None


def _cluster_service(url: str) -> bool:
    """A Kubernetes Service name (``name``, ``name.namespace``, ``name.namespace.svc...``): its port refuses while
    the pods behind it start, so a refusal there is waited out (``startupTimeoutSeconds``)."""
    host = httpx.URL(url).host
    return ".svc" in host or (host.count(".") <= 1 and not host.replace(".", "").isdigit() and host != "localhost")


class _Rejected(LLMError):
    """A 4xx answer (kept apart so that a request with ``n`` can be retried without it)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LLMSettings:
    base_url: str
    model: str
    temperature: float = 1.0
    max_tokens: int = 64
    timeout_seconds: float = 60.0
    max_concurrency: int = 8
    max_retries: int = 3
    api_key: str | None = None
    use_n: bool = True
    startup_timeout_seconds: float = 600.0

    @classmethod
    def from_spec(cls, llm: Any) -> "LLMSettings":
        return cls(base_url=llm.base_url, model=llm.model, temperature=llm.temperature, max_tokens=llm.max_tokens,
                   timeout_seconds=llm.timeout_seconds, max_concurrency=llm.max_concurrency,
                   max_retries=llm.max_retries, api_key=os.environ.get("OPENAI_API_KEY") or None, use_n=llm.use_n,
                   startup_timeout_seconds=llm.startup_timeout_seconds)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header of a response (seconds or an HTTP date), capped; ``None`` when absent or bad."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class ChatClient:
    """Samples candidate responses with bounded concurrency, timeouts and retries with backoff."""

    def __init__(self, settings: LLMSettings, transport: httpx.AsyncBaseTransport | None = None,
                 backoff_base: float = 0.5) -> None:
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.settings = settings
        self._client = httpx.AsyncClient(base_url=settings.base_url.rstrip("/") + "/", headers=headers,
                                         timeout=settings.timeout_seconds, transport=transport)
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._backoff_base = backoff_base
        self.requests = 0
        self.completions = 0
        self.n_supported: bool | None = None if settings.use_n else False  # None: not known yet

    async def __aenter__(self) -> "ChatClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._client.aclose()

    async def wait_until_serving(self, poll_seconds: float = 1.0) -> None:
        """Wait (up to ``startup_timeout_seconds``) until the endpoint lists the model in ``GET /models``, as a NIM
        does once it has loaded it: a NIM applied together with the collection takes minutes to start, and
        requests sent before would only burn retries. An endpoint without a model listing (404/405) is taken as
        ready; 401/403 fail at once; a timeout of 0 skips the wait. What no wait can fix fails sooner (exit code 4):
        other models listed for ``OTHER_MODELS_SECONDS``, a URL that never answered (see ``NEVER_ANSWERED_SECONDS``)."""
        if self.settings.startup_timeout_seconds <= 0:
            return
        started = time.monotonic()
        deadline = started + self.settings.startup_timeout_seconds
        last, answered, others_since = "no answer yet", False, None
        unreachable: str | None = None
        while True:
            try:
                response = await self._client.get("models", timeout=min(self.settings.timeout_seconds, 10.0))
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                unreachable = None if answered else _unreachable(exc)
                if unreachable and time.monotonic() - started >= NEVER_ANSWERED_SECONDS and (
                        "resolve" in unreachable or not _cluster_service(self.settings.base_url)):
                    raise NeverAnswered(f"{self.settings.base_url} never answered: {unreachable} ({last}); check the "
                                        "host and port of llm.baseUrl")
            else:
                answered = True
                if response.status_code in (404, 405):
                    return
                if response.status_code in (401, 403):
                    raise ModelNotServed(f"{self.settings.base_url} refused the API key (HTTP {response.status_code})")
                if response.status_code == 200:
                    try:
                        listing = response.json().get("data")
                    except (ValueError, AttributeError):
                        listing = None
                    if not isinstance(listing, list):
                        return  # answers, but not with a listing we can read: let the requests tell
                    served = [m.get("id") for m in listing if isinstance(m, dict)]
                    if self.settings.model in served:
                        return
                    shown = served[:10] + (["..."] if len(served) > 10 else [])  # bounded: it may reach the status
                    last = f"serving {shown}, not {self.settings.model!r} yet"
                    others_since = others_since if others_since is not None or not served else time.monotonic()
                    if others_since is not None and time.monotonic() - others_since >= OTHER_MODELS_SECONDS:
                        raise ModelNotServed(f"{self.settings.base_url} serves {shown}, not model "
                                             f"{self.settings.model!r} (listed so for {OTHER_MODELS_SECONDS:.0f}s): "
                                             "check llm.model, or the endpoint llm.baseUrl names")
                else:
                    last = f"HTTP {response.status_code}"
            if time.monotonic() >= deadline:
                failure = f"{self.settings.base_url} did not serve model {self.settings.model!r} within " \
                          f"{self.settings.startup_timeout_seconds:.0f}s (llm.startupTimeoutSeconds): {last}"
                if others_since is not None:
                    raise ModelNotServed(failure)
                raise NeverAnswered(failure) if not answered and unreachable else LLMError(failure)
            log.info("waiting for %s to serve %s: %s", self.settings.base_url, self.settings.model, last)
            await asyncio.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
            poll_seconds = min(poll_seconds * 1.5, 10.0)

    async def _post(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``choices`` of one completion request, after retries."""
        last_error = ""
        for attempt in range(self.settings.max_retries + 1):
            try:
                async with self._slots:
                    self.requests += 1
                    response = await self._client.post("chat/completions", json=body)
            except httpx.TransportError as exc:  # connection refused, timeouts, resets
                last_error = f"{type(exc).__name__}: {exc}"
                await self._backoff(attempt, None)
                continue
            if response.status_code in RETRYABLE_STATUS:
                last_error = f"HTTP {response.status_code}"
                if attempt < self.settings.max_retries:
                    await self._backoff(attempt, retry_after_seconds(response))
                continue
            if response.status_code >= 400:
                raise _Rejected(f"{self.settings.base_url} answered HTTP {response.status_code}: {response.text[:300]}",
                                response.status_code)
            try:
                choices = response.json()["choices"]
                if not isinstance(choices, list) or not choices:
                    raise TypeError
                return choices
            except (ValueError, KeyError, TypeError):
                raise LLMError(f"{self.settings.base_url} returned a malformed completion: {response.text[:300]}") from None
        raise LLMError(f"{self.settings.base_url} failed after {self.settings.max_retries + 1} attempts: {last_error}")

    async def _backoff(self, attempt: int, retry_after: float | None) -> None:
        if attempt >= self.settings.max_retries:
            return
        delay = self._backoff_base * 2 ** attempt * (0.5 + random.random())
        await asyncio.sleep(max(delay, retry_after or 0.0))

    def _body(self, messages: list[Message], seed: int | None, n: int = 1) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.settings.model, "messages": messages,
                                "temperature": self.settings.temperature, "max_tokens": self.settings.max_tokens}
        if seed is not None:
            body["seed"] = seed
        if n > 1:
            body["n"] = n
        return body

    @staticmethod
    def _text(choice: Any) -> str | None:
        """A choice's text; ``None`` for a choice without text (e.g. a tool call), which the checks then reject."""
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else None

    async def complete(self, messages: list[Message], seed: int | None = None) -> str | None:
        choices = await self._post(self._body(messages, seed))
        self.completions += 1
        return self._text(choices[0])

    async def candidates(self, messages: list[Message], n: int, seed: int | None = None) -> list[str | None]:
        """``n`` samples for one decision point: one request with ``n`` when honoured, else ``n`` seeded requests."""
        texts: list[str | None] = []
        if n > 1 and self.n_supported is not False:
            try:
                choices = await self._post(self._body(messages, seed, n))
            except _Rejected as exc:
                if exc.status in (401, 403, 404):  # auth or model problems are not about n
                    raise
                log.info("%s rejected n=%d (%s); sampling with separate requests", self.settings.base_url, n, exc)
                self.n_supported = False
            else:
                texts = [self._text(c) for c in choices[:n]]
                self.completions += len(texts)
                if len(choices) >= n:
                    self.n_supported = True
                elif self.n_supported is None:
                    log.info("%s ignores n (asked %d, got %d choices); sampling with separate requests",
                             self.settings.base_url, n, len(choices))
                    self.n_supported = False
        missing = range(len(texts), n)
        seeds = [None if seed is None else seed + i for i in missing]
        texts.extend(await asyncio.gather(*(self.complete(messages, s) for s in seeds)))
        return texts
