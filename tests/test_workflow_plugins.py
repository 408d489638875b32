"""Workflows load from an import path; a custom workflow's events flow into pairs like the built-in one's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.collect.events import CandidateEvent
from dpo_operator.collect.runner import run_collection
from dpo_operator.collect.workflow import Example, Sampler, WorkflowNotFound, load_workflow


class LengthWorkflow:
    """Prefers shorter answers: one decision point per example."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.topic = config.get("topic", "cats")

    def examples(self, count: int, seed: int) -> list[Example]:
        return [Example(f"ex{i}", f"Say something about {self.topic} #{i}") for i in range(count)]

    async def episode(self, example: Example, sample: Sampler, seed: int) -> list[CandidateEvent]:
        outputs = await sample([{"role": "user", "content": example.payload}])
        return [CandidateEvent(example.example_id, "t0", 0, i, example.payload, o, -float(len(o)))
                for i, o in enumerate(outputs)]


def factory(config: dict[str, Any]) -> LengthWorkflow:
    return LengthWorkflow(config)


def test_import_path_plugin_runs_end_to_end(tmp_path: Path) -> None:
    asked: dict[bytes, int] = {}

    def answer(request: httpx.Request) -> httpx.Response:  # three different answers per prompt
        prompt = json.loads(request.content)["messages"][0]["content"].encode()
        asked[prompt] = asked.get(prompt, 0) + 1
        content = ["meow", "cats are great", "purr purr"][asked[prompt] % 3]
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}]})

    transport = httpx.MockTransport(answer)
    spec = DPOCollectionSpec.model_validate({
        "workflow": {"name": "tests.test_workflow_plugins:factory", "numExamples": 3, "config": {"topic": "cats"}},
        "llm": {"baseUrl": "http://x/v1", "model": "m", "startupTimeoutSeconds": 0},  # a completions-only mock
        "candidatesPerTurn": 3, "output": {"pvc": {"claimName": "d"}}})
    result = run_collection(spec, data_root=tmp_path, transport=transport)
    assert result.pairs["total"] == 9  # 3 examples x 3 pairs, all distinct lengths
    first = (tmp_path / "training/training_file.jsonl").read_text().splitlines()[0]
    assert "Say something about cats" in first


def test_unknown_workflow_is_a_clear_error() -> None:
    with pytest.raises(WorkflowNotFound, match="neither built-in"):
        load_workflow("chess", {})
    with pytest.raises(WorkflowNotFound, match="cannot load workflow 'nope.mod:f'"):
        load_workflow("nope.mod:f", {})


class SloppyWorkflow(LengthWorkflow):
    """Emits what real plugins get wrong: NaN/inf scores, None outputs, a prompt ending in a tool call."""

    async def episode(self, example: Example, sample: Sampler, seed: int) -> list[CandidateEvent]:
        good = await super().episode(example, sample, seed)
        call = [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]
        return [*good, CandidateEvent(example.example_id, "t1", 1, 0, example.payload, "x", float("nan")),
                CandidateEvent(example.example_id, "t1", 1, 1, example.payload, None, 1.0),  # type: ignore[arg-type]
                CandidateEvent(example.example_id, "t2", 2, 0, call, "a", 1.0),
                CandidateEvent(example.example_id, "t2", 2, 1, call, "b", float("inf"))]


def sloppy(config: dict[str, Any]) -> SloppyWorkflow:
    return SloppyWorkflow(config)


def test_plugin_candidates_are_checked_not_trusted(tmp_path: Path) -> None:
    answers = iter(range(10**6))
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"choices": [
        {"message": {"content": "x" * (next(answers) % 3 + 1)}}]}))
    spec = DPOCollectionSpec.model_validate({
        "workflow": {"name": "tests.test_workflow_plugins:sloppy", "numExamples": 2},
        "llm": {"baseUrl": "http://x/v1", "model": "m", "useN": False}, "candidatesPerTurn": 3,
        "output": {"pvc": {"claimName": "d"}}})  # useFullMessageHistory false: the prompt is the last message's text
    result = run_collection(spec, data_root=tmp_path, transport=transport)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["invalidCandidatesByReason"] == {"nonFiniteScore": 4, "nullOutput": 2, "promptWithoutText": 2}
    assert result.invalidCandidates == 8 and result.pairs["total"] > 0
    assert "null" not in (tmp_path / "training/training_file.jsonl").read_text()
