"""Candidate sampling cost: ``n`` in one request when honoured (else seeded requests), Retry-After, episode cap."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.collect import llm as llm_mod
from dpo_operator.collect.llm import ChatClient, LLMError, LLMSettings
from dpo_operator.collect.runner import run_collection


def spec(**overrides: Any) -> DPOCollectionSpec:
    # scripted endpoints answer completions only (no model listing): no wait for the model to be served
    base: dict[str, Any] = {"workflow": {"name": "tictactoe", "numExamples": 6},
                            "llm": {"baseUrl": "http://llm/v1", "model": "m", "startupTimeoutSeconds": 0},
                            "candidatesPerTurn": 4, "output": {"pvc": {"claimName": "d", "path": "/ds"}}, "seed": 5}
    base.update(overrides)
    return DPOCollectionSpec.model_validate(base)


class Endpoint:
    """An OpenAI-compatible endpoint that honours ``n`` or not, and records what it was asked."""

    def __init__(self, honours_n: bool = True, rejects_n: bool = False) -> None:
        self.honours_n, self.rejects_n = honours_n, rejects_n
        self.bodies: list[dict[str, Any]] = []
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        self.calls += 1
        n = body.get("n", 1)
        if n > 1 and self.rejects_n:
            return httpx.Response(400, json={"error": {"message": "n must be 1"}})
        count = n if self.honours_n else 1
        return httpx.Response(200, json={"choices": [
            {"index": i, "message": {"role": "assistant", "content": str((self.calls * 7 + i) % 9 + 1)}}
            for i in range(count)]})


def metrics(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "ds/metrics.json").read_text())


def test_all_candidates_come_from_one_request_when_n_is_honoured(tmp_path: Path) -> None:
    endpoint = Endpoint()
    result = run_collection(spec(), data_root=tmp_path, transport=httpx.MockTransport(endpoint))
    m = metrics(tmp_path)
    assert m["requests"] == endpoint.calls == m["decisionPoints"]  # one request per decision point
    assert all(b["n"] == 4 and isinstance(b["seed"], int) for b in endpoint.bodies)
    assert m["completions"] == result.candidates == 4 * m["decisionPoints"] and m["nSampling"] is True
    assert result.candidatesPerSecond and result.candidatesPerSecond > 0


@pytest.mark.parametrize("endpoint", [Endpoint(honours_n=False), Endpoint(rejects_n=True)], ids=["ignored", "rejected"])
def test_endpoints_without_n_get_separate_seeded_requests(tmp_path: Path, endpoint: Endpoint) -> None:
    result = run_collection(spec(), data_root=tmp_path, transport=httpx.MockTransport(endpoint))
    m = metrics(tmp_path)
    assert m["nSampling"] is False and result.pairs["total"] > 0
    later = [b for b in endpoint.bodies if "n" not in b]
    assert len(later) >= 3 * m["decisionPoints"]  # every decision point's candidates, one request each
    by_prompt: dict[str, list[int]] = {}
    for body in later:
        by_prompt.setdefault(json.dumps(body["messages"]), []).append(body["seed"])
    for seeds in by_prompt.values():  # consecutive seeds from one per-decision-point base seed
        assert len(set(seeds)) == len(seeds) and max(seeds) - min(seeds) < 4


def test_collections_are_reproducible_with_seeded_requests(tmp_path: Path) -> None:
    first, second = Endpoint(honours_n=False), Endpoint(honours_n=False)
    run_collection(spec(), data_root=tmp_path / "a", transport=httpx.MockTransport(first))
    run_collection(spec(), data_root=tmp_path / "b", transport=httpx.MockTransport(second))
    assert sorted(json.dumps(b, sort_keys=True) for b in first.bodies) == sorted(
        json.dumps(b, sort_keys=True) for b in second.bodies)


def test_retry_after_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(llm_mod.asyncio, "sleep", record)
    answers = iter([httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(503, headers={"Retry-After": "bad"}),
                    httpx.Response(200, json={"choices": [{"message": {"content": "5"}}]})])

    async def go() -> str | None:
        async with ChatClient(LLMSettings("http://llm/v1", "m"), transport=httpx.MockTransport(lambda r: next(answers)),
                              backoff_base=0.01) as chat:
            return await chat.complete([{"role": "user", "content": "hi"}])

    assert asyncio.run(go()) == "5"
    assert slept[0] == 7.0 and slept[1] < 1.0  # the server's delay, then plain backoff for an unreadable header


def test_max_concurrent_episodes_caps_the_episodes_in_flight(tmp_path: Path) -> None:
    state = {"now": 0, "peak": 0}

    async def slow(request: httpx.Request) -> httpx.Response:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.002)
        state["now"] -= 1
        n = json.loads(request.content).get("n", 1)
        return httpx.Response(200, json={"choices": [{"message": {"content": str(i + 1)}} for i in range(n)]})

    s = spec(workflow={"name": "tictactoe", "numExamples": 8, "maxConcurrentEpisodes": 2})
    run_collection(s, data_root=tmp_path, transport=httpx.MockTransport(slow))
    assert state["peak"] == 2  # one request in flight per running episode (all candidates in it)
    run_collection(spec(workflow={"name": "tictactoe", "numExamples": 8}), data_root=tmp_path,
                   transport=httpx.MockTransport(slow))
    assert state["peak"] == 8  # uncapped: every episode at once (within llm.maxConcurrency)


def test_plugin_candidates_without_text_are_counted_not_fatal(tmp_path: Path) -> None:
    """A tool call (content: null) or an empty answer is a rejected candidate, not a crash or a null row."""
    def answer(request: httpx.Request) -> httpx.Response:
        n = json.loads(request.content).get("n", 1)
        choices = [{"message": {"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]}},
                   {"message": {"role": "assistant", "content": ""}}, {"message": {"content": "5"}},
                   {"message": {"content": "1"}}]
        return httpx.Response(200, json={"choices": choices[:n]})

    result = run_collection(spec(), data_root=tmp_path, transport=httpx.MockTransport(answer))
    m = metrics(tmp_path)
    assert m["invalidCandidatesByReason"] == {"nullOutput": m["decisionPoints"], "emptyOutput": m["decisionPoints"]}
    assert result.invalidCandidates == 2 * m["decisionPoints"]
    for line in (tmp_path / "ds/training/training_file.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert row["chosen_response"] in {"5", "1"} and row["rejected_response"] in {"5", "1"}


@pytest.mark.workload
def test_the_nim_stand_in_answers_n_choices_in_one_request(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from dpo_operator.embedded.model_server import LocalModel, ModelServer
    from dpo_operator.embedded.tiny_model import CHAT_TEMPLATE, build_tiny_model

    model = build_tiny_model(tmp_path / "tiny", chat_template=CHAT_TEMPLATE)
    with ModelServer(LocalModel(str(model), "tiny")) as server:
        async def sample() -> tuple[list[str | None], ChatClient]:
            async with ChatClient(LLMSettings(server.url, "tiny", max_tokens=4)) as chat:
                return await chat.candidates([{"role": "user", "content": "Move?"}], 3, seed=11), chat

        texts, chat = asyncio.run(sample())
        assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
        assert (chat.requests, chat.n_supported) == (1, True)
        bad = httpx.post(f"{server.url}/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 0})
        assert bad.status_code == 400


def test_the_collector_waits_for_a_nim_that_is_still_starting(tmp_path: Path) -> None:
    """A NIM applied together with the collection listens only minutes later: the collection waits for the model
    to be listed in GET /v1/models instead of failing its requests."""
    import socket
    import threading

    from dpo_operator.embedded.policy_server import PolicyServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = PolicyServer(skill=0.5, port=port)
    late = threading.Timer(2.0, server.__enter__)
    late.start()
    try:
        s = spec(llm={"baseUrl": f"http://127.0.0.1:{port}/v1", "model": server.model, "maxRetries": 0,
                      "startupTimeoutSeconds": 60})
        started = time.monotonic()
        result = run_collection(s, data_root=tmp_path)
        waited = time.monotonic() - started
    finally:
        late.join()
        server.__exit__(None, None, None)
    # with maxRetries 0 any request sent before the server listened would have failed the run
    assert result.runsFailed == 0 and sum(result.pairs.values()) > 0 and waited >= 1.5


def listing(*answers: tuple[int, list[str] | None]) -> tuple[httpx.MockTransport, list[str]]:
    """GET /models answers in turn (status, served ids), then the last one again; records the paths asked."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        status, served = answers[min(len(asked), len(answers)) - 1]
        return httpx.Response(status, json={"object": "list", "data": [{"id": m} for m in served or []]})

    return httpx.MockTransport(handler), asked


@pytest.mark.parametrize(("answers", "error"), [
    ([(503, None), (200, ["base"]), (200, ["base", "m"])], None),  # loading, then the model (a LoRA) listed
    ([(404, None)], None),  # no model listing: nothing to wait for
    ([(200, ["other"])], "not serve model 'm' within 0s (llm.startupTimeoutSeconds): serving ['other'], not 'm' yet"),
    ([(401, None)], "refused the API key (HTTP 401)"),
])
def test_waiting_for_the_model_ends_when_it_is_listed_or_clearly(answers: list, error: str | None) -> None:
    transport, asked = listing(*answers)

    async def wait() -> None:
        settings = LLMSettings("http://llm/v1", "m", startup_timeout_seconds=0.3 if error is None else 0.05)
        async with ChatClient(settings, transport=transport) as chat:
            await chat.wait_until_serving(poll_seconds=0.01)

    if error is None:
        asyncio.run(wait())
        assert asked == ["/v1/models"] * len(answers)
    else:
        with pytest.raises(LLMError, match=re.escape(error)):
            asyncio.run(wait())
