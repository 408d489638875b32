"""An OpenAI-compatible chat-completions client (a NIM or any compatible server) for candidate generation."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import httpx

from dpo_operator.collect.events import Message

log = logging.getLogger(__name__)
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMError(RuntimeError):
    """The endpoint failed for good (bad request, auth, unknown model) or after all retries."""


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

    @classmethod
    def from_spec(cls, llm: Any) -> "LLMSettings":
        return cls(base_url=llm.base_url, model=llm.model, temperature=llm.temperature, max_tokens=llm.max_tokens,
                   timeout_seconds=llm.timeout_seconds, max_concurrency=llm.max_concurrency,
                   max_retries=llm.max_retries, api_key=os.environ.get("OPENAI_API_KEY") or None)


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

    async def __aenter__(self) -> "ChatClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._client.aclose()

    async def complete(self, messages: list[Message], seed: int | None = None) -> str:
        body: dict[str, Any] = {"model": self.settings.model, "messages": messages,
                                "temperature": self.settings.temperature, "max_tokens": self.settings.max_tokens}
        if seed is not None:
            body["seed"] = seed
        last_error = ""
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff_base * 2 ** (attempt - 1) * (0.5 + random.random()))
            try:
                async with self._slots:
                    self.requests += 1
                    response = await self._client.post("chat/completions", json=body)
            except httpx.TransportError as exc:  # connection refused, timeouts, resets
                last_error = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in RETRYABLE_STATUS:
                last_error = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise LLMError(f"{self.settings.base_url} answered HTTP {response.status_code}: {response.text[:300]}")
            try:
                return response.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                raise LLMError(f"{self.settings.base_url} returned a malformed completion: {response.text[:300]}") from None
        raise LLMError(f"{self.settings.base_url} failed after {self.settings.max_retries + 1} attempts: {last_error}")

    async def candidates(self, messages: list[Message], n: int, seed: int | None = None) -> list[str]:
        """``n`` independent samples for one decision point (concurrently, within the concurrency bound)."""
        seeds = [None if seed is None else seed + i for i in range(n)]
        return list(await asyncio.gather(*(self.complete(messages, s) for s in seeds)))
