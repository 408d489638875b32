"""A development stand-in for a NIM: an OpenAI-compatible server for a local Hugging Face model (+ LoRA adapters).

Follows the NIM conventions the operator relies on: ``NIM_MODEL_NAME`` (weights directory), ``NIM_SERVED_MODEL_NAME``,
``NIM_PEFT_SOURCE`` (each sub-directory a LoRA adapter served under its directory name; with
``NIM_PEFT_REFRESH_INTERVAL`` seconds, adapters added later are loaded when that long has passed), ``NIM_SERVER_PORT``;
``/v1/health/ready`` answers 200 once the model is loaded, ``/v1/models`` lists the base model and the adapters,
``/v1/chat/completions`` generates (``n`` choices, the i-th seeded ``seed + i``; ``temperature`` 0 is greedy). For the embedded demo
and tests (CPU, tiny models); never a production server. Needs the [workload] extra.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from dpo_operator.embedded.http_thread import AppThread

MAX_NEW_TOKENS = 64


class LocalModel:
    """The model and its adapters; generation is serialised (one torch model, several request threads)."""

    def __init__(self, model_dir: str, served_name: str, peft_source: str | None = None,
                 refresh_seconds: float | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.served_name = served_name
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model: Any = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.adapters: list[str] = []
        self.peft_source, self.refresh_seconds = peft_source, refresh_seconds
        self._lock = threading.Lock()
        self._scanned = 0.0
        self.load_new_adapters()

    def load_new_adapters(self) -> None:
        """Load the adapter directories of the PEFT source not loaded yet (NIM_PEFT_REFRESH_INTERVAL hot-loading)."""
        self._scanned = time.monotonic()
        if not self.peft_source or not Path(self.peft_source).is_dir():
            return
        from peft import PeftModel

        found = sorted(p for p in Path(self.peft_source).iterdir() if (p / "adapter_config.json").exists())
        with self._lock:
            for adapter in (p for p in found if p.name not in self.adapters):
                if not self.adapters:
                    self.model = PeftModel.from_pretrained(self.model, str(adapter), adapter_name=adapter.name)
                else:
                    self.model.load_adapter(str(adapter), adapter_name=adapter.name)
                self.adapters.append(adapter.name)

    @property
    def names(self) -> list[str]:
        if self.refresh_seconds is not None and time.monotonic() - self._scanned >= self.refresh_seconds:
            self.load_new_adapters()
        return [self.served_name, *self.adapters]

    def complete(self, messages: list[dict[str, str]], model: str, temperature: float, max_tokens: int,
                 seed: int | None) -> str:
        from dpo_operator.train.data import prompt_ids

        ids = self.torch.tensor([prompt_ids(self.tokenizer, messages)])
        options: dict[str, Any] = {"max_new_tokens": max(1, min(max_tokens, MAX_NEW_TOKENS)),
                                   "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        else:
            options.update(do_sample=False)
        with self._lock, self.torch.no_grad():
            if seed is not None:
                self.torch.manual_seed(seed)
            if self.adapters:
                if model in self.adapters:
                    self.model.set_adapter(model)
                    output = self.model.generate(input_ids=ids, attention_mask=self.torch.ones_like(ids), **options)
                else:
                    with self.model.disable_adapter():
                        output = self.model.generate(input_ids=ids, attention_mask=self.torch.ones_like(ids), **options)
            else:
                output = self.model.generate(input_ids=ids, attention_mask=self.torch.ones_like(ids), **options)
        return self.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)


class ModelServer(AppThread):
    def __init__(self, model: LocalModel, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.model = model

    @property
    def url(self) -> str:
        return self.root_url + "/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/health/ready", self._ready)
        app.router.add_get("/v1/health/live", self._ready)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)

    async def _ready(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "health.response", "message": "Service is ready."})

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "owned_by": "local", **({"parent": self.model.served_name}
                                                                     if name != self.model.served_name else {})}
            for name in self.model.names]})

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("model") or self.model.served_name
        if name not in self.model.names:
            return web.json_response({"error": {"message": f"model {name!r} not found", "type": "NotFoundError"}},
                                     status=404)
        n, seed = 1 if body.get("n") is None else body["n"], body.get("seed")
        if not isinstance(n, int) or not 1 <= n <= 128:
            return web.json_response({"error": {"message": "n must be an integer from 1 to 128",
                                                "type": "BadRequestError"}}, status=400)
        texts = [await asyncio.get_running_loop().run_in_executor(
            None, self.model.complete, body.get("messages") or [], name, float(body.get("temperature", 1.0)),
            int(body.get("max_tokens") or 16), None if seed is None else seed + i) for i in range(n)]
        return web.json_response({"id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion",
                                  "created": int(time.time()), "model": name,
                                  "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                                               "finish_reason": "stop"} for i, text in enumerate(texts)]})


def serve_from_env(host: str = "0.0.0.0") -> None:
    """What the ``dpo-operator serve`` command runs: configuration from the NIM environment variables."""
    refresh = os.environ.get("NIM_PEFT_REFRESH_INTERVAL")
    model = LocalModel(os.environ["NIM_MODEL_NAME"], os.environ.get("NIM_SERVED_MODEL_NAME", "model"),
                       os.environ.get("NIM_PEFT_SOURCE"), float(refresh) if refresh else None)
    server = ModelServer(model, host=host, port=int(os.environ.get("NIM_SERVER_PORT", "8000"))).start()
    print(f"serving {model.names} on {server.root_url}", flush=True)
    try:
        threading.Event().wait()
    finally:
        server.stop()
