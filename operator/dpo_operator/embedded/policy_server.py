"""A stand-in for a NIM in development: an OpenAI-compatible server whose "model" is a noisy tic-tac-toe player.

It answers ``POST /v1/chat/completions`` for prompts of the built-in tic-tac-toe workflow: with probability
``skill`` it plays a best move, otherwise a random legal one, and with probability ``noise`` an illegal or
unparseable answer. It lets the collection pipeline run end to end with no GPU and no model download; it is
not a language model. ``GET /v1/models`` and ``GET /v1/health/ready`` answer as a NIM does.

Sampling follows a NIM's OpenAI API: a request with a ``seed`` is answered from a generator seeded by that seed and
the request (the same seed and request give the same answer, whatever else the server is doing), and ``n`` asks for
``n`` choices drawn one after the other from that generator (distinct samples derived from the seed). Requests
without a seed draw from the server's own generator.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from typing import Any

from aiohttp import web

from dpo_operator.collect import tictactoe as ttt
from dpo_operator.embedded.http_thread import AppThread

MAX_CHOICES = 128
BOARD_RE = re.compile(r"Board \('\.' is empty\):\n((?:[XO.] [XO.] [XO.]\n?){3})")


def board_from_messages(messages: list[dict[str, Any]]) -> str | None:
    text = str(messages[-1].get("content", "")) if messages else ""
    match = BOARD_RE.search(text)
    return match.group(1).replace(" ", "").replace("\n", "") if match else None


class PolicyServer(AppThread):
    def __init__(self, model: str = "toy/tictactoe-policy", skill: float = 0.4, noise: float = 0.15,
                 seed: int = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.model, self.skill, self.noise = model, skill, noise
        self._rng = random.Random(seed)
        self.requests = 0

    @property
    def url(self) -> str:
        return f"{self.root_url}/v1"

    def answer(self, messages: list[dict[str, Any]], rng: random.Random | None = None) -> str:
        """One sampled answer; ``rng`` is the request's generator (the server's own when unset)."""
        rng = rng or self._rng
        board = board_from_messages(messages)
        if board is None or ttt.is_over(board):
            return "I can only play tic-tac-toe."
        roll = rng.random()
        if roll < self.noise:
            occupied = [i for i, cell in enumerate(board) if cell != "."]
            return str(rng.choice(occupied) + 1) if occupied and rng.random() < 0.5 else "the middle one"
        moves = ttt.legal_moves(board)
        if roll < self.noise + self.skill:
            best = max(ttt.move_value(board, m) for m in moves)
            moves = [m for m in moves if ttt.move_value(board, m) == best]
        return str(rng.choice(moves) + 1)

    def request_rng(self, body: dict[str, Any]) -> random.Random:
        """The generator a request samples from: derived from its seed and content when it has a seed."""
        seed = body.get("seed")
        if seed is None:
            return self._rng
        request = {key: body.get(key) for key in ("model", "messages", "temperature", "top_p", "max_tokens")}
        digest = hashlib.sha256(json.dumps([seed, request], sort_keys=True, default=str).encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        n, seed = body.get("n", 1), body.get("seed")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CHOICES:
            return _bad_request(f"n must be an integer from 1 to {MAX_CHOICES}, got {n!r}")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            return _bad_request(f"seed must be an integer, got {seed!r}")
        self.requests += 1
        rng, messages = self.request_rng(body), body.get("messages") or []
        contents = [self.answer(messages, rng) for _ in range(n)]
        return web.json_response({
            "id": f"cmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                        for i, content in enumerate(contents)],
            "usage": {"prompt_tokens": 0, "completion_tokens": n, "total_tokens": n},
        })

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "dpo-operator"}]})

    async def _ready(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "health.response", "message": "Service is ready."})

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/health/ready", self._ready)


def _bad_request(message: str) -> web.Response:
    """An OpenAI-style 400 for a malformed sampling parameter."""
    return web.json_response({"object": "error", "message": message, "type": "BadRequestError", "code": 400},
                             status=400)
