"""The dev cluster's policy stand-in honours request seeds as a NIM does, so identical collections are identical."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.collect.runner import run_collection
from dpo_operator.collect.tictactoe import prompt_for as prompt, random_positions
from dpo_operator.embedded.policy_server import PolicyServer

DATASET_FILES = ("training/training_file.jsonl", "validation/validation_file.jsonl")


def ask(server: PolicyServer, board: str, **sampling: object) -> list[str]:
    body = {"model": server.model, "messages": prompt(board), "temperature": 1.0, **sampling}
    answer = httpx.post(f"{server.url}/chat/completions", json=body, timeout=10)
    answer.raise_for_status()
    return [choice["message"]["content"] for choice in answer.json()["choices"]]


def test_the_same_seed_and_request_give_the_same_answer() -> None:
    boards = random_positions(20, seed=5)
    with PolicyServer(seed=1) as first, PolicyServer(seed=2) as second:
        for board in boards:  # a server's own state and seed do not matter, the request's seed does
            assert ask(first, board, seed=7) == ask(first, board, seed=7) == ask(second, board, seed=7)
        per_seed = {tuple(ask(first, board, seed=s)[0] for board in boards) for s in range(6)}
        unseeded = {tuple(ask(first, board)[0] for board in boards) for _ in range(6)}
    assert len(per_seed) > 1, "different seeds must give different samples"
    assert len(unseeded) > 1, "requests without a seed are sampled afresh"


def test_n_with_a_seed_gives_reproducible_distinct_samples() -> None:
    boards = random_positions(20, seed=6)
    with PolicyServer(seed=3) as server:
        samples = [ask(server, board, seed=11, n=4) for board in boards]
        assert samples == [ask(server, board, seed=11, n=4) for board in boards]
        assert all(len(choices) == 4 for choices in samples)
        assert any(len(set(choices)) > 1 for choices in samples), "n samples must not be copies of one"
        # the first of n seeded samples is the answer to the same request with n=1, as drawn one after another
        assert [choices[0] for choices in samples] == [ask(server, board, seed=11)[0] for board in boards]


@pytest.mark.parametrize("sampling", [{"n": 0}, {"n": 1000}, {"n": "4"}, {"seed": "x"}])
def test_malformed_sampling_parameters_are_a_400(sampling: dict[str, object]) -> None:
    with PolicyServer() as server:
        answer = httpx.post(f"{server.url}/chat/completions", timeout=10,
                            json={"model": server.model, "messages": prompt("........."), **sampling})
    assert answer.status_code == 400 and ("n must" in answer.text or "seed must" in answer.text)


@pytest.mark.parametrize("use_n", [True, False], ids=["n", "separate-requests"])
def test_identical_collections_against_the_stand_in_give_identical_datasets(tmp_path: Path, use_n: bool) -> None:
    """The collector's own client (concurrent episodes, seeded requests) against a fresh stand-in each time."""
    results = []
    for attempt, server_seed in enumerate((0, 0, 9)):
        with PolicyServer(skill=0.4, noise=0.15, seed=server_seed) as server:
            spec = DPOCollectionSpec.model_validate({
                "workflow": {"name": "tictactoe", "numExamples": 24}, "numRuns": 2, "candidatesPerTurn": 4, "seed": 3,
                "llm": {"baseUrl": server.url, "model": server.model, "useN": use_n, "maxConcurrency": 8},
                "output": {"pvc": {"claimName": "data", "path": "/ds"}}})
            results.append(run_collection(spec, data_root=tmp_path / str(attempt)))
    assert results[0].pairs["total"] > 0
    assert results[0].pairs == results[1].pairs == results[2].pairs
    assert results[0].candidates == results[1].candidates == results[2].candidates
    for name in DATASET_FILES:
        contents = {(tmp_path / str(attempt) / "ds" / name).read_bytes() for attempt in range(3)}
        assert len(contents) == 1, f"{name} differs between identical collections"
