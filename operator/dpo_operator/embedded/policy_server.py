"""A stand-in for a NIM in development: an OpenAI-compatible server whose "model" is a noisy tic-tac-toe player.

It answers ``POST /v1/chat/completions`` for prompts of the built-in tic-tac-toe workflow: with probability
``skill`` it plays a best move, otherwise a random legal one, and with probability ``noise`` an illegal or
unparseable answer. It lets the collection pipeline run end to end with no GPU and no model download; it is
not a language model. ``GET /v1/models`` and ``GET /v1/health/ready`` answer as a NIM does.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

from aiohttp import web

from dpo_operator.collect import tictactoe as ttt
from dpo_operator.embedded.http_thread import AppThread

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

    def answer(self, messages: list[dict[str, Any]]) -> str:
        board = board_from_messages(messages)
        if board is None or ttt.is_over(board):
            return "I can only play tic-tac-toe."
        roll = self._rng.random()
        if roll < self.noise:
            occupied = [i for i, cell in enumerate(board) if cell != "."]
            return str(self._rng.choice(occupied) + 1) if occupied and self._rng.random() < 0.5 else "the middle one"
        moves = ttt.legal_moves(board)
        if roll < self.noise + self.skill:
            best = max(ttt.move_value(board, m) for m in moves)
            moves = [m for m in moves if ttt.move_value(board, m) == best]
        return str(self._rng.choice(moves) + 1)

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        content = self.answer(body.get("messages") or [])
        return web.json_response({
            "id": f"cmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
        })

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "dpo-operator"}]})

    async def _ready(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "health.response", "message": "Service is ready."})

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/health/ready", self._ready)
